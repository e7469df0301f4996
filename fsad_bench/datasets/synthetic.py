"""The embedded default dataset: MVTec-layout images generated offline, in seconds.

Textures are crops of scikit-image's bundled CC0 photos (brick, grass, gravel), tinted;
objects (washer, pill, PCB) are drawn once per image size and then shifted, turned and
relit for every sample. Each image has its own random stream, seeded from (seed,
category, split, index), so changing a count never changes the other images, and the
PNGs carry no metadata, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from fsad_bench.datasets.synthetic_common import (
    MANIFEST,
    Sample,
    affine,
    check_arguments,
    default_dir,
    ensure_generated,
    grid,
    photo_texture,
    rng_stream,
    to_uint8,
    warp,
    write_category,
)
from fsad_bench.datasets.synthetic_defects import Look, Scene, apply_defect
from fsad_bench.errors import DatasetError

SYNTHETIC_VERSION = "synthetic-v1"
LICENSE_NOTE = "scikit-image sample photos are CC0"
MIN_IMAGE_SIZE = 32

# name: (dark colour, light colour, donor photo for pasted patches)
_TEXTURES: dict[str, tuple[tuple[float, ...], tuple[float, ...], str]] = {
    "brick": ((0.22, 0.09, 0.06), (0.93, 0.62, 0.50), "gravel"),
    "grass": ((0.05, 0.16, 0.03), (0.62, 0.85, 0.38), "brick"),
    "gravel": ((0.14, 0.13, 0.12), (0.90, 0.87, 0.80), "grass"),
}
# name: (background colour, max rotation in degrees, max shift as a fraction of the side)
_OBJECTS: dict[str, tuple[tuple[float, ...], float, float]] = {
    "washer": ((0.20, 0.21, 0.23), 25.0, 0.04),
    "pill": ((0.42, 0.47, 0.53), 8.0, 0.04),
    "pcb": ((0.15, 0.15, 0.16), 2.0, 0.02),
}
DEFECTS: dict[str, tuple[str, ...]] = {
    "brick": ("scratch", "stain", "colour", "patch"),
    "grass": ("scratch", "stain", "colour", "patch"),
    "gravel": ("scratch", "stain", "colour", "patch"),
    "washer": ("scratch", "stain", "colour", "missing"),
    "pill": ("scratch", "stain", "colour", "missing"),
    "pcb": ("scratch", "stain", "patch", "missing"),
}
# Colours a scratch, a stain and a colour shift go to; busy textures get larger defects.
LOOKS: dict[str, Look] = {
    "brick": Look((0.88, 0.85, 0.80), (0.10, 0.08, 0.07), (0.45, 0.55, 0.85), size=1.3),
    "grass": Look((0.92, 0.92, 0.88), (0.30, 0.20, 0.10), (0.90, 0.55, 0.15), size=1.3),
    "gravel": Look((0.97, 0.97, 0.97), (0.06, 0.05, 0.05), (0.85, 0.45, 0.30), size=1.3),
    "washer": Look((0.97, 0.97, 1.00), (0.12, 0.10, 0.08), (0.75, 0.38, 0.12)),
    "pill": Look((0.18, 0.12, 0.12), (0.30, 0.25, 0.18), (0.90, 0.75, 0.20)),
    "pcb": Look((0.85, 0.60, 0.35), (0.82, 0.82, 0.85), (0.35, 0.25, 0.15)),
}
DEFAULT_CATEGORIES: tuple[str, ...] = tuple(DEFECTS)
_SENSOR_NOISE = 0.012


# ---------------------------------------------------------------- textures


def _texture(name: str, rng: np.random.Generator, size: int, tint: str) -> np.ndarray:
    """A random crop of the photo ``name`` (256 photo pixels wide), coloured as ``tint``."""
    dark, light, _ = _TEXTURES[tint]
    return photo_texture(name, rng, size, dark, light)


def _texture_scene(name: str, rng: np.random.Generator, size: int, kind: str) -> Scene:
    image = _texture(name, rng, size, name)
    donor_name = _TEXTURES[name][2]
    donor = _texture(donor_name, rng, size, donor_name) if kind == "patch" else None
    return Scene(image=image, support=np.ones((size, size), bool), donor=donor)


# ---------------------------------------------------------------- objects


@dataclass(frozen=True)
class _Layers:
    """An object drawn once, centred: colour, coverage, and what is under removable parts."""

    rgb: np.ndarray
    alpha: np.ndarray
    bare: np.ndarray | None = None
    parts: np.ndarray | None = None


def _washer(size: int) -> _Layers:
    v, u = grid(size)
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    outer, inner = 0.34, 0.16
    alpha = np.clip((outer - r) * size + 0.5, 0, 1) * np.clip((r - inner) * size + 0.5, 0, 1)
    rim = np.clip(np.minimum(outer - r, r - inner) / 0.03, 0, 1)  # bevelled edges are darker
    light = 0.6 + 0.12 * np.cos(theta - 0.8) + 0.03 * np.sin(2 * np.pi * r / 0.02)
    rgb = (light * (0.7 + 0.3 * rim))[..., None] * np.array([0.97, 0.98, 1.0], np.float32)
    return _Layers(rgb.astype(np.float32), alpha.astype(np.float32))


def _pill(size: int) -> _Layers:
    v, u = grid(size)
    half, radius = 0.26, 0.12
    d = np.hypot(u - np.clip(u, -half, half), v)  # distance to the capsule's axis segment
    alpha = np.clip((radius - d) * size + 0.5, 0, 1)
    body = np.where((u < 0)[..., None], [0.75, 0.15, 0.15], [0.93, 0.90, 0.84])
    bulge = np.sqrt(np.clip(1 - (d / radius) ** 2, 0, 1))
    seam = 1 - 0.3 * np.exp(-((u * size) ** 2))
    shine = 0.25 * bulge * np.exp(-(((v + 0.45 * radius) / (0.15 * radius)) ** 2))
    rgb = body * ((0.55 + 0.45 * bulge) * seam)[..., None] + shine[..., None]
    return _Layers(np.clip(rgb, 0, 1).astype(np.float32), alpha.astype(np.float32))


def _pcb(size: int) -> _Layers:
    """A board with traces and pads; the chip, resistors and capacitor are removable parts."""
    v, u = grid(size)
    v, u = v + 0.5, u + 0.5  # 0..1 from the top-left corner

    def box(r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
        return (v >= r0) & (v < r1) & (u >= c0) & (u < c1)

    def disk(r: float, c: float, radius: float) -> np.ndarray:
        return (v - r) ** 2 + (u - c) ** 2 < radius**2

    def sides(p: float, near: float, far: float, half: float) -> list[np.ndarray]:
        """Boxes on the chip's four sides, ``near``-``far`` from its centre, ``p`` along it."""
        a, b, n = 0.52 - far, 0.52 + near, far - near  # left/top start, right/bottom start
        return [box(p - half, a, p + half, a + n), box(p - half, b, p + half, b + n),
                box(a, p - half, a + n, p + half), box(b, p - half, b + n, p + half)]  # fmt: skip

    tin, hole = (0.80, 0.72, 0.48), (0.05, 0.05, 0.05)
    bare = np.zeros((size, size, 3), np.float32)
    alpha = box(0.12, 0.08, 0.88, 0.92).astype(np.float32)
    bare[alpha > 0] = (0.10, 0.38, 0.20)
    pins = np.linspace(0.45, 0.59, 4)
    for p in pins:  # traces from the chip to through-hole pads and the edge connector
        for trace in sides(p, 0.0, 0.32, 0.007) + [box(p - 0.007, 0.52, p + 0.007, 0.86)]:
            bare[trace] = (0.16, 0.50, 0.26)
        for pad in sides(p, 0.10, 0.15, 0.012):
            bare[pad] = tin
        for r, c in ((p, 0.20), (0.20, p), (0.84, p)):
            bare[disk(r, c, 0.02)], bare[disk(r, c, 0.008)] = tin, hole
        bare[box(p - 0.015, 0.84, p + 0.015, 0.92)] = (0.85, 0.70, 0.30)
    for c in (0.18, 0.66):  # resistor footprints
        bare[box(0.215, c, 0.275, c + 0.035)] = bare[box(0.215, c + 0.085, 0.275, c + 0.12)] = tin
    bare[disk(0.72, 0.76, 0.072) & ~disk(0.72, 0.76, 0.064)] = 0.92  # capacitor outline
    for r, c in ((0.18, 0.14), (0.18, 0.86), (0.82, 0.14), (0.82, 0.86)):  # mounting holes
        bare[disk(r, c, 0.045)] = (0.72, 0.72, 0.70)
        alpha[disk(r, c, 0.03)] = 0
    rgb, parts = bare.copy(), np.zeros((size, size), np.int32)
    for pin in [b for p in pins for b in sides(p, 0.10, 0.135, 0.008)]:
        rgb[pin], parts[pin] = 0.78, 1
    chip = box(0.42, 0.42, 0.62, 0.62)
    rgb[chip], parts[chip] = 0.08, 1
    rgb[disk(0.45, 0.45, 0.012)] = 0.25  # pin-1 dot
    for label, c in ((2, 0.18), (3, 0.66)):
        body = box(0.21, c, 0.28, c + 0.12)
        rgb[body], parts[body] = (0.72, 0.60, 0.42), label
        rgb[box(0.21, c, 0.28, c + 0.025)] = rgb[box(0.21, c + 0.095, 0.28, c + 0.12)] = 0.8
    cap = disk(0.72, 0.76, 0.062)
    rgb[cap], parts[cap] = (0.15, 0.20, 0.45), 4
    rgb[disk(0.72, 0.76, 0.048)] = 0.75
    rgb[disk(0.72, 0.76, 0.04) & ((np.abs(v - 0.72) < 0.004) | (np.abs(u - 0.76) < 0.004))] = 0.45
    return _Layers(rgb, alpha, bare, parts)


