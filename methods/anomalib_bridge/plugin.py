"""Adapter from anomalib 2.x image models to the fsad-bench Method contract (``anomalib``).

Each ``fit`` builds a fresh anomalib model (its random parts drawn from the global RNG the
runner seeded), trains it on the K support images with anomalib's own training step
(``training.py``) and keeps its torch model; ``predict`` returns that torch model's raw
anomaly scores and maps, resized to the input size. Parameters are handled here only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from fsad_bench.errors import PluginError
from fsad_bench.features.backbones import check_weights_spec
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError
from fsad_bench.params import Field, Params, field_validator, model_validator
from fsad_bench.records import Prediction
from fsad_methods.anomalib_bridge.models import BRIDGED, BridgedModel, get_model

ANOMALIB_MISSING = (
    "anomalib is not installed: pip install 'fsad-bench[anomalib]' (anomalib==2.7.0), or "
    "`make install`"
)


# Tiny settings for the conformance suite's 64 px images and CI baselines (anomalib.NAME.ci):
# what anomalib itself needs at that size, and random init where pip ships no weights.
CI_SETTINGS: dict[str, dict[str, Any]] = {
    "stfpm": {"max_steps": 10},  # 2 steps leave the student too close to its random init
    "cflow": {"model_args": {"fiber_batch_size": 4}},  # 64 px, K=1: 4 fibers at stride 32
    "supersimplenet": {"image_size": 96, "max_steps": 10},  # its Perlin masks need > 16 px maps
    "draem": {"image_size": 32},  # ~97M parameters: 2 s per step even at 32 px
    "ganomaly": {"max_steps": 5},
    "reverse_distillation": {"backbone": "resnet18", "weights": "random"},
    "cfa": {"backbone": "resnet18", "weights": "random"},
    "anomaly_dino": {"weights": "random"},
    "dinomaly": {"backbone": "vit_small_patch14_dinov2", "weights": "random"},
}


def _presets() -> dict[str, dict[str, Any]]:
    presets: dict[str, dict[str, Any]] = {}
    for name, entry in BRIDGED.items():
        presets[name] = {"model": name}
        paper: dict[str, Any] = {"model": name, "batch_size": entry.paper_batch_size}
        if entry.paper_max_steps is not None:
            paper |= {"epochs": entry.paper_max_steps, "max_steps": entry.paper_max_steps}
        else:
            paper["epochs"] = entry.paper_epochs
        presets[f"{name}.paper"] = paper
        presets[f"{name}.ci"] = {"model": name, "max_steps": 2, **CI_SETTINGS.get(name, {})}
    return presets


class AnomalibParams(Params):
    model: str = Field("patchcore", description="a bridged model, or any anomalib image model")
    model_args: dict[str, Any] | None = Field(
        None, description="keyword arguments for the anomalib model (override the bridge's)"
    )
    backbone: str | None = Field(None, description="null: the model's default backbone")
    weights: str = Field("pretrained", description="pretrained, random or a checkpoint path")
    layers: tuple[int, ...] | None = Field(None, description="null: anomalib's default layers")
    image_size: int | None = Field(None, ge=1, description="null: the input size")
    epochs: int | None = Field(None, ge=1, description="null: the model's CPU budget")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(32, ge=1, description="training batch (anomalib's default)")
    textures: str = Field("skimage", description="DRAEM's anomaly source: skimage or a folder")

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: str) -> str:
        return check_weights_spec(weights)

    @model_validator(mode="after")
    def _fits_the_model(self) -> AnomalibParams:
        entry = get_model(self.model)
        if entry is not None and not entry.trains and self.epochs not in (None, 1):
            raise ValueError(
                f"anomalib.{entry.name} fits its features in one pass; epochs={self.epochs} "
                "does not apply"
            )
        if self.textures != "skimage" and not (entry and entry.textures):
            raise ValueError(f"textures applies to draem only, not {self.model!r}")
        if entry is not None and entry.family == "none" and self.backbone is not None:
            raise ValueError(f"anomalib.{entry.name} has no backbone (got {self.backbone})")
        return self


class AnomalibBridge(MethodBase):
    """anomalib's models, each a preset: ``anomalib.stfpm``, ``anomalib.padim.paper``, ...

    Its ``info`` is per instance: whether the model produces maps and the fewest supports it
    accepts depend on the model chosen (the harness reads the built method's ``info``)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        name="anomalib", version="0.1", produces_maps=True, needs_meta_train=False
    )
    params_type = AnomalibParams
    presets: ClassVar[dict[str, dict[str, Any]]] = _presets()
    # empty: the suite merges these over a preset; tiny settings live in each NAME.ci preset
    conformance_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.entry: BridgedModel | None = get_model(self.params.model)
        # what this model really is; the class-level info covers the majority (maps, K >= 1)
        self.info = dataclasses.replace(  # type: ignore[misc]
            type(self).info,
            produces_maps=self.entry.produces_maps if self.entry else True,
            min_k=self.entry.min_k if self.entry else 1,
        )
        self.device = torch.device("cpu")
        self._module: Any = None
        self._log: Any = None
        self._resolved: dict[str, Any] = {}

    def to(self, device: str | torch.device) -> AnomalibBridge:
        self.device = torch.device(device)
        return self

    # --- what the parameters resolve to --------------------------------------------------

    def _backbone_name(self) -> str | None:
        if self.params.backbone is not None:
            return self.params.backbone
        if self.entry is not None:
            return self.entry.default_backbone
        return None  # another anomalib model keeps its own backbone argument

    def _resolve(self) -> dict[str, Any]:
        """Weights, textures and class, checked without building anything (cached)."""
        if self._resolved:
            return self._resolved
        if importlib.util.find_spec("anomalib") is None:
            raise PluginError(ANOMALIB_MISSING)
        from fsad_methods.anomalib_bridge.backbone import resolve_backbone
        from fsad_methods.anomalib_bridge.build import anomalib_class
        from fsad_methods.anomalib_bridge.textures import resolve_textures

        name = self._backbone_name()
        backbone = resolve_backbone(name, self.params.weights) if name else None
        needs_textures = self.entry.textures if self.entry else self.params.model == "draem"
        textures = resolve_textures(self.params.textures) if needs_textures else None
        cls = anomalib_class(self.entry.cls if self.entry else self.params.model)
        self._resolved = {"backbone": backbone, "textures": textures, "cls": cls}
        return self._resolved

    def preflight(self) -> None:
        """Cheap checks before the first episode: anomalib importable, weights and textures on
        disk. Raises the one-line WeightsError / DatasetError / PluginError."""
        self._resolve()

    def _recipe(self, input_size: int, support_size: int) -> Any:
        from fsad_methods.anomalib_bridge.backbone import check_layers
        from fsad_methods.anomalib_bridge.build import Recipe

        resolved, p, entry = self._resolve(), self.params, self.entry
        family = entry.family if entry else "timm"
        layers = check_layers(list(p.layers), family) if p.layers is not None else None
        if layers is None and entry is not None and entry.layer_arg is not None:
            layers = list(entry.layers) if entry.layers else None
        patch = entry.patch if entry else 1
        size = p.image_size or input_size
        return Recipe(
            cls_name=resolved["cls"].__name__,
            entry=entry,
            backbone=resolved["backbone"],
            layers=layers,
            image_size=size - size % patch,
            batch_size=p.batch_size,
            support_size=support_size,
            textures=resolved["textures"],
            model_args=dict(p.model_args or {}),
            random_weights=p.weights == "random",
        )

    def _epochs(self) -> int:
        if self.params.epochs is not None:
            return self.params.epochs
        return self.entry.cpu_epochs if self.entry else 1

    # --- the Method contract -------------------------------------------------------------

    def fit(self, support: torch.Tensor) -> None:
        from fsad_methods.anomalib_bridge.build import build_module
        from fsad_methods.anomalib_bridge.training import train

        self.preflight()
        self._module = None
        if len(support) < self.info.min_k:
            raise ValueError(
                f"anomalib.{self.params.model} needs at least {self.info.min_k} support "
                f"images (got {len(support)}): anomalib's fit is undefined for fewer (NaN "
                "covariance or no principal component)"
            )
        module = build_module(self._recipe(support.shape[-1], len(support))).to(self.device)
        inputs = module.pre_processor.transform(support.to(self.device))
        self._log = train(
            module, inputs, self._epochs(), self.params.max_steps, self.params.batch_size
        )
        self._module = module

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._module is None:
            raise NotFittedError("anomalib: call fit(support) before predict")
        if self.entry is not None and self.entry.per_image and len(images) > 1:
            # its maps are normalised by the batch's maximum: an image alone is its own batch
            parts = [self.predict(images[i : i + 1]) for i in range(len(images))]
            maps = [p.maps for p in parts]
            return Prediction(
                scores=torch.cat([p.scores for p in parts]),
                maps=None if maps[0] is None else torch.cat(maps),  # type: ignore[arg-type]
            )
        height, width = images.shape[-2:]
        module = self._module
        output = module.model(module.pre_processor.transform(images.to(self.device)))
        scores = output.pred_score.reshape(len(images)).float()
        maps = output.anomaly_map
        if maps is None:
            if self.info.produces_maps:
                raise ValueError(f"anomalib: {self.params.model} returned no anomaly map")
            return Prediction(scores=scores, maps=None)
        maps = maps.reshape(len(images), 1, *maps.shape[-2:]).float()
        if tuple(maps.shape[-2:]) != (height, width):
            maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
        return Prediction(scores=scores, maps=maps[:, 0])

    def provenance(self) -> dict[str, Any]:
        import anomalib

        resolved = self._resolve()
        backbone, textures = resolved["backbone"], resolved["textures"]
        record: dict[str, Any] = {
            "anomalib": anomalib.__version__,
            "anomalib_model": resolved["cls"].__name__,
            "backbone": backbone.name if backbone else None,
            "backbone_init": None if backbone is None else
            ("pretrained" if backbone.pretrained else "random"),
            "weights": backbone.source.describe() if backbone else "no backbone",
        }  # fmt: skip
        if textures is not None:
            record["textures"] = textures.description
        if self._log is not None:
            record["trained"] = {"epochs": self._log.epochs, "steps": self._log.steps}
        return record
