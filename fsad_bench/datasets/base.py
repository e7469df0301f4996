"""The one in-memory description of a category that every dataset reader produces.

Readers only list files; decoding happens later (``fsad_bench.datasets.io``) so that a
protocol can be checked and manifests written without reading a single pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GOOD = "good"


@dataclass(frozen=True)
class TestItem:
    """One test image: label 1 is anomalous; ``mask`` is None for normal or image-level data."""

    path: Path
    label: int
    defect: str
    mask: Path | None = None


@dataclass(frozen=True)
class Category:
    """Normal training images (the support pool) and the whole test set of one category."""

    name: str
    root: Path
    train_normal: tuple[Path, ...]
    test: tuple[TestItem, ...]
    has_masks: bool
    notes: tuple[str, ...] = ()

    def relpath(self, path: Path) -> str:
        """Paths in manifests and sidecars are relative to the data root, POSIX style."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
