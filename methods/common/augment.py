"""Image augmentations shared by method cores (pure torch + kornia, no harness imports).

Two families:

- ``regad_views``: the fixed support augmentation of RegAD's evaluation code (Huang et al.,
  ECCV 2022), which RegAD also applied to the baselines it compares with ("TDG+",
  "DiffNet+"): every support image plus 8 small rotations, 8 translations, a horizontal
  flip, a greyscale copy and the three quarter turns, 22 views in all, borders reflected.
- ``RandomRotation`` and ``ColorJitter``: per-image random transforms drawn from a caller's
  ``torch.Generator`` (so an episode seed reaches them), with torchvision's semantics for the
  jitter factors; DifferNet trains and scores on such transformed copies.

Images are float (N, 3, H, W) in [0, 1] throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

REGAD_ROTATIONS = (-4, -3, -2, -1, 1, 2, 3, 4)  # multiples of pi/16: up to +-45 degrees
# translations in normalised coordinates ([-1, 1] spans the side): 10% and 5% of the side
REGAD_SHIFTS = (
    (0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2),
    (0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1),
)  # fmt: skip
REGAD_VIEWS = 1 + len(REGAD_ROTATIONS) + len(REGAD_SHIFTS) + 1 + 1 + 3


def _affine(images: Tensor, theta: Tensor) -> Tensor:
    """Sample ``images`` at ``theta @ (x, y, 1)`` in normalised coordinates, reflected borders
    (RegAD's ``rot_img``/``translation_img``: ``affine_grid`` + ``grid_sample``)."""
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def _rotation_theta(angle: float, like: Tensor) -> Tensor:
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=like.dtype, device=like.device)


def _shift_theta(dx: float, dy: float, like: Tensor) -> Tensor:
    return torch.tensor([[[1.0, 0.0, dx], [0.0, 1.0, dy]]], dtype=like.dtype, device=like.device)


def grey(images: Tensor) -> Tensor:
    """Luma (ITU-R 601 weights, kornia) repeated on three channels."""
    return kornia.color.rgb_to_grayscale(images).expand(-1, 3, -1, -1).contiguous()


def regad_views(images: Tensor) -> Tensor:
    """(N,3,H,W) -> (22 N,3,H,W): RegAD's fixed augmented support set, grouped by view.

    View v of image i is at index ``v * N + i``; view 0 is the image itself. Quarter turns
    use kornia's rotation about the centre (reflected borders), as RegAD does, so a
    non-square image keeps its shape.
    """
    views = [images]
    views += [_affine(images, _rotation_theta(k * math.pi / 16, images)) for k in REGAD_ROTATIONS]
    views += [_affine(images, _shift_theta(dx, dy, images)) for dx, dy in REGAD_SHIFTS]
    views.append(kornia.geometry.transform.hflip(images))
    views.append(grey(images))
    for quarter in (1, 2, 3):
        angle = torch.full((len(images),), 90.0 * quarter, dtype=images.dtype, device=images.device)
        views.append(kornia.geometry.transform.rotate(images, angle, padding_mode="reflection"))
    return torch.cat(views)


def rotate(images: Tensor, degrees: Tensor, padding: str = "zeros") -> Tensor:
    """Rotate each image about its centre by its own angle (degrees, counter-clockwise).

    ``padding="zeros"`` fills the corners with black, as torchvision's ``RandomRotation``
    (DifferNet) does; ``"reflection"`` mirrors the image instead.
    """
    angle = degrees.to(device=images.device, dtype=images.dtype).expand(len(images))
    return kornia.geometry.transform.rotate(images, angle.contiguous(), padding_mode=padding)


@dataclass(frozen=True)
class RandomRotation:
    """A uniform angle in [-degrees, degrees] per image (torchvision ``RandomRotation``)."""

    degrees: float = 180.0
    padding: str = "zeros"

    def angles(self, n: int, generator: torch.Generator) -> Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * self.degrees

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.degrees == 0:
            return images
        return rotate(images, self.angles(len(images), generator), self.padding)


def _factors(strength: float, n: int, generator: torch.Generator) -> Tensor:
    """torchvision's jitter factor: uniform in [max(0, 1 - s), 1 + s]."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return low + (high - low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class ColorJitter:
    """Brightness, contrast and saturation jitter with torchvision's ``ColorJitter`` factors.

    Brightness multiplies, contrast blends with the grey mean, saturation blends with the
    grey image (kornia's torchvision-compatible ``adjust_*`` functions), each clipped to
    [0, 1]. torchvision applies the three in a random order; here the order is fixed
    (brightness, contrast, saturation). A strength of 0 leaves that property alone.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ColorJitter {name}={getattr(self, name)} must be >= 0")

    @property
    def active(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n = len(images)
        if self.brightness:
            factor = _factors(self.brightness, n, generator).to(images)
            images = kornia.enhance.adjust_brightness_accumulative(images, factor)
        if self.contrast:
            factor = _factors(self.contrast, n, generator).to(images)
            images = kornia.enhance.adjust_contrast_with_mean_subtraction(images, factor)
        if self.saturation:
            factor = _factors(self.saturation, n, generator).to(images)
            images = kornia.enhance.adjust_saturation_with_gray_subtraction(images, factor)
        return images
