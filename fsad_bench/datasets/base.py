"""The one in-memory description of a category that every dataset reader produces.

Readers only list files; decoding happens later (``fsad_bench.datasets.io``) so that a
protocol can be checked and manifests written without reading a single pixel.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
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
        """Paths in manifests and sidecars are relative to the data root, POSIX style. Taken
        as listed, not resolved: a file or folder symlinked from elsewhere (DVC, git-annex,
        shared stores) is keyed by where it sits under the root."""
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        if relative == ".." or relative.startswith(".." + os.sep):
            raise ValueError(f"{path} is not under the data root {self.root}")
        return Path(relative).as_posix()


def listing_fingerprint(categories: Iterable[Category]) -> str:
    """A hash of every file's path (relative to its root), size and label.

    Cheap enough to take at every run start (no pixel is read), and it changes when a
    resumed run points at another copy of the data with other files, so records made on
    two datasets cannot end up in one table.
    """
    digest = hashlib.sha256()
    for category in sorted(categories, key=lambda c: c.name):
        entries = [(p, "train", None) for p in category.train_normal]
        entries += [(t.path, str(t.label), t.mask) for t in category.test]
        for path, label, mask in sorted(entries, key=lambda e: str(e[0])):
            line = [category.name, _relative(category, path), _size(path), label]
            if mask is not None:
                line += [_relative(category, mask), _size(mask)]
            # surrogateescape: a file name that is not valid UTF-8 is hashed as its bytes
            digest.update(("\t".join(line) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def _relative(category: Category, path: Path) -> str:
    try:
        return category.relpath(path)
    except ValueError:  # e.g. a mask folder symlinked from elsewhere
        return Path(path).as_posix()


def _size(path: Path) -> str:
    return str(Path(path).stat().st_size)
