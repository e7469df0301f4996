"""One anomalib Lightning module per episode, built offline with the bridge's backbone.

The module keeps anomalib's own pre-processor (the model's resize, interpolation and
normalisation) with two changes: images are resized to the bridge's size (no centre crop,
so every input pixel is scored) and normalised with the backbone's own constants (ImageNet's
for the ResNets and DINOv2, TF's for EfficientNet-Lite). Post-processing, evaluation and
visualisation are switched off: anomalib's post-processor normalises scores with
validation/test statistics, and the benchmark scores raw outputs.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from fsad_bench.features.backbones import BackboneError
from fsad_methods.anomalib_bridge.backbone import RESNETS, Backbone, feature_shape
from fsad_methods.anomalib_bridge.models import BridgedModel
from fsad_methods.anomalib_bridge.offline import offline_build
from fsad_methods.anomalib_bridge.textures import TextureSource

FASTFLOW_CNNS = RESNETS  # the CNNs FastFlow's constructor accepts by name
PADIM_DEFAULT_FEATURES = 100  # anomalib's (and the paper's) ResNet-18 choice, and padim's d
DFKDE_COMPONENTS = 16  # anomalib's default; its KDE needs more images than PCA components


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the built module (the plugin derives it from its parameters)."""

    cls_name: str
    entry: BridgedModel | None  # None: a model outside the table, built from model_args alone
    backbone: Backbone | None
    layers: list[int] | None
    image_size: int
    batch_size: int
    support_size: int  # K
    textures: TextureSource | None
    model_args: dict[str, Any]
    random_weights: bool = False  # weights=random: also for a model's own backbone request


def anomalib_class(name: str) -> type:
    """An anomalib image model class by class name or anomalib's snake-case name."""
    with warnings.catch_warnings():  # anomalib's own deprecation notices, not the user's
        warnings.simplefilter("ignore")
        import anomalib.models as models
        from anomalib.utils.path import convert_to_snake_case

    image = [n for n in models.__all__ if n not in ("AiVad", "Fuvas")]
    by_name = {n.lower(): n for n in image} | {convert_to_snake_case(n): n for n in image}
    key = by_name.get(name) or by_name.get(name.lower())
    if key is None:
        raise ValueError(
            f"anomalib: no image model {name!r} in anomalib.models; choose one of: "
            f"{', '.join(sorted(image))}"
        )
    return getattr(models, key)


def _accepts(cls: type, argument: str) -> bool:
    return argument in inspect.signature(cls.__init__).parameters


def _arguments(recipe: Recipe, cls: type) -> tuple[dict[str, Any], dict[str, str]]:
    """Constructor arguments and timm name aliases that put the bridge's choices in."""
    args: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    entry, backbone = recipe.entry, recipe.backbone
    if backbone is not None:
        if _accepts(cls, "encoder_name"):
            args["encoder_name"] = backbone.timm_name
        elif cls.__name__ == "Cfa":
            args["backbone"] = backbone.name  # CFA builds torchvision models by name
        elif cls.__name__ == "Fastflow" and backbone.name not in FASTFLOW_CNNS:
            # FastFlow accepts backbones by a fixed list of names but builds everything else
            # from what timm returns, so resnet18 is answered with the chosen backbone.
            args["backbone"] = "resnet18"
            aliases["resnet18"] = backbone.timm_name
        elif _accepts(cls, "backbone"):
            # ResNets by their plain name: Reverse Distillation picks its decoder by it
            args["backbone"] = backbone.name if backbone.name in RESNETS else backbone.timm_name
    layer_arg = entry.layer_arg if entry else ("layers" if _accepts(cls, "layers") else None)
    if recipe.layers is not None and layer_arg is not None:
        args[layer_arg] = recipe.layers[0] if layer_arg == "layer" else list(recipe.layers)
    name = cls.__name__
    if name == "Padim" and backbone is not None and backbone.name not in RESNETS:
        args["n_features"] = PADIM_DEFAULT_FEATURES
    if name == "Fre" and backbone is not None:
        stage = args.get("layer", entry.layers[0] if entry and entry.layers else 3)
        channels, height, width = feature_shape(backbone.timm_name, stage, recipe.image_size)
        pool = recipe.model_args.get("pooling_kernel_size", 2)
        args["input_dim"] = channels * (height // pool) * (width // pool)
    if name == "Dfkde" and "n_pca_components" not in recipe.model_args:
        # one feature vector per image: a KDE over K points has K - 1 directions of spread
        args["n_pca_components"] = max(1, min(DFKDE_COMPONENTS, recipe.support_size - 1))
    if name == "Ganomaly":
        args["batch_size"] = recipe.batch_size
    if name == "Draem" and recipe.textures is not None:
        args["dtd_dir"] = recipe.textures.folder
    return {**args, **recipe.model_args}, aliases


def _pre_processor(cls: type, recipe: Recipe) -> nn.Module:
    """anomalib's own pre-processor for the model, at the bridge's size and normalisation."""
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import CenterCrop, Compose, Normalize

    size = (recipe.image_size, recipe.image_size)
    extra = {"crop_size": recipe.image_size} if "crop_size" in inspect.signature(
        cls.configure_pre_processor
    ).parameters else {}  # fmt: skip
    pre = cls.configure_pre_processor(image_size=size, **extra)
    transforms = getattr(pre.transform, "transforms", [pre.transform])
    kept = []
    for transform in transforms:
        if isinstance(transform, CenterCrop):
            continue
        if isinstance(transform, Normalize) and recipe.backbone is not None:
            transform = Normalize(mean=list(recipe.backbone.mean), std=list(recipe.backbone.std))
        kept.append(transform)
    return PreProcessor(transform=Compose(kept))


def build_module(recipe: Recipe) -> nn.Module:
    """The Lightning module, random parts drawn from the global RNG (seeded by the runner)."""
    cls = anomalib_class(recipe.cls_name)
    entry, backbone = recipe.entry, recipe.backbone
    if entry and entry.family == "resnet" and backbone and backbone.name not in RESNETS:
        raise BackboneError(
            f"anomalib.{recipe.entry.name} builds heads for ResNet channels; choose "
            f"backbone {' or '.join(RESNETS)} (got {recipe.backbone.name})"
        )
    args, aliases = _arguments(recipe, cls)
    with offline_build(recipe.backbone, aliases, random_any=recipe.random_weights):
        module = cls(
            pre_processor=_pre_processor(cls, recipe),
            post_processor=False,
            evaluator=False,
            visualizer=False,
            **args,
        )
    if recipe.textures is not None and hasattr(module, "augmenter"):
        module.augmenter.anomaly_source_paths = list(recipe.textures.files)
    return module
