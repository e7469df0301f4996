"""Signed distances of simple shapes, for drawing objects exactly at any pose and size.

Coordinates are in units of the image side (``v`` down, ``u`` right, 0 at the centre), so
an object is drawn the same at 64 px and at 256 px; negative distance is inside.
"""

from __future__ import annotations

import numpy as np

Field = np.ndarray


def circle(v: Field, u: Field, centre: tuple[float, float], radius: float) -> Field:
    return np.hypot(v - centre[0], u - centre[1]) - radius


def box(
    v: Field, u: Field, centre: tuple[float, float], half: tuple[float, float], angle: float = 0.0
) -> Field:
    """A rectangle of half-sides ``half`` (rows, columns), turned by ``angle`` degrees."""
    dv, du = _turn(v - centre[0], u - centre[1], -angle)
    qv, qu = np.abs(dv) - half[0], np.abs(du) - half[1]
    outside = np.hypot(np.maximum(qv, 0), np.maximum(qu, 0))
    return outside + np.minimum(np.maximum(qv, qu), 0)


def polygon(
    v: Field, u: Field, centre: tuple[float, float], apothem: float, sides: int, angle: float
) -> Field:
    """A regular polygon (approximate distance outside the corners; exact inside)."""
    dv, du = v - centre[0], u - centre[1]
    edges = [
        dv * np.sin(t) + du * np.cos(t) - apothem
        for t in np.deg2rad(angle) + 2 * np.pi * np.arange(sides) / sides
    ]
    return np.max(edges, axis=0)


def segment(
    v: Field, u: Field, start: tuple[float, float], end: tuple[float, float], radius: float
) -> Field:
    """A capsule: the points within ``radius`` of the segment from ``start`` to ``end``."""
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    d = b - a
    t = np.clip(((v - a[0]) * d[0] + (u - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0, 1)
    return np.hypot(v - a[0] - t * d[0], u - a[1] - t * d[1]) - radius


def cover(distance: Field, size: int) -> Field:
    """Antialiased coverage in [0, 1]: a one-pixel ramp across the outline."""
    return np.clip(0.5 - distance * size, 0, 1).astype(np.float32)


def _turn(v: Field, u: Field, angle: float) -> tuple[Field, Field]:
    a = np.deg2rad(angle)
    c, s = np.cos(a), np.sin(a)
    return c * v - s * u, s * v + c * u
