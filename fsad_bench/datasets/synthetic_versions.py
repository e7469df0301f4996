"""Which generator writes which version of the embedded dataset.

A protocol names its data by ``dataset:`` (``synthetic-v1``, ``synthetic-v2``); with
``layout: synthetic`` and no ``data_root`` the run generates that version on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from types import ModuleType

from fsad_bench.errors import DatasetError

# dataset name -> (module, its writer); modules are imported only when used
VERSIONS: dict[str, tuple[str, str]] = {
    "synthetic-v1": ("fsad_bench.datasets.synthetic", "generate_synthetic"),
    "synthetic-v2": ("fsad_bench.datasets.synthetic2", "generate_synthetic2"),
}


def _module(dataset: str) -> ModuleType:
    try:
        return import_module(VERSIONS[dataset][0])
    except KeyError:
        valid = ", ".join(VERSIONS)
        raise DatasetError(
            f"no generator makes dataset {dataset!r}; a protocol with layout 'synthetic' and no "
            f"data_root must name one of: {valid}"
        ) from None


def ensure_default_dataset(dataset: str, progress: Callable[[str], None] | None = None) -> Path:
    """The cached copy of ``dataset`` (seed 0, 256 px), generated on first use."""
    return _module(dataset).ensure_default_dataset(progress=progress)


def generate(
    version: int, out_dir: Path, seed: int = 0, image_size: int = 256,
    progress: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """Write version ``version`` (1, 2, ...) of the dataset to ``out_dir``."""
    dataset = f"synthetic-v{version}"
    if dataset not in VERSIONS:
        known = ", ".join(name.rpartition("-v")[2] for name in VERSIONS)
        raise DatasetError(f"no synthetic dataset version {version}; versions: {known}")
    writer = getattr(_module(dataset), VERSIONS[dataset][1])
    return writer(out_dir, seed=seed, image_size=image_size, progress=progress)
