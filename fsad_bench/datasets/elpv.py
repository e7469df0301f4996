"""ELPV solar-cell electroluminescence images, read from the ``elpv-dataset`` package.

The package ships ``data/labels.csv`` (path, defect probability, cell type) beside
``data/images/``. Its own ``load_dataset()`` decodes all 2,624 images at once, so only the
labels file is read here and images are decoded later like any other dataset. They stay
where pip put them: the data root is the package's image folder and manifests hold names
relative to it.

Categories are the cell types ``mono`` and ``poly``. Probability 0 is normal and 1 is
defective; 1/3 and 2/3 are uncertain expert votes and are left out (counted in the notes).
There is no official split: normal images are split by ``split_by_name_hash``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsad_bench.datasets.base import GOOD, Category, TestItem
from fsad_bench.datasets.folder import split_by_name_hash
from fsad_bench.datasets.mvtec import reject_options, unknown_category
from fsad_bench.errors import DatasetError

DEFAULT_NORMAL_TEST_FRACTION = 0.5
DEFECTIVE = "defective"
_MISSING = "ELPV needs the optional extra: pip install 'fsad-bench[elpv]'"


@dataclass(frozen=True)
class _Row:
    path: Path
    probability: float
    kind: str


def package_image_dir() -> Path:
    """The installed package's image folder (the default data root)."""
    try:
        import elpv_dataset  # an empty package: importing it decodes nothing
    except ImportError as exc:
        raise DatasetError(_MISSING) from exc
    return Path(elpv_dataset.__file__).resolve().parent / "data" / "images"


def _image_dir(root: Path | None) -> Path:
    images = package_image_dir() if root is None else Path(root)
    if not (images.parent / "labels.csv").is_file():
        raise DatasetError(
            f"{images.parent / 'labels.csv'} not found; pass the ELPV images folder (with "
            "labels.csv beside it) as --data-root, or omit it to use the installed package"
        )
    return images


def _read_labels(images: Path) -> list[_Row]:
    labels = images.parent / "labels.csv"
    rows = []
    for number, line in enumerate(labels.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            rel, probability, kind = fields[0], float(fields[1]), fields[2]
            if len(fields) != 3 or not 0.0 <= probability <= 1.0:
                raise ValueError
        except (ValueError, IndexError) as exc:
            raise DatasetError(
                f"{labels}:{number}: expected '<path> <probability 0..1> <mono|poly>', got "
                f"{line.strip()!r}; reinstall with pip install --force-reinstall elpv-dataset"
            ) from exc
        rows.append(_Row(labels.parent / rel, probability, kind))
    return rows


def discover_categories(root: Path | None = None) -> list[str]:
    """The cell types in the labels file: ``mono`` and ``poly``."""
    return sorted({row.kind for row in _read_labels(_image_dir(root))})


def _check_files(images: Path, paths: list[Path]) -> None:
    folder = images.resolve()
    for path in paths:
        if not path.is_file() or path.parent.resolve() != folder:
            raise DatasetError(
                f"{path}: listed in {images.parent / 'labels.csv'} but not a file in {images}; "
                "reinstall with pip install --force-reinstall elpv-dataset"
            )


def load_category(root: Path | None, name: str, **options: Any) -> Category:
    """One cell type (``root`` None: the installed package); ``normal_test_fraction`` 0.5."""
    reject_options("elpv", options, ("normal_test_fraction",))
    fraction = float(options.get("normal_test_fraction", DEFAULT_NORMAL_TEST_FRACTION))
    images = _image_dir(root)
    rows = _read_labels(images)
    if name not in {row.kind for row in rows}:
        raise unknown_category(images, name, sorted({row.kind for row in rows}))
    rows = [row for row in rows if row.kind == name]
    normal = [row.path for row in rows if row.probability == 0.0]
    defective = [row.path for row in rows if math.isclose(row.probability, 1.0)]
    excluded = len(rows) - len(normal) - len(defective)
    _check_files(images, normal + defective)
    train, normal_test = split_by_name_hash(normal, fraction)
    test = sorted(
        [TestItem(p, 0, GOOD) for p in normal_test]
        + [TestItem(p, 1, DEFECTIVE) for p in defective],
        key=lambda item: item.path.name,
    )
    notes = (
        f"excluded {excluded} images with defect probability strictly between 0 and 1",
        f"normal images split by file-name hash: {len(train)} support pool, "
        f"{len(normal_test)} test (normal_test_fraction={fraction})",
    )
    return Category(name, images, train, tuple(test), has_masks=False, notes=notes)
