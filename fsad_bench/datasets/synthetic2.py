"""Version 2 of the embedded dataset: inspection images whose normals vary as real ones do.

Version 1's normals differed by little more than a shift, so comparing raw pixels found
its defects as well as pretrained features did. Here every image, normal or defective,
is a new piece of material or a new assembly (its own texture, part tolerances, pose and
light direction) shot by its own camera (exposure, colour cast, fall-off, focus, noise:
``synthetic2_camera``); defects are smaller and fainter and include parts missing,
misplaced or of the wrong colour. docs/synthetic2.md says what each category imitates.

Each image has its own random stream, seeded from (seed, category, split, index), and the
PNGs carry no metadata, so the same seed gives byte-identical files; ``SYNTHETIC.json``
records each category's content hash (``synthetic_common.category_hash``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from fsad_bench.datasets.synthetic2_camera import Camera, Drift
from fsad_bench.datasets.synthetic2_defects import Look, Scene, defect
from fsad_bench.datasets.synthetic2_objects import Thing, object_scene
from fsad_bench.datasets.synthetic2_textures import GRIT, STRAW, Leather, PhotoMaterial, Weave
from fsad_bench.datasets.synthetic2_things import Board, Cable, Capsule, Header, Nut
from fsad_bench.datasets.synthetic_common import (
    MANIFEST,
    Sample,
    category_hash,
    check_arguments,
    default_dir,
    ensure_generated,
    rng_stream,
    to_uint8,
    write_category,
)
from fsad_bench.errors import DatasetError

SYNTHETIC2_VERSION = "synthetic-v2"
ENV_VAR = "FSAD_BENCH_DATA_V2"
MIN_IMAGE_SIZE = 64  # a one-pixel scratch and a 19-strand wire still resolve
LICENSE_NOTE = (
    "procedural (fsad-bench, Apache-2.0) and scikit-image sample photos brick, grass, "
    "gravel (CC0 1.0, cc0textures.com)"
)
SOURCES = {"brick": "skimage.data.brick()", "grass": "skimage.data.grass()",
           "gravel": "skimage.data.gravel()"}  # fmt: skip


class Source(Protocol):
    def scene(self, rng: np.random.Generator, size: int, kind: str) -> Scene: ...


@dataclass(frozen=True)
class _Object:
    thing: Thing

    def scene(self, rng: np.random.Generator, size: int, kind: str) -> Scene:
        return object_scene(self.thing, rng, size, kind)


@dataclass(frozen=True)
class Category:
    source: Source
    defects: tuple[str, ...]
    look: Look
    drift: Drift = Drift()
    photos: tuple[str, ...] = ()  # bundled photos it reads (for the licence record)


_DARK, _LIGHT = (0.1, 0.1, 0.1), (0.95, 0.95, 0.95)
CATEGORIES: dict[str, Category] = {
    "brick": Category(
        PhotoMaterial("brick", (0.2, 0.08, 0.05), (0.85, 0.52, 0.4), turn=3.0, donor=GRIT),
        ("scratch", "stain", "hole", "foreign"),
        Look(scratch=(0.12, 0.08, 0.07), shift=(0.55, 0.55, 0.6)),
        photos=("brick", "gravel"),
    ),
    "gravel": Category(
        PhotoMaterial("gravel", (0.12, 0.11, 0.1), (0.82, 0.78, 0.7), turn=180.0, donor=STRAW),
        ("scratch", "stain", "colour", "foreign"),
        Look(scratch=_LIGHT, shift=(0.8, 0.5, 0.3)),
        photos=("gravel", "grass"),
    ),
    "fibre": Category(
        PhotoMaterial("grass", (0.12, 0.09, 0.04), (0.86, 0.76, 0.52), turn=180.0, donor=GRIT),
        ("hole", "stain", "colour", "foreign"),
        Look(scratch=_DARK, shift=(0.35, 0.5, 0.75)),
        photos=("grass", "gravel"),
    ),
    "leather": Category(
        Leather((0.14, 0.07, 0.04), (0.66, 0.42, 0.27)),
        ("scratch", "colour", "hole", "foreign"),
        Look(scratch=(0.8, 0.7, 0.6), shift=(0.3, 0.32, 0.38)),
        photos=("grass",),
    ),
    "weave": Category(
        Weave(warp=(0.3, 0.38, 0.6), weft=(0.8, 0.78, 0.72)),
        ("missing", "wrong_colour", "stain", "scratch"),
        Look(scratch=_LIGHT, shift=(0.8, 0.4, 0.3)),
    ),
    "nut": Category(
        _Object(Nut()),
        ("scratch", "stain", "hole", "foreign"),
        Look(scratch=(0.95, 0.95, 0.97), shift=(0.6, 0.4, 0.2)),
        photos=("grass",),
    ),
    "pcb": Category(
        _Object(Board()),
        ("missing", "misplaced", "wrong_colour", "scratch"),
        Look(scratch=(0.78, 0.62, 0.42), shift=(0.5, 0.4, 0.2)),
    ),
    "capsule": Category(
        _Object(Capsule()),
        ("scratch", "missing", "misplaced", "wrong_colour"),
        Look(scratch=(0.3, 0.24, 0.2), shift=(0.4, 0.5, 0.3)),
    ),
    "cable": Category(
        _Object(Cable()),
        ("misplaced", "missing", "wrong_colour", "scratch"),
        Look(scratch=_DARK, shift=(0.5, 0.5, 0.5)),
    ),
    "header": Category(
        _Object(Header()),
        ("misplaced", "missing", "wrong_colour", "foreign"),
        Look(scratch=_LIGHT, shift=(0.6, 0.6, 0.6)),
        photos=("grass",),
    ),
}
DEFECTS: dict[str, tuple[str, ...]] = {name: c.defects for name, c in CATEGORIES.items()}
DEFAULT_CATEGORIES: tuple[str, ...] = tuple(CATEGORIES)


def make_sample(
    category: str, kind: str, index: int, *, seed: int = 0, image_size: int = 256,
    train: bool = False,
) -> Sample:  # fmt: skip
    """Image ``index`` of ``train/good`` (``train=True``) or of ``test/<kind>``."""
    spec = _category(category)
    if kind != "good" and (train or kind not in spec.defects):
        raise DatasetError(f"{category} has no defect {kind!r}; kinds: {spec.defects}")
    rng = rng_stream(seed, category, "v2/train" if train else f"v2/test/{kind}", index)
    scene = spec.source.scene(rng, image_size, kind)
    camera = Camera.draw(rng, image_size, spec.drift)
    clean = to_uint8(camera.expose(scene.image))
    if kind == "good":
        return Sample(clean, None, clean)
    image, mask = defect(kind, scene, spec.look, rng)
    return Sample(to_uint8(camera.expose(image)), mask.astype(np.uint8) * 255, clean)


def _category(name: str) -> Category:
    try:
        return CATEGORIES[name]
    except KeyError:
        valid = ", ".join(CATEGORIES)
        raise DatasetError(f"unknown synthetic category {name!r}; valid: {valid}") from None


def generate_synthetic2(
    out_dir: Path, seed: int = 0, image_size: int = 256, n_train: int = 24,
    n_test_good: int = 10, n_test_per_defect: int = 4, categories: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """Write the dataset in the MVTec AD layout plus ``SYNTHETIC.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    names = tuple(categories) if categories is not None else DEFAULT_CATEGORIES
    sizes = (n_train, n_test_good, n_test_per_defect)
    check_arguments(names, CATEGORIES, seed, image_size, sizes, out_dir, MIN_IMAGE_SIZE)
    counts, hashes = {}, {}
    for name in names:
        test = {"good": n_test_good} | {kind: n_test_per_defect for kind in DEFECTS[name]}
        make = partial(make_sample, name, seed=seed, image_size=image_size)
        write_category(out_dir / name, make, test, n_train)
        counts[name] = {"train": {"good": n_train}, "test": test}
        hashes[name] = category_hash(out_dir, name)
        if progress is not None:
            progress(f"{name}: {n_train} train, {sum(test.values())} test images")
    photos = sorted({p for name in names for p in CATEGORIES[name].photos})
    meta = {
        "generator": SYNTHETIC2_VERSION, "seed": seed, "image_size": image_size,
        "counts": counts, "content_sha256": hashes, "license": LICENSE_NOTE,
        "sources": {p: f"{SOURCES[p]} (CC0)" for p in photos},
    }  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_dir


def default_dataset_dir() -> Path:
    """Where the protocol's copy lives: ``$FSAD_BENCH_DATA_V2``, else the user's cache."""
    return default_dir(ENV_VAR, SYNTHETIC2_VERSION)


def ensure_default_dataset(progress: Callable[[str], None] | None = None) -> Path:
    """The seed-0, 256 px dataset, generated on first use (atomically: ``ensure_generated``)."""
    return ensure_generated(
        default_dataset_dir(),
        SYNTHETIC2_VERSION,
        lambda folder: generate_synthetic2(folder, progress=progress),
        ENV_VAR,
    )
