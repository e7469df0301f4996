"""Dataset layouts by name: each lists categories and their files without decoding pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from fsad_bench.datasets import elpv, folder, mvtec, synthetic_layout
from fsad_bench.datasets.base import Category
from fsad_bench.errors import DatasetError


@dataclass(frozen=True)
class Layout:
    """A reader: ``discover_categories(root)`` and ``load_category(root, name, **options)``."""

    name: str
    discover_categories: Callable[[Path | None], list[str]]
    load_category: Callable[..., Category]


def _layout(name: str, module: ModuleType) -> Layout:
    return Layout(name, module.discover_categories, module.load_category)


# "synthetic" data is generated (fsad_bench.datasets.synthetic_versions) in the MVTec
# layout; its reader checks the generator and content hashes a protocol records.
LAYOUTS: dict[str, Layout] = {
    "mvtec": _layout("mvtec", mvtec),
    "mpdd": _layout("mpdd", mvtec),
    "folder": _layout("folder", folder),
    "elpv": _layout("elpv", elpv),
    "synthetic": _layout("synthetic", synthetic_layout),
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        valid = ", ".join(sorted(LAYOUTS))
        raise DatasetError(f"unknown dataset layout {name!r}; valid layouts: {valid}") from None
