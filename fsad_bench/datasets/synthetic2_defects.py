"""Version 2's defects: smaller, fainter and more varied than version 1's.

Surface defects (a thin scratch, a faint stain, a wrong colour, foreign material, a hole)
are painted on the posed scene; part defects (a part missing, misplaced or of the wrong
colour; a broken thread, a thread of another dye) are the scene drawn again with its
layout changed, so they look exactly like the part itself. Version 1's rule commits them
(``synthetic_defects.apply_defect``): the mask is exactly the altered pixels, before the
camera blurs and adds noise to both the defective image and its clean twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fsad_bench.datasets.synthetic_defects import apply_defect, blob, curve, pick_centre

RGB = tuple[float, float, float]
# Smaller than version 1 allows (0.4-8% of the image): a thin scratch covers about 0.1%;
# larger for a whole wrong part (a capsule's cap, two swapped wires). A pixel counts as
# altered from a change of 0.012 (3 grey levels; version 1: 0.02), so a stain's faint rim
# is in its mask.
MIN_AREA = 0.0008
MAX_AREA = 0.15
VISIBLE = 0.012

Variant = Callable[[str, np.random.Generator], tuple[np.ndarray, np.ndarray]]
Drawer = Callable[["Scene", "Look", np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Look:
    """How a category's surface defects look."""

    scratch: RGB  # the tone a scratch or crack goes to (bright metal, a dark crack)
    shift: RGB  # the hue a discoloured region goes to


@dataclass(frozen=True)
class Scene:
    """A posed, noise-free image and what its defects need.

    ``support``: where a defect may lie; ``under``: what shows where material is gone;
    ``donor``: foreign material; ``variant(kind, rng)``: the scene drawn again with a part
    missing, moved or recoloured, as ``(region, altered image)``.
    """

    image: np.ndarray  # (S, S, 3) float32
    support: np.ndarray  # (S, S) bool
    under: np.ndarray | None = None
    donor: np.ndarray | None = None
    variant: Variant | None = None
    outline: bool = False  # holes bite into the object's outline (objects) or lie inside


def _radius(size: int, rng: np.random.Generator, lo: float, hi: float) -> float:
    """A radius of ``lo``-``hi`` image sides, log-uniform: small defects as common as large."""
    return size * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blob_on(scene: Scene, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """An irregular blob centred on the scene's support (and clipped to it)."""
    size = scene.support.shape[0]
    region = blob(rng, size, pick_centre(rng, scene.support), _radius(size, rng, lo, hi))
    return region & scene.support


def _scratch(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin line, one or two pixels at 256 px, part way toward the look's scratch tone."""
    size = scene.support.shape[0]
    width = max(1, round(size * rng.uniform(0.004, 0.01)))
    length = size * rng.uniform(0.15, 0.4)
    line = curve(rng, size, pick_centre(rng, scene.support), length, width)
    strength = rng.uniform(0.4, 0.8)
    altered = (1 - strength) * scene.image + strength * np.asarray(look.scratch, np.float32)
    return line & scene.support, altered


def _soft(region: np.ndarray, size: int) -> np.ndarray:
    return ndimage.gaussian_filter(region.astype(np.float32), 0.01 * size)[..., None]


def _stain(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A faint, soft-edged darkening by 15-35%: damp, oil, residue."""
    region = _blob_on(scene, rng, 0.04, 0.1)
    change = rng.uniform(0.15, 0.35)
    altered = scene.image * (1 - change * _soft(region, region.shape[0]))
    return region, altered


def _colour(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The shading kept, the hue moved part way to the look's shift colour."""
    region = _blob_on(scene, rng, 0.035, 0.09)
    lightness = scene.image.mean(axis=-1, keepdims=True)
    target = np.asarray(look.shift, np.float32) / np.mean(look.shift)
    strength = rng.uniform(0.3, 0.6) * _soft(region, region.shape[0])
    return region, (1 - strength) * scene.image + strength * np.clip(lightness * target, 0, 1)


def _foreign(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Another material in its own colours, as bright on average as the host around it."""
    if scene.donor is None:
        raise ValueError("a foreign-material defect needs a scene with a donor image")
    region = _blob_on(scene, rng, 0.04, 0.1)
    if not region.any():
        return region, scene.image
    gain = scene.image[region].mean() / max(float(scene.donor[region].mean()), 1e-3)
    return region, np.clip(scene.donor * gain, 0, 1).astype(np.float32)


def _hole(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Material gone: a chip out of the outline (objects) or a hole in the surface."""
    if scene.under is None:
        raise ValueError("a hole defect needs a scene with an 'under' image")
    size = scene.support.shape[0]
    where = scene.support
    if scene.outline:
        where = scene.support & ~ndimage.binary_erosion(scene.support, iterations=2)
    centre = pick_centre(rng, where)
    region = blob(rng, size, centre, _radius(size, rng, 0.02, 0.06)) & scene.support
    return region, scene.under


def _part(kind: str) -> Drawer:
    def draw(scene: Scene, look: Look, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if scene.variant is None:
            raise ValueError(f"a {kind} defect needs a scene whose parts can change")
        return scene.variant(kind, rng)

    return draw


SURFACE = {"scratch": _scratch, "stain": _stain, "colour": _colour, "foreign": _foreign,
           "hole": _hole}  # fmt: skip
PART_KINDS = ("missing", "misplaced", "wrong_colour")
DRAWERS = SURFACE | {kind: _part(kind) for kind in PART_KINDS}
DEFECT_KINDS = tuple(DRAWERS)


def defect(
    kind: str, scene: Scene, look: Look, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The defective noise-free image and its mask (exactly the visibly altered pixels)."""
    return apply_defect(
        kind, scene, look, rng, drawers=DRAWERS, area=(MIN_AREA, MAX_AREA), visible=VISIBLE
    )
