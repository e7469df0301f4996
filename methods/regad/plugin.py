"""Adapter from the RegAD core to the fsad-bench Method contract.

The backbone is cut into stages from the shared frozen extractor; RegAD trains a private copy.
``backbone="auto"`` uses ResNet-18 (the paper's) when its weights are on this machine and
falls back to EfficientNet-Lite0 otherwise. The choice is made when the method is built, so
get_params() (the run identity and the meta-training cache key) names the backbone that
runs; provenance() also keeps what was asked for.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator
from torch import nn

from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import (
    BACKBONES,
    BackboneParams,
    FeatureExtractor,
    WeightsSource,
    cached_feature_extractor,
    check_backbone,
)
from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    episode_generator,
)
from fsad_bench.params import Field, field_validator
from fsad_bench.records import Prediction
from fsad_methods.regad.core import (
    RegADNet,
    RegADScorer,
    TrainLog,
    TrainSettings,
    resize,
    train_registration,
)

LAYERS = (1, 2, 3)  # strides 4, 8, 16: ResNet layer1..layer3, as in the paper
AUTO, PREFERRED, FALLBACK = "auto", "resnet18", "efficientnet_lite0"
StnMode = Literal["rotation_scale", "rotation", "translation", "affine"]  # stn.STN_MODES


class RegADParams(BackboneParams):
    backbone: str = Field(AUTO, description="auto: resnet18 if its weights are here, else lite0")
    stn_mode: StnMode = Field("rotation_scale", description="the STN's transform family")
    frozen_stages: int = Field(1, ge=0, le=len(LAYERS), description="leading stages not trained")
    input_size: int = Field(128, ge=32, multiple_of=16, description="internal side, pixels")
    iterations: int | None = Field(100, ge=0, description="SGD steps, when epochs is null")
    # one epoch = ceil(meta-train images / batch_size) steps
    epochs: int | None = Field(None, ge=0, description="SGD epochs, when iterations is null")
    batch_size: int = Field(8, ge=1, description="pairs per step")
    lr: float = Field(1e-3, gt=0, description="SGD step size")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share held out for selection")
    augment_copies: int = Field(21, ge=0, description="random transforms per support image")
    eps: float = Field(0.01, gt=0, description="covariance ridge")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:  # replaces BackboneParams' check: adds auto
        if name != AUTO and name not in BACKBONES:
            raise ValueError(f"choose {AUTO} or one of {', '.join(sorted(BACKBONES))}")
        return name

    @model_validator(mode="after")
    def _one_budget(self) -> RegADParams:
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError(
                f"set exactly one of epochs and iterations (the other to null); got "
                f"epochs={self.epochs}, iterations={self.iterations}"
            )
        return self


def resolve_auto(params: RegADParams) -> RegADParams:
    """``backbone: auto`` made concrete: ResNet-18 when its weights resolve offline, else
    EfficientNet-Lite0 with its pretrained weights (which the preflight then checks)."""
    if params.backbone != AUTO:
        return params
    try:
        check_backbone(PREFERRED, params.weights)
        chosen = {"backbone": PREFERRED}
    except WeightsError:
        chosen = {"backbone": FALLBACK, "weights": "pretrained"}
    return params.model_copy(update=chosen)


def split_stages(model: nn.Module, layers: tuple[int, ...]) -> list[nn.Sequential]:
    """Cut a timm model into sequential stages ending at its ``feature_info`` modules.

    Children are flattened one level where a cut lies inside them (EfficientNet's
    ``blocks.2``); this relies on the model's forward applying its children in order, which
    holds for the ResNet and EfficientNet families here (checked against the extractor in
    tests/test_regad.py).
    """
    cuts = [model.feature_info[i]["module"] for i in layers]
    flat: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if any(cut.startswith(name + ".") for cut in cuts):
            flat += [(f"{name}.{sub}", module) for sub, module in child.named_children()]
        else:
            flat.append((name, child))
    stages: list[nn.Sequential] = []
    current: list[nn.Module] = []
    for name, module in flat:
        current.append(module)
        if name in cuts:
            stages.append(nn.Sequential(*current))
            current = []
            if len(stages) == len(cuts):
                return stages
    raise ValueError(f"could not cut the backbone at {cuts}")


class RegAD(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="regad", version="1.1", produces_maps=True, needs_meta_train=True
    )
    params_type = RegADParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "paper": {
            "backbone": "resnet18",
            "input_size": 224,
            "epochs": 50,
            "iterations": None,
            "batch_size": 32,
            "lr": 1e-4,
            "frozen_stages": 0,
        },
        "affine": {"stn_mode": "affine"},
        "no_meta": {"iterations": 0},  # ablation: pretrained stages, identity STNs
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 64, "iterations": 3, "batch_size": 4, "augment_copies": 3,
    }  # fmt: skip

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # auto is resolved here, not in RegADParams: parsing stays free of file look-ups and
        # the declared default stays auto, while get_params (the run identity and the meta
        # cache key) names the backbone that runs
        self.backbone_requested: str = self.params.backbone
        self.params = resolve_auto(self.params)
        self.device = torch.device("cpu")
        self._net: RegADNet | None = None
        self._log = TrainLog()
        self._scorer: RegADScorer | None = None

    def to(self, device: str | torch.device) -> RegAD:
        self.device = torch.device(device)
        if self._net is not None:
            self._net.to(self.device)
        return self

    # --- backbone ----------------------------------------------------------------------

    def preflight(self) -> None:
        check_backbone(self.params.backbone, self.params.weights, LAYERS)

    def _backbone(self) -> tuple[FeatureExtractor, WeightsSource]:
        p = self.params
        return cached_feature_extractor(p.backbone, p.weights, LAYERS, str(self.device))

    def _new_net(self) -> RegADNet:
        extractor, _ = self._backbone()
        body = copy.deepcopy(extractor.body)
        stages = split_stages(body, tuple(extractor.layers))
        nn.ModuleList(stages).requires_grad_(True)
        net = RegADNet(
            stages, extractor.feature_channels, extractor.spec.mean, extractor.spec.std,
            self.params.stn_mode, self.params.frozen_stages,
        )  # fmt: skip
        return net.to(self.device)

    # --- contract ----------------------------------------------------------------------

    def _settings(self, n_images: int) -> TrainSettings:
        p = self.params
        if p.iterations is not None:
            iterations = p.iterations
        else:
            assert p.epochs is not None  # RegADParams allows exactly one of the two
            iterations = p.epochs * math.ceil(n_images / p.batch_size)
        return TrainSettings(
            iterations=int(iterations), batch_size=p.batch_size, lr=p.lr,
            momentum=p.momentum, val_fraction=p.val_fraction,
        )  # fmt: skip

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        if not tasks.images:
            raise ValueError("regad: meta_fit got no categories to train on")
        size = self.params.input_size
        images = {
            name: resize(batch.to(self.device), size)
            for name, batch in sorted(tasks.images.items())
        }
        net = self._new_net()  # drawn from the RNG the runner seeded for this episode
        generator = episode_generator()
        n_images = sum(len(batch) for batch in images.values())
        self._log = train_registration(net, images, self._settings(n_images), generator)
        self._net = net
        self._scorer = None

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        if self._net is None:
            raise NotFittedError("regad: call meta_fit before meta_state_dict")
        state = {f"net.{k}": v.detach().cpu() for k, v in self._net.state_dict().items()}
        state["log.losses"] = torch.tensor(self._log.losses, dtype=torch.float64)
        state["log.val_iterations"] = torch.tensor(self._log.val_iterations, dtype=torch.long)
        state["log.val_losses"] = torch.tensor(self._log.val_losses, dtype=torch.float64)
        state["log.best_iteration"] = torch.tensor(self._log.best_iteration)
        return state

    def load_meta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        net = self._new_net()
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self._net = net.eval()
        self._log = TrainLog(
            losses=state["log.losses"].tolist(),
            val_iterations=state["log.val_iterations"].tolist(),
            val_losses=state["log.val_losses"].tolist(),
            best_iteration=int(state["log.best_iteration"]),
        )
        self._scorer = None

    def fit(self, support: torch.Tensor) -> None:
        if self._net is None:
            raise NotFittedError("regad: call meta_fit (or load_meta_state_dict) before fit")
        p = self.params
        scorer = RegADScorer(self._net, p.input_size, p.augment_copies, p.eps, p.sigma)
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        generator = episode_generator()
        scorer.fit(support.to(self.device), generator)
        self._scorer = scorer

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._scorer is None:
            raise NotFittedError("regad: call meta_fit and fit(support) before predict")
        scores, maps = self._scorer.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        extractor, source = self._backbone()
        log = self._log
        return {
            "backbone": extractor.spec.name,
            "backbone_requested": self.backbone_requested,
            "weights": source.describe(),
            "meta_iterations": len(log.losses),
            "meta_loss_first_last": [log.losses[0], log.losses[-1]] if log.losses else None,
            "meta_best_iteration": log.best_iteration,
        }
