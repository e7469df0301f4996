"""CutPaste's augmentations (Li et al., CVPR 2021): the proxy task's "anomalous" classes.

- ``cut_paste``: a rectangle of 2-15 % of the image area, aspect ratio in (0.3, 1) or
  (1, 3.3), is cut at a random place, colour-jittered and pasted at another random place.
- ``cut_paste_scar``: a thin rectangle (2-16 px wide, 10-25 px long at 256 px), jittered,
  rotated by up to 45 degrees, pasted at a random place.
- ``base_augment``: the augmentation every training image gets first, normal class
  included (the paper's random translation and colour jitter).

All draws come from a caller's ``torch.Generator``. Images are float (3, H, W) or
(N, 3, H, W) in [0, 1]. Pixel sizes are given at 256 px and scaled with ``scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
from torch import Tensor

from fsad_methods.common.augment import ColorJitter

REFERENCE_SIDE = 256  # the paper's image side: scar sizes are given at this resolution


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


@dataclass(frozen=True)
class Jitter:
    """torchvision-style ColorJitter(b, c, s, h) with one strength for all four, the patch
    jitter of CutPaste's code (0.1). Hue shifts by a uniform fraction of the colour circle
    in [-strength, strength] (torchvision's hue_factor)."""

    strength: float = 0.1

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.strength == 0:
            return images
        s = self.strength
        images = ColorJitter(s, s, s)(images, generator)
        turns = (torch.rand(len(images), generator=generator) * 2 - 1) * min(s, 0.5)
        angle = (turns * 2 * math.pi).to(images)
        return kornia.enhance.adjust_hue(images, angle).clamp(0, 1)


@dataclass(frozen=True)
class Box:
    """A rectangle: top-left corner (``top``, ``left``) and size (``height``, ``width``)."""

    top: int
    left: int
    height: int
    width: int

    def of(self, image: Tensor) -> Tensor:
        return image[..., self.top : self.top + self.height, self.left : self.left + self.width]


def _place(height: int, width: int, side_h: int, side_w: int, gen: torch.Generator) -> Box:
    return Box(_randint(0, side_h - height, gen), _randint(0, side_w - width, gen), height, width)


@dataclass(frozen=True)
class CutPasteAugment:
    """Settings of both augmentations; ``scale`` = image side / 256 for the scar sizes."""

    area_ratio: tuple[float, float] = (0.02, 0.15)
    aspect_ratio: float = 0.3  # aspect drawn from (r, 1) or (1, 1 / r), each half the time
    scar_width: tuple[int, int] = (2, 16)
    scar_length: tuple[int, int] = (10, 25)
    scar_rotation: float = 45.0
    jitter: Jitter = Jitter(0.1)
    scale: float = 1.0

    def patch_size(self, height: int, width: int, gen: torch.Generator) -> tuple[int, int]:
        area = _uniform(*self.area_ratio, gen) * height * width
        if float(torch.rand((), generator=gen)) < 0.5:
            aspect = _uniform(self.aspect_ratio, 1.0, gen)
        else:
            aspect = _uniform(1.0, 1.0 / self.aspect_ratio, gen)
        w = int(round(math.sqrt(area * aspect)))
        h = int(round(math.sqrt(area / aspect)))
        return min(max(h, 1), height - 1), min(max(w, 1), width - 1)

    def cut_paste(self, image: Tensor, gen: torch.Generator) -> tuple[Tensor, Box, Box]:
        """(3,H,W) -> the augmented copy, the box it was cut from and the box pasted to."""
        _, height, width = image.shape
        h, w = self.patch_size(height, width, gen)
        source = _place(h, w, height, width, gen)
        target = _place(h, w, height, width, gen)
        patch = self.jitter(source.of(image)[None], gen)[0]
        out = image.clone()
        target.of(out).copy_(patch)
        return out, source, target

    def scar_size(self, gen: torch.Generator) -> tuple[int, int]:
        """(length, width) in pixels at this resolution, at least 1."""
        width = _randint(*self.scar_width, gen)
        length = _randint(*self.scar_length, gen)
        return max(1, round(length * self.scale)), max(1, round(width * self.scale))

    def cut_paste_scar(self, image: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(3,H,W) -> the augmented copy and the (H,W) bool mask of the pasted pixels."""
        _, height, width = image.shape
        length, thickness = self.scar_size(gen)
        length, thickness = min(length, height - 1), min(thickness, width - 1)
        source = _place(length, thickness, height, width, gen)
        patch = self.jitter(source.of(image)[None], gen)[0]
        # rotate on a canvas large enough for any angle, with a mask of the patch's pixels
        side = min(math.ceil(math.hypot(length, thickness)), height, width)
        canvas = torch.zeros(4, side, side, dtype=image.dtype, device=image.device)
        top, left = (side - length) // 2, (side - thickness) // 2
        canvas[:3, top : top + length, left : left + thickness] = patch
        canvas[3, top : top + length, left : left + thickness] = 1
        angle = torch.full((1,), _uniform(-self.scar_rotation, self.scar_rotation, gen))
        turned = kornia.geometry.transform.rotate(canvas[None], angle.to(image))[0]
        inside = turned[3] > 0.5
        target = _place(side, side, height, width, gen)
        out = image.clone()
        region = target.of(out)
        region[:, inside] = (turned[:3, inside] / turned[3, inside]).clamp(0, 1)
        mask = torch.zeros(height, width, dtype=torch.bool, device=image.device)
        target.of(mask)[inside] = True
        return out, mask


def base_augment(images: Tensor, translate: float, jitter: Jitter, gen: torch.Generator) -> Tensor:
    """(N,3,H,W): random translation by up to ``translate`` of the side (reflected border),
    then colour jitter of the whole image; what every proxy-task sample gets first."""
    if translate > 0:
        n, _, h, w = images.shape
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * translate
        shift = shift * torch.tensor([w, h], dtype=shift.dtype)
        images = kornia.geometry.transform.translate(
            images, shift.to(images), padding_mode="reflection"
        )
    return jitter(images, gen)


VARIANTS = {"binary": ("cutpaste",), "scar": ("scar",), "3way": ("cutpaste", "scar")}


def proxy_batch(
    images: Tensor, task: CutPasteAugment, variant: str, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(N,3,H,W) -> inputs (N * classes,3,H,W) and labels: class 0 the images themselves,
    class c the images under the c-th augmentation of ``variant`` (grouped by class)."""
    batches, labels = [images], [torch.zeros(len(images), dtype=torch.long)]
    for label, kind in enumerate(VARIANTS[variant], start=1):
        if kind == "cutpaste":
            out = [task.cut_paste(image, gen)[0] for image in images]
        else:
            out = [task.cut_paste_scar(image, gen)[0] for image in images]
        batches.append(torch.stack(out))
        labels.append(torch.full((len(images),), label, dtype=torch.long))
    return torch.cat(batches), torch.cat(labels).to(images.device)
