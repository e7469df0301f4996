"""Custom folders: ``cat/normal``, ``cat/abnormal`` and, for pixel labels, ``cat/mask``.

Normal images are split into the support pool and normal test images by a hash of their
file name (``split_by_name_hash``), so the split is the same on every machine and does not
depend on directory listing order. A category that already has ``train/normal`` and
``test/normal`` is used as given; its anomalies live in ``test/abnormal`` (or ``abnormal``)
and its masks in ``test/mask`` (or ``mask``).

The mask of ``abnormal/<stem>.<ext>`` is ``mask/<stem>.<ext>`` or ``mask/<stem>_mask.<ext>``
(any image suffix). Without a mask folder the category has image-level labels only.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsad_bench.datasets.base import GOOD, Category, TestItem
from fsad_bench.datasets.mvtec import (
    ignored_files,
    list_images,
    reject_options,
    require_root,
    subdirs,
    unknown_category,
)
from fsad_bench.errors import DatasetError

NORMAL, ABNORMAL, MASK = "normal", "abnormal", "mask"
DEFAULT_NORMAL_TEST_FRACTION = 0.3
_EXPECTED = "<category>/normal and <category>/abnormal"


def _name_key(path: Path) -> tuple[str, str]:
    # NFC so that macOS (decomposed) and Linux (composed) spellings of a name hash alike.
    name = unicodedata.normalize("NFC", Path(path).name)
    return hashlib.sha256(name.encode("utf-8")).hexdigest(), name


def split_by_name_hash(
    paths: Sequence[Path], fraction: float
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(support pool, test) with exactly round(fraction * n) test images, clamped to 1..n-1.

    Images are ranked by the SHA-256 of their file name and the first ones go to test: the
    result depends only on the set of names, never on listing order, process or machine.
    Both parts come back sorted by name.
    """
    if not 0.0 < fraction < 1.0:
        raise DatasetError(
            f"normal_test_fraction must be between 0 and 1 (exclusive), got {fraction}"
        )
    if len(paths) < 2:
        folder = Path(paths[0]).parent if paths else "the normal folder"
        raise DatasetError(
            f"{folder}: {len(paths)} normal image(s) cannot be split into support and test; "
            "add normal images"
        )
    ranked = sorted(paths, key=_name_key)
    n_test = min(max(int(fraction * len(ranked) + 0.5), 1), len(ranked) - 1)
    return _sorted_by_name(ranked[n_test:]), _sorted_by_name(ranked[:n_test])


def _sorted_by_name(paths: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(sorted(paths, key=lambda p: Path(p).name))


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def _is_category(folder: Path) -> bool:
    return (folder / NORMAL).is_dir() or (folder / "train" / NORMAL).is_dir()


def discover_categories(root: Path | None) -> list[str]:
    """Sorted names of the folders under ``root`` that have ``normal`` or ``train/normal``."""
    root = require_root(root, _EXPECTED)
    names = [d.name for d in subdirs(root) if _is_category(d)]
    if not names:
        raise DatasetError(
            f"{root}: no category folders with a normal/ folder; expected {_EXPECTED}"
        )
    # archive debris (__MACOSX, __pycache__) is not a misnamed category
    strays = [d for d in subdirs(root) if not _is_category(d) and not d.name.startswith("__")]
    if strays:  # a misnamed normal/ would otherwise drop a whole category without a word
        found = ", ".join(f"{c.name}/" for c in subdirs(strays[0])) or "nothing"
        raise DatasetError(
            f"{strays[0]}: not a category (no normal/ folder; it holds {found}); name its "
            f"normal images folder normal/, or move it out of {root}"
            + (f" ({len(strays) - 1} more folder(s) like it)" if len(strays) > 1 else "")
        )
    return names


def _mask_for(image: Path, masks: dict[str, Path]) -> Path | None:
    return masks.get(image.stem) or masks.get(f"{image.stem}_mask")


def load_category(root: Path | None, name: str, **options: Any) -> Category:
    """List one category; options: ``normal_test_fraction`` (default 0.3)."""
    reject_options("folder", options, ("normal_test_fraction",))
    fraction = float(options.get("normal_test_fraction", DEFAULT_NORMAL_TEST_FRACTION))
    root = require_root(root, _EXPECTED)
    folder = root / name
    if not _is_category(folder):
        raise unknown_category(root, name, discover_categories(root))
    notes: list[str] = []
    if (folder / "train" / NORMAL).is_dir() and (folder / "test" / NORMAL).is_dir():
        train = tuple(list_images(folder / "train" / NORMAL))
        normal_test = tuple(list_images(folder / "test" / NORMAL))
        abnormal_dir = _first_dir(folder / "test" / ABNORMAL, folder / ABNORMAL)
        mask_dir = _first_dir(folder / "test" / MASK, folder / MASK)
        notes.append("explicit train/test split used as given")
        if not train:
            raise DatasetError(f"{folder / 'train' / NORMAL}: no normal training images")
    else:
        normal_dir = _first_dir(folder / NORMAL, folder / "train" / NORMAL)
        normals = list_images(normal_dir)
        if not normals:
            raise DatasetError(f"{normal_dir}: no normal images in category {name!r}")
        train, normal_test = split_by_name_hash(normals, fraction)
        abnormal_dir = _first_dir(folder / ABNORMAL)
        mask_dir = _first_dir(folder / MASK)
        notes.append(
            f"normal images split by file-name hash: {len(train)} support pool, "
            f"{len(normal_test)} test (normal_test_fraction={fraction})"
        )
    abnormal = list_images(abnormal_dir) if abnormal_dir else []
    if not abnormal:
        where = abnormal_dir or folder / ABNORMAL
        raise DatasetError(f"{where}: no abnormal test images in category {name!r}")
    test = [TestItem(p, 0, GOOD) for p in normal_test]
    if mask_dir is None:
        test.extend(TestItem(p, 1, ABNORMAL) for p in abnormal)
        notes.append("no mask folder: image-level labels only")
    else:
        masks = {p.stem: p for p in reversed(list_images(mask_dir))}
        for image in abnormal:
            mask = _mask_for(image, masks)
            if mask is None:
                raise DatasetError(
                    f"{image}: abnormal image has no mask in {mask_dir}; add {image.stem}.png "
                    f"or {image.stem}_mask.png there, or remove the mask folder for image labels"
                )
            test.append(TestItem(image, 1, ABNORMAL, mask))
    listed = {p.parent for p in (*train, *normal_test)} | {abnormal_dir, mask_dir} - {None}
    ignored = ignored_files(*sorted(listed))
    notes += [ignored] if ignored else []
    return Category(name, root, train, tuple(test), mask_dir is not None, tuple(notes))