_DRAWERS: dict[str, Callable[[int], _Layers]] = {"washer": _washer, "pill": _pill, "pcb": _pcb}


@lru_cache(maxsize=16)
def _layers(name: str, size: int) -> _Layers:
    return _DRAWERS[name](size)


def _object_scene(name: str, rng: np.random.Generator, size: int, kind: str) -> Scene:
    layers = _layers(name, size)
    background, max_angle, max_shift = _OBJECTS[name]
    centre = np.array([(size - 1) / 2] * 2)
    shift = rng.uniform(-max_shift, max_shift, 2) * size
    inverse = affine(rng.uniform(-max_angle, max_angle), 1.0, False, centre, centre + shift)
    stack = [layers.rgb, layers.alpha[..., None]] + (
        [layers.bare] if layers.bare is not None else []
    )
    warped = warp(np.concatenate(stack, axis=-1), inverse, size)
    gain = (1 + rng.normal(0, 0.02, 3)) * rng.uniform(0.96, 1.04)
    v, u = grid(size)
    slope = rng.normal(0, 0.06, 2)
    floor = np.asarray(background) * (1 + slope[0] * v + slope[1] * u)[..., None]
    alpha = warped[..., 3:4]
    image = floor * (1 - alpha) + np.clip(warped[..., :3] * gain, 0, 1) * alpha
    under = floor if layers.bare is None else floor * (1 - alpha) + warped[..., 4:] * gain * alpha
    parts = None if layers.parts is None else warp(layers.parts[..., None], inverse, size, True)
    image = image.astype(np.float32)
    return Scene(
        image=image,
        support=alpha[..., 0] > 0.5,
        under=np.clip(under, 0, 1).astype(np.float32),
        parts=None if parts is None else parts[..., 0],
        donor=np.roll(image, (size // 3, size // 3), axis=(0, 1)) if kind == "patch" else None,
    )


# ---------------------------------------------------------------- samples and files


def make_sample(
    category: str, kind: str, index: int, *, seed: int = 0, image_size: int = 256,
    train: bool = False,
) -> Sample:  # fmt: skip
    """Image ``index`` of ``train/good`` (``train=True``) or of ``test/<kind>``."""
    _check_category(category)
    if kind != "good" and (train or kind not in DEFECTS[category]):
        raise DatasetError(f"{category} has no defect {kind!r}; kinds: {DEFECTS[category]}")
    rng = rng_stream(seed, category, "train" if train else f"test/{kind}", index)
    if category in _TEXTURES:
        scene = _texture_scene(category, rng, image_size, kind)
    else:
        scene = _object_scene(category, rng, image_size, kind)
    noise = rng.normal(0, _SENSOR_NOISE, scene.image.shape).astype(np.float32)
    clean = to_uint8(scene.image + noise)
    if kind == "good":
        return Sample(clean, None, clean)
    image, mask = apply_defect(kind, scene, LOOKS[category], rng)
    return Sample(to_uint8(image + noise), mask.astype(np.uint8) * 255, clean)


def _check_category(name: str) -> None:
    if name not in DEFECTS:
        raise DatasetError(f"unknown synthetic category {name!r}; valid: {', '.join(DEFECTS)}")


def generate_synthetic(
    out_dir: Path, seed: int = 0, image_size: int = 256, n_train: int = 24,
    n_test_good: int = 8, n_test_per_defect: int = 4, categories: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """Write the dataset in the MVTec AD layout plus ``SYNTHETIC.json``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    names = tuple(categories) if categories is not None else DEFAULT_CATEGORIES
    sizes = (n_train, n_test_good, n_test_per_defect)
    check_arguments(names, DEFECTS, seed, image_size, sizes, out_dir, MIN_IMAGE_SIZE)
    counts = {}
    for name in names:
        test = {"good": n_test_good} | {kind: n_test_per_defect for kind in DEFECTS[name]}
        make = partial(make_sample, name, seed=seed, image_size=image_size)
        write_category(out_dir / name, make, test, n_train)
        counts[name] = {"train": {"good": n_train}, "test": test}
        if progress is not None:
            progress(f"{name}: {n_train} train, {sum(test.values())} test images")
    meta = {
        "generator": SYNTHETIC_VERSION, "seed": seed, "image_size": image_size,
        "counts": counts, "license": LICENSE_NOTE,
        "sources": {t: f"skimage.data.{t}() (CC0)" for t in _TEXTURES if t in names},
    }  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_dir


def default_dataset_dir() -> Path:
    """Where the default dataset lives: ``$FSAD_BENCH_DATA``, else the user's cache."""
    return default_dir("FSAD_BENCH_DATA", SYNTHETIC_VERSION)


def ensure_default_dataset(progress: Callable[[str], None] | None = None) -> Path:
    """The default dataset, generated on first use (atomically: ``ensure_generated``)."""
    return ensure_generated(
        default_dataset_dir(),
        SYNTHETIC_VERSION,
        lambda folder: generate_synthetic(folder, progress=progress),
        "FSAD_BENCH_DATA",
    )
