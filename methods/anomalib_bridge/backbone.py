"""Which backbone a bridged model gets, from which offline weights, at which stages.

CNN backbones are fsad-bench's (``fsad_bench.features.backbones``: EfficientNet-Lite0/1/2 from their
pip packages, ResNet-18 / WideResNet-50-2 from a file or a local timm/torch cache). DINOv2
backbones (AnomalyDINO, Dinomaly) are found in the local Hugging Face cache or a file. Nothing
here downloads: a missing file is a one-line ``WeightsError`` naming it and where to put it.

The resolved weights become a timm-named state_dict (``timm_state_dict``) that ``offline.py``
hands to timm when anomalib asks it for a pretrained model.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM_INIT_SEED,
    BackboneError,
    WeightsSource,
    read_state_dict,
    resolve_weights,
)

DINOV2 = ("vit_small_patch14_dinov2", "vit_base_patch14_reg4_dinov2")
RESNETS = ("resnet18", "wide_resnet50_2")  # the ResNets fsad-bench resolves offline


@dataclass(frozen=True)
class Backbone:
    """A backbone as anomalib is told to build it, and where its weights came from."""

    name: str  # fsad-bench's name, or the timm name of a DINOv2 model
    timm_name: str  # what anomalib passes to timm.create_model
    source: WeightsSource
    mean: tuple[float, float, float]  # the input normalisation the weights were trained with
    std: tuple[float, float, float]

    @property
    def pretrained(self) -> bool:
        return self.source.kind != "random"


def known_backbones() -> list[str]:
    return sorted(BACKBONES) + list(DINOV2)


def resolve_backbone(name: str, weights: str | None) -> Backbone:
    """Locate the weights of ``name`` offline (package, cache, file) or take random init."""
    if name in BACKBONES:
        spec = BACKBONES[name]
        source = resolve_weights(name, weights)
        return Backbone(name, spec.timm_name, source, spec.mean, spec.std)
    if name in DINOV2:
        return Backbone(name, name, _resolve_dinov2(name, weights), IMAGENET_MEAN, IMAGENET_STD)
    raise BackboneError(
        f"backbone {name!r} is not available to the anomalib bridge; choose one of: "
        f"{', '.join(known_backbones())}"
    )


def _resolve_dinov2(name: str, weights: str | None) -> WeightsSource:
    if weights == "random":
        return WeightsSource(name, "random")
    if weights not in (None, "pretrained"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file {path} for backbone {name!r} does not exist; pass an existing "
                "checkpoint, 'pretrained', or 'random'"
            )
        return WeightsSource(name, "file", str(path.resolve()), _sha256(path.resolve()))
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    hub_id = get_pretrained_cfg(name).hf_hub_id
    hit = try_to_load_from_cache(hub_id, "model.safetensors")
    if isinstance(hit, str):
        return WeightsSource(name, "cache", hit, _sha256(Path(hit)), "huggingface")
    raise WeightsError(
        f"no pretrained weights for backbone {name!r} on this machine (no hub access): put "
        f"{hub_id}/model.safetensors in the Hugging Face cache {constants.HF_HUB_CACHE} (e.g. "
        "copy that cache from a machine with internet access), or pass "
        "--param anomalib.weights=PATH; use weights=random for a random-init run"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _full_model(timm_name: str) -> torch.nn.Module:
    """The whole timm model, random-init with a fixed seed, without touching the global RNG."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return timm.create_model(timm_name, pretrained=False)


@functools.lru_cache(maxsize=2)
def _state_dict_cached(timm_name: str, source: WeightsSource) -> dict[str, Tensor]:
    return read_state_dict(source, _full_model(timm_name).state_dict())


def timm_state_dict(backbone: Backbone) -> dict[str, Tensor]:
    """The pretrained weights under timm's names (read once per process and file)."""
    if not backbone.pretrained or backbone.source.path is None:
        raise WeightsError(f"backbone {backbone.name!r} has no weights file (random init)")
    return _state_dict_cached(backbone.timm_name, backbone.source)


@functools.lru_cache(maxsize=16)
def feature_shape(timm_name: str, stage: int, size: int) -> tuple[int, int, int]:
    """(channels, height, width) of one stage for a ``size`` x ``size`` input: FRE's input
    dimension depends on it, and timm's padding rules decide the rounding."""
    import timm

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(RANDOM_INIT_SEED)
        model = timm.create_model(timm_name, pretrained=False, features_only=True,
                                  out_indices=[stage])  # fmt: skip
        (out,) = model.eval()(torch.zeros(1, 3, size, size))
    return tuple(out.shape[1:])  # type: ignore[return-value]


def check_layers(layers: list[int] | tuple[int, ...], family: str) -> list[int]:
    """Stage indices 0..4, increasing (anomalib's layerN of a ResNet is stage N)."""
    chosen = [int(i) for i in layers]
    if not chosen or any(i not in range(5) for i in chosen) or chosen != sorted(set(chosen)):
        raise BackboneError(
            f"anomalib: layers {list(layers)} are not valid; give increasing backbone stage "
            "indices from 0 to 4 (ResNet layer1..layer4 are stages 1..4)"
        )
    if family == "dinov2":
        raise BackboneError("anomalib: layers do not apply to the DINOv2 models")
    return chosen
