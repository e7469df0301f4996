"""TDG's fixed sets of image transformations, the labels its discriminators learn.

Each transformation is a horizontal flip, then a translation by 15 % of the side (reflected
borders), then a number of quarter turns, then an optional conversion to greyscale,
applied in that order as the official code does. A discriminator sees every training patch
under every member of the set and is trained to name the member; at test time an image
whose patches are not recognised under the transformation actually applied is anomalous.

Sets (``TRANSFORM_SETS``):
- ``rotations``: the four quarter turns (the official code's MVTec "just rotate" variant).
- ``rgb54``: the official code's 54-member set for colour images (MVTec, Paris, CIFAR-10):
  all nine translations (each axis in {-1, 0, +1}) with and without a flip; the four with
  non-negative shifts also at every quarter turn; plus greyscale copies of the eight
  flip x rotation members and of the four single-axis shifts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SHIFT_RATIO = 0.15  # translation step as a fraction of the side (official code)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as kornia.color.rgb_to_grayscale


@dataclass(frozen=True)
class Transform:
    """One member of a set. ``tx``/``ty`` in {-1, 0, 1} move the content right/down (+1) or
    left/up (-1) by 15 % of the side; ``rot`` counts counter-clockwise quarter turns."""

    grey: bool = False
    flip: bool = False
    tx: int = 0
    ty: int = 0
    rot: int = 0

    def apply(self, x: Tensor) -> Tensor:
        """(N,C,S,S) -> (N,C,S,S); images must be square (quarter turns keep the shape)."""
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"TDG transforms need square images, got {tuple(x.shape[-2:])}")
        if self.flip:
            x = x.flip(-1)
        x = _shift(x, self.tx, self.ty)
        if self.rot % 4:
            x = torch.rot90(x, self.rot, dims=(-2, -1))
        if self.grey:
            weights = x.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
            x = (x * weights).sum(1, keepdim=True).expand_as(x)
        return x

    def invert_map(self, m: Tensor) -> Tensor:
        """Bring a map (..., S, S) computed on the transformed image back to the original
        frame. Exact for flips and turns; a translation's reflected border cannot be undone
        and is reflected again."""
        if self.rot % 4:
            m = torch.rot90(m, -self.rot, dims=(-2, -1))
        m = _shift(m, -self.tx, -self.ty)
        if self.flip:
            m = m.flip(-1)
        return m


def _shift(x: Tensor, tx: int, ty: int) -> Tensor:
    """Integer translation by ``SHIFT_RATIO`` of the side per unit, borders reflected."""
    if not (tx or ty):
        return x
    step = int(x.shape[-1] * SHIFT_RATIO)
    dx, dy = tx * step, ty * step
    if not (dx or dy):
        return x
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="reflect")
    left, top = max(-dx, 0), max(-dy, 0)
    return padded[..., top : top + h, left : left + w].reshape(x.shape)


def _rotations() -> tuple[Transform, ...]:
    return tuple(Transform(rot=k) for k in range(4))


def _rgb54() -> tuple[Transform, ...]:
    moves = [-1, 0, 1]
    members = []
    for flip, tx, ty in itertools.product((False, True), moves, moves):
        turns = range(4) if tx >= 0 and ty >= 0 else range(1)
        members += [Transform(flip=flip, tx=tx, ty=ty, rot=k) for k in turns]
    members += [Transform(grey=True, flip=f, rot=k) for f in (False, True) for k in range(4)]
    members += [Transform(grey=True, tx=t) for t in (1, -1)]
    members += [Transform(grey=True, ty=t) for t in (1, -1)]
    return tuple(members)


TRANSFORM_SETS: dict[str, tuple[Transform, ...]] = {"rotations": _rotations(), "rgb54": _rgb54()}


def transform_set(name: str) -> tuple[Transform, ...]:
    if name not in TRANSFORM_SETS:
        raise ValueError(f"unknown TDG transform set {name!r}; use one of {sorted(TRANSFORM_SETS)}")
    return TRANSFORM_SETS[name]


def transform_pairs(
    images: Tensor, transforms: Sequence[Transform], pairs: Tensor
) -> tuple[Tensor, Tensor]:
    """The discriminator's labelled batch: for each row ``(i, t)`` of ``pairs`` (P,2), image
    ``i`` under transformation ``t``, and the label ``t``. Returns ((P,C,S,S), (P,))."""
    out = torch.empty(len(pairs), *images.shape[1:], dtype=images.dtype, device=images.device)
    labels = pairs[:, 1].to(images.device)
    for t in labels.unique().tolist():
        rows = (labels == t).nonzero().flatten()
        out[rows] = transforms[t].apply(images[pairs[rows.cpu(), 0].to(images.device)])
    return out, labels


def all_pairs(count: int, num_transforms: int) -> Tensor:
    """Every (image, transformation) pair, transformation-major: (count * T, 2)."""
    t, i = torch.meshgrid(torch.arange(num_transforms), torch.arange(count), indexing="ij")
    return torch.stack([i.flatten(), t.flatten()], dim=1)
