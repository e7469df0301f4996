"""MVTec AD and MPDD: ``cat/train/good``, ``cat/test/<defect>``, ``cat/ground_truth/<defect>``.

The mask of ``test/<defect>/<stem>.png`` is ``ground_truth/<defect>/<stem>_mask.png``; good
images have none. The layout promises pixel masks, so a missing mask is an error rather
than a silent fall-back to image-level labels (use the ``folder`` layout for those).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad_bench.datasets.base import GOOD, Category, TestItem
from fsad_bench.errors import DatasetError


def _decodable_suffixes() -> frozenset[str]:
    """Every file suffix Pillow can open here (.png, .jpg, .webp, .tif, ...), not a fixed
    list: a format Pillow decodes must not vanish from a test set."""
    from PIL import Image

    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)  # fmt: skip


IMAGE_SUFFIXES = _decodable_suffixes()


def _visible_files(folder: Path) -> list[Path]:
    """Files directly in ``folder`` except hidden ones (``.DS_Store``, ``._x.png``)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; hidden files are skipped."""
    images = (p for p in _visible_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(images, key=lambda p: p.name)


def ignored_files(*folders: Path) -> str | None:
    """One note naming how many files in ``folders`` are neither images nor masks, or None."""
    ignored = sorted(
        p for folder in folders for p in _visible_files(folder)
        if p.suffix.lower() not in IMAGE_SUFFIXES
    )  # fmt: skip
    if not ignored:
        return None
    return f"ignored {len(ignored)} file(s) that are neither images nor masks (e.g. {ignored[0]})"


def subdirs(folder: Path) -> list[Path]:
    """Visible subdirectories, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def require_root(root: Path | None, expected: str) -> Path:
    """The data root, or an error saying what it must contain."""
    if root is None:
        raise DatasetError(
            f"this layout needs --data-root pointing at the folder that contains {expected}"
        )
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"data root {root} does not exist; pass --data-root pointing at the folder "
            f"that contains {expected}"
        )
    return root


def reject_options(layout: str, options: dict[str, Any], valid: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise DatasetError(
            f"unknown layout_options {unknown} for layout {layout!r}; valid options: {allowed}"
        )


def unknown_category(root: Path, name: str, available: list[str]) -> DatasetError:
    listed = ", ".join(available) if available else "none found"
    return DatasetError(f"category {name!r} not found under {root}; available: {listed}")


_EXPECTED = "<category>/train/good"


def discover_categories(root: Path | None) -> list[str]:
    """Sorted names of the folders under ``root`` that have ``train/good``."""
    root = require_root(root, _EXPECTED)
    names = [d.name for d in subdirs(root) if (d / "train" / GOOD).is_dir()]
    if not names:
        raise DatasetError(f"{root}: no category folders with train/good; expected {_EXPECTED}")
    return names


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in reversed(list_images(folder))}  # first name wins on clashes


def load_category(root: Path | None, name: str, **options: Any) -> Category:
    """List (not decode) one category's training and test images and their masks."""
    reject_options("mvtec", options)
    root = require_root(root, _EXPECTED)
    folder = root / name
    if not (folder / "train" / GOOD).is_dir():
        raise unknown_category(root, name, discover_categories(root))
    train = tuple(list_images(folder / "train" / GOOD))
    if not train:
        raise DatasetError(f"{folder / 'train' / GOOD}: no training images in category {name!r}")
    defects = subdirs(folder / "test")
    truth = folder / "ground_truth"
    if any(d.name != GOOD for d in defects) and not truth.is_dir():
        raise DatasetError(
            f"{truth} does not exist but {folder / 'test'} has defect folders; the MVTec layout "
            "needs pixel masks: restore ground_truth or use the 'folder' layout for image labels"
        )
    test: list[TestItem] = []
    for defect in defects:
        images = list_images(defect)
        if defect.name == GOOD:
            test.extend(TestItem(p, 0, GOOD) for p in images)
            continue
        masks = _masks_by_stem(truth / defect.name)
        for image in images:
            mask = masks.get(f"{image.stem}_mask")
            if mask is None:
                expected = truth / defect.name / f"{image.stem}_mask.png"
                raise DatasetError(
                    f"{image}: defect image has no mask; put its mask (white = defect) at "
                    f"{expected}, or remove the image"
                )
            test.append(TestItem(image, 1, defect.name, mask))
    if not test:
        raise DatasetError(f"{folder / 'test'}: no test images in category {name!r}")
    folders = [folder / "train" / GOOD, *defects, *subdirs(truth)]
    notes = tuple(note for note in [ignored_files(*folders)] if note)
    return Category(name, root, train, tuple(test), has_masks=True, notes=notes)
