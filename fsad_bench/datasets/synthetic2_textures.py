"""Version 2's surface materials: every image is a new piece of the material.

Photo materials are windows onto scikit-image's CC0 photos, turned as far as the real
material may lie (any angle for grains and fibres, a few degrees for bricks); leather is
grown afresh for every image (Worley cells), and the woven fabric has its own thread
positions, widths and shades in every image. So a test image's patches are new pixels,
as a new sheet of material would be, not a crop of what the support images showed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fsad_bench.datasets.synthetic2_defects import RGB, Scene
from fsad_bench.datasets.synthetic_common import grid, photo_texture


def _full(size: int) -> np.ndarray:
    return np.ones((size, size), bool)


def _tint(gray: np.ndarray, dark: RGB, light: RGB) -> np.ndarray:
    lo, hi = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return (lo + gray[..., None] * (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class Foreign:
    """A foreign material: a bundled photo in its own colours."""

    photo: str
    dark: RGB
    light: RGB

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return photo_texture(self.photo, rng, size, self.dark, self.light, 180.0)


LINT = Foreign("grass", (0.1, 0.1, 0.1), (0.95, 0.93, 0.88))  # fibres, dust, lint
STRAW = Foreign("grass", (0.14, 0.1, 0.03), (0.9, 0.78, 0.45))
GRIT = Foreign("gravel", (0.1, 0.1, 0.11), (0.75, 0.76, 0.78))


@dataclass(frozen=True)
class PhotoMaterial:
    """A window onto a bundled photo; ``donor`` is the foreign material pasted into it."""

    photo: str
    dark: RGB
    light: RGB
    turn: float  # the material's orientation varies up to this many degrees either way
    donor: Foreign

    def scene(self, rng: np.random.Generator, size: int, kind: str) -> Scene:
        image = photo_texture(self.photo, rng, size, self.dark, self.light, self.turn)
        donor = self.donor.draw(rng, size) if kind == "foreign" else None
        return Scene(image, _full(size), under=_recess(image), donor=donor)


def _recess(image: np.ndarray) -> np.ndarray:
    """What a hole shows: the material's broken inside, in shadow."""
    return (0.45 * image + 0.03).astype(np.float32)


@dataclass(frozen=True)
class Leather:
    """Grain grown for each image: Worley cells with grooves between them."""

    dark: RGB
    light: RGB
    cells: int = 420  # cells per image at any size (about 12 px across at 256 px)
    donor: Foreign = LINT

    def gray(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # one seed per cell of a jittered grid: cells of even size, as grain is
        side = round(np.sqrt(self.cells) * rng.uniform(0.93, 1.07))
        corners = np.stack(np.mgrid[-2 : side + 2, -2 : side + 2], -1).reshape(-1, 2)
        points = (corners + rng.uniform(0.1, 0.9, corners.shape)) / side
        v, u = grid(size)
        query = np.stack([v.ravel() + 0.5, u.ravel() + 0.5], axis=1)
        dist, _ = cKDTree(points).query(query, k=2)
        f1, f2 = (d.reshape(size, size).astype(np.float32) for d in dist.T)
        groove = np.exp(-(((f2 - f1) * 256 / 1.3) ** 2))  # 1.3 px wide at 256 px
        dome = np.clip(1 - f1 / (0.5 * (f1 + f2) + 1e-6), 0, 1)
        fine = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 0.6 * size / 256)
        gray = 0.42 + 0.3 * dome - 0.3 * groove + 0.05 * fine
        return np.clip(gray, 0, 1).astype(np.float32)

    def scene(self, rng: np.random.Generator, size: int, kind: str) -> Scene:
        image = _tint(self.gray(rng, size), self.dark, self.light)
        donor = self.donor.draw(rng, size) if kind == "foreign" else None
        return Scene(image, _full(size), under=_recess(image), donor=donor)


