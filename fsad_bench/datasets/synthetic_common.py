"""Pieces every version of the generated dataset shares: sampling, random streams, files.

Moved here verbatim from version 1's module so that version 2 reuses them instead of
copying them; version 1's pixels do not change (tests/test_synthetic.py pins them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image
from scipy import ndimage

from fsad_bench.datasets.hashing import pixel_sha256
from fsad_bench.errors import DatasetError

MANIFEST = "SYNTHETIC.json"


@dataclass(frozen=True)
class Sample:
    """One generated image; ``clean`` is the same image before its defect was drawn."""

    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray | None  # (S, S) uint8 0/255; None for normal images
    clean: np.ndarray  # (S, S, 3) uint8


def warp(src: np.ndarray, inverse: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Sample ``src`` (H, W, C) where the 2x3 ``inverse`` maps output (row, col, 1) to source.

    Own bilinear sampler (edge-clamped) rather than a library warp, so pixels do not move
    when a library changes its interpolation details.
    """
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    sr = inverse[0, 0] * rows + inverse[0, 1] * cols + inverse[0, 2]
    sc = inverse[1, 0] * rows + inverse[1, 1] * cols + inverse[1, 2]
    return sample(src, sr, sc, nearest)


def sample(src: np.ndarray, sr: np.ndarray, sc: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``src`` (H, W, C) at fractional rows ``sr`` and columns ``sc``, edge-clamped."""
    sr = np.clip(sr, 0, src.shape[0] - 1)
    sc = np.clip(sc, 0, src.shape[1] - 1)
    if nearest:
        return src[np.rint(sr).astype(np.intp), np.rint(sc).astype(np.intp)]
    r0, c0 = np.floor(sr).astype(np.intp), np.floor(sc).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, src.shape[0] - 1), np.minimum(c0 + 1, src.shape[1] - 1)
    fr, fc = (sr - r0)[..., None], (sc - c0)[..., None]
    top = src[r0, c0] * (1 - fc) + src[r0, c1] * fc
    bottom = src[r1, c0] * (1 - fc) + src[r1, c1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def affine(
    angle_deg: float, scale: float, flip: bool, src_centre: ArrayLike, out_centre: ArrayLike
) -> np.ndarray:
    """Output pixel -> source pixel: about the centres, rotated, scaled, optionally mirrored."""
    a = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    if flip:
        linear = linear @ np.diag([1.0, -1.0])
    offset = np.asarray(src_centre, float) - linear @ np.asarray(out_centre, float)
    return np.hstack([linear, offset[:, None]])


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets from the centre, in units of the image side."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    return (rows - (size - 1) / 2) / size, (cols - (size - 1) / 2) / size


@lru_cache(maxsize=16)
def gray_photo(name: str, scale: float) -> np.ndarray:
    """The bundled photo as float (H, W, 1), blurred enough not to alias when shrunk."""
    from skimage import data  # bundled in the wheel: brick, grass and gravel need no download

    gray = getattr(data, name)().astype(np.float32) / 255.0
    if scale > 1:
        gray = ndimage.gaussian_filter(gray, sigma=0.5 * scale)
    gray.setflags(write=False)
    return gray[..., None]


def photo_texture(
    name: str, rng: np.random.Generator, size: int, dark: Sequence[float],
    light: Sequence[float], turn: float = 5.0,
) -> np.ndarray:  # fmt: skip
    """A random window onto the photo ``name``, 256 photo pixels wide, turned up to ``turn``
    degrees either way and randomly mirrored, grey levels mapped dark -> light."""
    scale = 256 / size * rng.uniform(0.95, 1.05)
    source = gray_photo(name, round(256 / size, 3))
    angle = rng.uniform(-turn, turn)
    half = 0.5 * size * scale * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))
    centre = rng.uniform(half, np.array(source.shape[:2]) - 1 - half)
    inverse = affine(angle, scale, bool(rng.random() < 0.5), centre, [(size - 1) / 2] * 2)
    gray = warp(source, inverse, size)
    gray = np.clip(gray * rng.uniform(0.93, 1.07) + rng.uniform(-0.03, 0.03), 0, 1)
    return np.asarray(dark, np.float32) + gray * np.asarray(np.subtract(light, dark), np.float32)


def rng_stream(seed: int, category: str, stream: str, index: int) -> np.random.Generator:
    """One image's own random stream: changing a count never changes another image."""
    keys = [seed, zlib.crc32(category.encode()), zlib.crc32(stream.encode()), index]
    return np.random.default_rng(keys)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # no time or text chunks


def write_category(
    folder: Path, make: Callable[..., Sample], counts: dict[str, int], n_train: int
) -> None:
    """Write one category in the MVTec layout; ``make(kind, index, train=...)`` draws an
    image, ``counts`` maps each test folder (``good`` and the defect kinds) to its count."""
    for i in range(n_train):
        sample = make("good", i, train=True)
        save_png(folder / "train" / "good" / f"{i:03d}.png", sample.image)
    for kind, count in counts.items():
        for i in range(count):
            sample = make(kind, i, train=False)
            save_png(folder / "test" / kind / f"{i:03d}.png", sample.image)
            if sample.mask is not None:
                save_png(folder / "ground_truth" / kind / f"{i:03d}_mask.png", sample.mask)


def category_hash(root: Path, category: str) -> str:
    """SHA-256 (16 hex) over every file of a category: relative path and decoded pixels.

    Pixels, not PNG bytes: the encoder's zlib may differ between machines, the images not.
    """
    folder = Path(root) / category
    files = sorted(p for p in folder.rglob("*.png") if p.is_file())
    if not files:
        raise DatasetError(f"{folder}: no images; regenerate the dataset")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\t{pixel_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def default_dir(env_var: str, version: str) -> Path:
    """Where a generated default lives: ``$<env_var>``, else the user's cache."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fsad-bench" / f"{version}-seed0"


def ensure_generated(
    target: Path, version: str, generate: Callable[[Path], object], env_var: str
) -> Path:
    """``target`` holding ``version`` data, generated on first use into a temporary folder then
    renamed, so an interrupted run never leaves half a dataset and concurrent runs do not
    collide. ``generate(folder)`` writes the dataset into an empty ``folder``."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        check_existing(target, version, env_var)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        generate(partial)
        try:
            os.replace(partial, target)
        except OSError:
            if not (target / MANIFEST).is_file():
                raise
            check_existing(target, version, env_var)  # another process finished first
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def check_existing(target: Path, version: str, env_var: str) -> None:
    manifest = target / MANIFEST
    fix = f"delete it or point {env_var} at another folder"
    if not manifest.is_file():
        raise DatasetError(f"{target} exists but has no {MANIFEST}; {fix}")
    try:
        found = json.loads(manifest.read_text()).get("generator")
    except (OSError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{manifest}: unreadable ({exc}); {fix}") from None
    if found != version:
        raise DatasetError(f"{target} holds {found} data, this version makes {version}; {fix}")


def check_arguments(
    names: Iterable[str], known: Iterable[str], seed: int, image_size: int, counts: Iterable[int],
    out_dir: Path, min_size: int,
) -> None:  # fmt: skip
    """One-line errors for bad generator arguments, before anything is written."""
    valid = tuple(known)
    for name in names:
        if name not in valid:
            raise DatasetError(f"unknown synthetic category {name!r}; valid: {', '.join(valid)}")
    if seed < 0:
        raise DatasetError(f"synthetic seed must be >= 0, got {seed}")
    if image_size < min_size:
        raise DatasetError(f"image_size {image_size} is too small; use at least {min_size}")
    if min(counts) < 1:
        raise DatasetError("synthetic image counts must all be >= 1")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetError(f"{out_dir} already exists; choose a new folder or delete it first")
