"""Defects of the synthetic dataset: where something went wrong and what it looks like.

Every defect is committed the same way: the altered image is kept only where it differs
visibly from the clean one, and exactly that set of pixels is the mask. So a mask never
has a halo of untouched pixels, and no altered pixel is left outside it. A defect whose
mask is tiny (lost behind an edge) or huge is drawn again, so all masks cover between
``MIN_AREA`` and ``MAX_AREA`` of the image: visible, but not trivial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy import ndimage
from skimage import draw

MIN_AREA = 0.004
MAX_AREA = 0.08
# Smallest per-pixel change (on a 0-1 scale, about 5 grey levels) that counts as altered.
VISIBLE = 0.02
_TRIES = 100

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """How defects of one category look: colours a scratch, a stain and a colour shift go to."""

    scratch: RGB
    stain: RGB
    shift: RGB
    size: float = 1.0  # scales defect sizes: busy textures hide small defects


@dataclass(frozen=True)
class Scene:
    """A clean, noise-free image and what a defect may need from it.

    ``support`` is where a defect may lie (the object, or everything for a texture);
    ``under`` is what remains when part of the object is gone; ``parts`` labels removable
    components (0 = none); ``donor`` is the foreign material a pasted patch shows.
    """

    image: np.ndarray  # (S, S, 3) float32 in [0, 1]
    support: np.ndarray  # (S, S) bool
    under: np.ndarray | None = None
    parts: np.ndarray | None = None
    donor: np.ndarray | None = None


def blob(rng: np.random.Generator, size: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """An irregular round region: a polygon whose radius wobbles with a few low harmonics."""
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        wobble += rng.uniform(0, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rows = centre[0] + radius * wobble * np.sin(theta)
    cols = centre[1] + radius * wobble * np.cos(theta)
    mask = np.zeros((size, size), bool)
    mask[draw.polygon(rows, cols, (size, size))] = True
    return mask


def curve(
    rng: np.random.Generator, size: int, centre: np.ndarray, length: float, width: int
) -> np.ndarray:
    """A thin bent line (quadratic Bezier) through ``centre``, ``width`` pixels wide."""
    angle = rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([-half[1], half[0]])
    start, end = centre - half, centre + half
    bend = centre + normal * rng.uniform(-0.6, 0.6)
    t = np.linspace(0, 1, int(4 * length) + 2)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    points = np.rint(points).astype(int)
    inside = np.all((points >= 0) & (points < size), axis=1)
    mask = np.zeros((size, size), bool)
    mask[points[inside, 0], points[inside, 1]] = True
    if width > 1:
        mask = ndimage.binary_dilation(mask, structure=_disk((width - 1) / 2))
    return mask


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= radius**2 + 0.5


def pick_centre(rng: np.random.Generator, support: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A random support pixel away from the image border, so defects are seen whole."""
    size = support.shape[0]
    lo, hi = int(margin * size), int((1 - margin) * size)
    inner = np.zeros_like(support)
    inner[lo:hi, lo:hi] = support[lo:hi, lo:hi]
    rows, cols = np.nonzero(inner if inner.any() else support)
    i = rng.integers(len(rows))
    return np.array([rows[i], cols[i]], float)


def _blob_on(
    scene: Scene, look: Look, rng: np.random.Generator, lo: float, hi: float
) -> np.ndarray:
    """A blob of radius ``lo``-``hi`` (fractions of the side, scaled by the look), on support."""
    size = scene.support.shape[0]
    radius = size * look.size * rng.uniform(lo, hi)
    return blob(rng, size, pick_centre(rng, scene.support), radius) & scene.support


def _blend(image: np.ndarray, colour: RGB, strength: float) -> np.ndarray:
    return (1 - strength) * image + strength * np.asarray(colour, np.float32)


def _scratch(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = scene.support.shape[0]
    width = max(1, round(size * look.size * rng.uniform(0.008, 0.014)))
    line = curve(rng, size, pick_centre(rng, scene.support), size * rng.uniform(0.3, 0.55), width)
    return line & scene.support, _blend(scene.image, look.scratch, rng.uniform(0.65, 0.9))


def _stain(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    region = _blob_on(scene, look, rng, 0.05, 0.1)
    return region, _blend(scene.image, look.stain, rng.uniform(0.6, 0.85))


def _colour(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keep the shading, move the hue: a lightness map painted in the look's shift colour."""
    region = _blob_on(scene, look, rng, 0.06, 0.12)
    lightness = scene.image.mean(axis=-1, keepdims=True)
    target = np.asarray(look.shift, np.float32) / np.mean(look.shift)
    shifted = np.clip((0.2 + 0.8 * lightness) * target, 0, 1)
    strength = rng.uniform(0.6, 0.9)
    return region, (1 - strength) * scene.image + strength * shifted


def _patch(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if scene.donor is None:
        raise ValueError("a patch defect needs a scene with a donor image")
    return _blob_on(scene, look, rng, 0.06, 0.11), scene.donor


def _missing(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A component gone (when the scene has parts) or a bite out of the object's outline."""
    if scene.under is None:
        raise ValueError("a missing-part defect needs a scene with an 'under' image")
    if scene.parts is not None:
        labels = np.unique(scene.parts[scene.parts > 0])
        return scene.parts == rng.choice(labels), scene.under
    size = scene.support.shape[0]
    outline = scene.support & ~ndimage.binary_erosion(scene.support)
    region = blob(rng, size, pick_centre(rng, outline), size * rng.uniform(0.06, 0.1))
    return region, scene.under


Drawer = Callable[[Any, Any, np.random.Generator], tuple[np.ndarray, np.ndarray]]
_DRAW: dict[str, Drawer] = {
    "scratch": _scratch,
    "stain": _stain,
    "colour": _colour,
    "patch": _patch,
    "missing": _missing,
}
DEFECT_KINDS = tuple(_DRAW)


class Pictured(Protocol):
    """A scene of either dataset version: all ``apply_defect`` reads of it is the image."""

    image: np.ndarray


def apply_defect(
    kind: str, scene: Pictured, look: Any, rng: np.random.Generator, *,
    drawers: Mapping[str, Drawer] = _DRAW, area: tuple[float, float] = (MIN_AREA, MAX_AREA),
    visible: float = VISIBLE,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The defective image and its mask (bool, exactly the visibly altered pixels).

    ``drawers`` map each kind to ``draw(scene, look, rng) -> (region, altered image)``;
    version 2 of the dataset passes its own drawers, scenes, looks and limits.
    """
    for _ in range(_TRIES):
        region, altered = drawers[kind](scene, look, rng)
        changed = np.abs(altered - scene.image).max(axis=-1) > visible
        mask = region & changed
        if area[0] <= mask.mean() <= area[1]:
            image = np.where(mask[..., None], altered, scene.image).astype(np.float32)
            return image, mask
    raise RuntimeError(f"no {kind} defect of {area[0]:.1%}-{area[1]:.1%} area in {_TRIES} tries")