@dataclass(frozen=True)
class Weave:
    """Plain-woven fabric: warp (vertical) and weft (horizontal) threads over and under.

    Each image has its own phase, slant (a few degrees), thread spacing, widths and
    shades. A broken thread shows the cloth's dark backing; a wrong-colour thread is one
    thread of another dye lot.
    """

    warp: RGB
    weft: RGB
    pitch: float = 0.045  # thread spacing, in image sides (11.5 px at 256 px)

    def scene(self, rng: np.random.Generator, size: int, kind: str) -> Scene:
        threads = _Threads.draw(rng, self.pitch)
        image = threads.render(size, self.warp, self.weft)

        def variant(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            changed = threads.broken(rng) if kind == "missing" else threads.recoloured(rng)
            altered = changed.render(size, self.warp, self.weft)
            return np.abs(altered - image).max(axis=-1) > 0, altered

        return Scene(image, _full(size), variant=variant)


# a thread of another dye lot: a factor on the yarn's colour
_OTHER_YARNS = np.array([(1.3, 0.75, 0.6), (0.75, 1.2, 0.8), (1.2, 1.15, 0.6)], np.float32)
_N = 40  # threads drawn per direction: enough to cover a turned image at the finest pitch


@dataclass(frozen=True)
class _Threads:
    pitch: float
    angle: float
    phase: np.ndarray  # (2,) in pitches
    offset: np.ndarray  # (2, _N) per-thread position jitter, in pitches
    width: np.ndarray  # (2, _N) per-thread width, in pitches
    shade: np.ndarray  # (2, _N, 3) per-thread colour factor
    fibres: int  # seed of the yarn's fibre texture
    gone: tuple[int, int, int, int] | None = None  # (axis, thread, first, last crossing)

    @classmethod
    def draw(cls, rng: np.random.Generator, pitch: float) -> _Threads:
        return cls(
            pitch=pitch * rng.uniform(0.95, 1.05),
            angle=rng.uniform(-3, 3),
            phase=rng.uniform(0, 2, 2),
            offset=rng.normal(0, 0.04, (2, _N)),
            width=np.clip(rng.normal(0.8, 0.05, (2, _N)), 0.65, 0.92),
            shade=(rng.normal(1, 0.025, (2, _N, 1)) * rng.normal(1, 0.01, (2, _N, 3))),
            fibres=int(rng.integers(2**31)),
        )

    def broken(self, rng: np.random.Generator) -> _Threads:
        axis, thread = int(rng.integers(2)), int(rng.integers(_N // 2 - 6, _N // 2 + 6))
        first = int(rng.integers(_N // 2 - 8, _N // 2 + 6))
        return _replace(self, gone=(axis, thread, first, first + int(rng.integers(1, 4))))

    def recoloured(self, rng: np.random.Generator) -> _Threads:
        axis, thread = int(rng.integers(2)), int(rng.integers(_N // 2 - 6, _N // 2 + 6))
        shade = self.shade.copy()
        shade[axis, thread] = _OTHER_YARNS[int(rng.integers(len(_OTHER_YARNS)))]
        return _replace(self, shade=shade)

    def render(self, size: int, warp: RGB, weft: RGB) -> np.ndarray:
        v, u = grid(size)
        a = np.deg2rad(self.angle)
        along = (np.cos(a) * u + np.sin(a) * v) / self.pitch + self.phase[0] + _N / 2
        across = (np.cos(a) * v - np.sin(a) * u) / self.pitch + self.phase[1] + _N / 2
        i = np.clip(np.floor(along + 0.5).astype(int), 0, _N - 1)  # warp thread (column)
        j = np.clip(np.floor(across + 0.5).astype(int), 0, _N - 1)  # weft thread (row)
        du = along - i - self.offset[0, i]  # across the warp thread, in pitches
        dv = across - j - self.offset[1, j]
        in_warp = np.abs(du) < self.width[0, i] / 2
        in_weft = np.abs(dv) < self.width[1, j] / 2
        if self.gone is not None:
            axis, thread, first, last = self.gone
            if axis == 0:
                in_warp &= ~((i == thread) & (j >= first) & (j <= last))
            else:
                in_weft &= ~((j == thread) & (i >= first) & (i <= last))
        warp_on_top = (i + j) % 2 == 0
        show_warp = in_warp & (warp_on_top | ~in_weft)
        show_weft = in_weft & ~show_warp
        # a thread is round: brightest along its middle, darker where it dives under
        warp_light = np.cos(np.pi * du / self.width[0, i]) * (0.7 + 0.3 * np.cos(np.pi * dv))
        weft_light = np.cos(np.pi * dv / self.width[1, j]) * (0.7 + 0.3 * np.cos(np.pi * du))
        warp_light = warp_light * self._fibres(size, vertical=True)
        weft_light = weft_light * self._fibres(size, vertical=False)
        warp_rgb = np.asarray(warp, np.float32) * self.shade[0, i]
        weft_rgb = np.asarray(weft, np.float32) * self.shade[1, j]
        image = np.full((size, size, 3), 0.06, np.float32)  # the gaps show the dark backing
        warp_rgb = warp_rgb * (0.45 + 0.55 * warp_light)[..., None]
        weft_rgb = weft_rgb * (0.45 + 0.55 * weft_light)[..., None]
        image = np.where(show_warp[..., None], warp_rgb, image)
        image = np.where(show_weft[..., None], weft_rgb, image)
        return np.clip(image, 0, 1).astype(np.float32)

    def _fibres(self, size: int, vertical: bool) -> np.ndarray:
        """Yarn texture: noise streaked along the thread (1 +- about 0.2)."""
        noise = np.random.default_rng([self.fibres, int(vertical)]).normal(0, 1, (size, size))
        long, short = 3.0 * size / 256, 0.5 * size / 256
        streaks = ndimage.gaussian_filter(noise, (long, short) if vertical else (short, long))
        return (1 + 0.2 * streaks / (streaks.std() + 1e-6)).astype(np.float32)


def _replace(threads: _Threads, **changes: object) -> _Threads:
    from dataclasses import replace

    return replace(threads, **changes)
