"""Version 2's objects: parts drawn exactly at each image's pose, light and tolerances.

An object (``Thing``) draws itself on a ``Canvas``: the canonical coordinates of every
output pixel at this image's pose, the direction the light comes from, and a grain that
belongs to this piece of material. Every part has its own ``Place`` in each image, as
assembly tolerances give; part defects change one place (gone, moved, recoloured) and
the object is drawn again, so a moved part looks exactly like the part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from scipy import ndimage

from fsad_bench.datasets.synthetic2_defects import RGB, Scene
from fsad_bench.datasets.synthetic2_textures import LINT
from fsad_bench.datasets.synthetic_common import grid, sample


@dataclass(frozen=True)
class Place:
    """One part in one image: its offset from nominal (image sides), turn, colour, presence."""

    dv: float = 0.0
    du: float = 0.0
    angle: float = 0.0
    colour: RGB | None = None  # None: the part's own colour
    present: bool = True


Layout = Mapping[str, Place]


@dataclass(frozen=True)
class Canvas:
    """Where and how this image sees the object."""

    v: np.ndarray  # (S, S) canonical row of each pixel, in object sides, 0 at its centre
    u: np.ndarray
    px: float  # one pixel, in canonical units
    light: np.ndarray  # (2,) unit vector (row, column) towards the light, in the image
    grain: np.ndarray  # (S, S) zero-mean, unit-std fine texture fixed to the object

    @property
    def size(self) -> int:
        return self.v.shape[0]


@dataclass
class Drawing:
    """The object over a transparent background, and where each part landed."""

    rgb: np.ndarray
    alpha: np.ndarray
    parts: dict[str, np.ndarray]

    @classmethod
    def empty(cls, size: int) -> Drawing:
        return cls(np.zeros((size, size, 3), np.float32), np.zeros((size, size), np.float32), {})

    def paint(
        self, coverage: np.ndarray, colour: np.ndarray | RGB, part: str | None = None
    ) -> None:
        """Lay ``colour`` (RGB or (S,S,3)) over what is there (``rgb`` is premultiplied)."""
        c = coverage[..., None]
        self.rgb = (self.rgb * (1 - c) + np.asarray(colour, np.float32) * c).astype(np.float32)
        self.alpha = (self.alpha * (1 - coverage) + coverage).astype(np.float32)
        if part is not None:
            inside = coverage > 0.5
            self.parts[part] = self.parts[part] | inside if part in self.parts else inside


class Thing(Protocol):
    background: RGB
    turn: float  # the whole object turns up to this many degrees either way
    shift: float  # ... and moves up to this fraction of the side

    def layout(self, rng: np.random.Generator) -> dict[str, Place]: ...

    def change(self, kind: str, layout: Layout, rng: np.random.Generator) -> dict[str, Place]: ...

    def draw(self, canvas: Canvas, layout: Layout) -> Drawing: ...


def relief(canvas: Canvas, distance: np.ndarray, width: float, strength: float) -> np.ndarray:
    """Shading of a bevel ``width`` wide inside an outline: lit where it faces the light."""
    gr, gc = np.gradient(distance)
    norm = np.hypot(gr, gc) + 1e-9
    facing = (gr * canvas.light[0] + gc * canvas.light[1]) / norm  # outward normal . light
    ramp = np.clip(1 + distance / width, 0, 1) * (distance < 0)
    return (1 + strength * facing * ramp).astype(np.float32)


def moved(place: Place, rng: np.random.Generator, lo: float, hi: float) -> Place:
    """``place`` shifted by ``lo``-``hi`` image sides in a random direction."""
    step, direction = rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
    return replace(
        place, dv=place.dv + step * np.sin(direction), du=place.du + step * np.cos(direction)
    )


def jitter(
    rng: np.random.Generator, names: tuple[str, ...], shift: float, turn: float
) -> dict[str, Place]:
    """Assembly tolerance: every part a little off its nominal place and angle."""
    return {
        name: Place(*rng.uniform(-shift, shift, 2), angle=rng.uniform(-turn, turn))
        for name in names
    }


def object_scene(thing: Thing, rng: np.random.Generator, size: int, kind: str) -> Scene:
    """The object at a random pose and light on its floor, with what its defects need."""
    angle = rng.uniform(-thing.turn, thing.turn)
    shift = rng.uniform(-thing.shift, thing.shift, 2)
    scale = rng.uniform(0.97, 1.03)
    light_angle = np.deg2rad(-135 + rng.uniform(-30, 30))
    light = np.array([np.sin(light_angle), np.cos(light_angle)])
    v0, u0 = grid(size)
    a = np.deg2rad(angle)
    dv, du = v0 - shift[0], u0 - shift[1]
    v = ((np.cos(a) * dv + np.sin(a) * du) / scale).astype(np.float32)
    u = ((-np.sin(a) * dv + np.cos(a) * du) / scale).astype(np.float32)
    grain = _grain(rng, size, 0.7)
    fixed = sample(grain[..., None], (v + 0.5) * size - 0.5, (u + 0.5) * size - 0.5)[..., 0]
    canvas = Canvas(v, u, 1 / (size * scale), light, fixed)
    layout = thing.layout(rng)
    texture = 1 + 0.03 * _grain(rng, size, 1.5)[..., None]
    floor = (np.asarray(thing.background, np.float32) * texture).astype(np.float32)
    drawing = thing.draw(canvas, layout)
    image = _over(drawing, floor)
    donor = LINT.draw(rng, size) if kind == "foreign" else None

    def variant(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        changed = thing.change(kind, layout, rng)
        names = [name for name in changed if changed[name] != layout[name]]
        redrawn = thing.draw(canvas, changed)
        region = np.zeros((size, size), bool)
        for name in names:  # where the part was and where it is now
            for d in (drawing, redrawn):
                region |= d.parts.get(name, region)
        region = ndimage.binary_dilation(region, iterations=max(1, size // 128))
        return region, _over(redrawn, floor)

    return Scene(image, drawing.alpha > 0.5, under=floor, donor=donor, variant=variant,
                 outline=True)  # fmt: skip


def _over(drawing: Drawing, floor: np.ndarray) -> np.ndarray:
    a = drawing.alpha[..., None]
    return np.clip(floor * (1 - a) + drawing.rgb, 0, 1).astype(np.float32)


def _grain(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-std noise blurred ``sigma`` pixels (at 256 px): a piece of matte material."""
    noise = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), sigma * size / 256)
    return (noise / (noise.std() + 1e-9)).astype(np.float32)
