"""Version 2's acquisition nuisances: what changes between two shots of a good part.

Real inspection images of normal parts differ by more than the part: the exposure and the
lamp's colour drift, the light falls off across the field, the focus and the sensor noise
vary. A method that compares raw pixels sees all of it as anomalous; one that compares
what the surface is should not. Every image, normal or defective, goes through its own
``Camera``, drawn before the defect, so a defective image and its clean twin share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fsad_bench.datasets.synthetic_common import grid


@dataclass(frozen=True)
class Drift:
    """How strongly a category's shots vary (amplitudes; each shot draws within them)."""

    gain: float = 0.12  # exposure: x U(1 - gain, 1 + gain)
    cast: float = 0.02  # colour temperature: per-channel factor N(1, cast)
    offset: float = 0.02  # black level / stray light: + U(-offset, offset)
    shading: float = 0.12  # light fall-off: a linear ramp up to +-shading across the field
    blur: float = 0.6  # defocus: Gaussian sigma U(0, blur) pixels at 256 px
    noise: tuple[float, float] = (0.005, 0.015)  # sensor noise sigma, U(lo, hi)


@dataclass(frozen=True)
class Camera:
    """One shot's exposure, colour, fall-off, focus and noise."""

    gain: np.ndarray  # (3,)
    offset: float
    ramp: np.ndarray  # (2,) slope of the light over (row, column), per image side
    blur: float  # sigma in pixels of this image size
    noise: np.ndarray  # (S, S, 3) sensor noise, drawn once so a defect and its twin share it

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int, drift: Drift) -> Camera:
        gain = rng.uniform(1 - drift.gain, 1 + drift.gain) * rng.normal(1, drift.cast, 3)
        direction = rng.uniform(0, 2 * np.pi)
        ramp = rng.uniform(0, drift.shading) * np.array([np.sin(direction), np.cos(direction)])
        blur = rng.uniform(0, drift.blur) * size / 256
        sigma = rng.uniform(*drift.noise)
        noise = rng.normal(0, sigma, (size, size, 3)).astype(np.float32)
        offset = rng.uniform(-drift.offset, drift.offset)
        return cls(gain.astype(np.float32), float(offset), ramp, float(blur), noise)

    def expose(self, radiance: np.ndarray) -> np.ndarray:
        """The recorded image (float, not yet clipped) of a noise-free ``radiance``."""
        v, u = grid(radiance.shape[0])
        light = 1 + 2 * (self.ramp[0] * v + self.ramp[1] * u)
        image = radiance * light[..., None] * self.gain + self.offset
        if self.blur > 0.3:
            image = ndimage.gaussian_filter(image, sigma=(self.blur, self.blur, 0), mode="nearest")
        return image + self.noise
