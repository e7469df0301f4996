"""Inpainting masks, stitched reconstructions and MSGMS anomaly maps (RIAD, Meta-RIAD).

A pixel is always judged by a reconstruction made without seeing it: the image is covered
by n disjoint masks, each masked copy is inpainted, and every pixel is taken from the copy
in which it was hidden.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.losses import GMS_C, msgms_maps
from fsad_methods.common.maps import upsample_and_smooth


def resize(images: Tensor, size: int) -> Tensor:
    """Square resize for the network's internal resolution (antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < min(images.shape[-2:])
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )


def grid_masks(height: int, width: int, cell: int, n: int, generator: torch.Generator) -> Tensor:
    """(n,H,W) bool: square cells of side ``cell`` dealt at random into n disjoint masks.

    Every pixel is in exactly one mask; cell=1 gives random pixel partitions. The cells are
    dealt round-robin after a shuffle, so the masks differ in size by at most one cell.
    """
    rows, cols = -(-height // cell), -(-width // cell)
    if rows * cols < n:
        raise ValueError(f"{rows * cols} cells of side {cell} cannot fill {n} masks")
    owner = torch.randperm(rows * cols, generator=generator) % n
    cell_y = torch.arange(height) // cell
    cell_x = torch.arange(width) // cell
    owner_map = owner[cell_y[:, None] * cols + cell_x[None, :]]
    return owner_map[None] == torch.arange(n)[:, None, None]


def random_pixel_masks(
    count: int, height: int, width: int, density: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """(count,H,W) bool: one Bernoulli pixel mask per image, its density ~ U(density)."""
    low, high = density
    rates = low + (high - low) * torch.rand(count, 1, 1, generator=generator)
    return torch.rand(count, height, width, generator=generator) < rates


def stitched_reconstruction(model: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    """Inpaint each of the (n,H,W) masks and keep every pixel from the pass that hid it.

    All n masked copies go through the network as one batch; in eval mode each image is
    processed independently, so the result does not depend on the batch.
    """
    n, b = len(masks), len(images)
    keep = masks[:, None, None].to(images.dtype)  # (n,1,1,H,W)
    masked = (images[None] * (1 - keep)).reshape(n * b, *images.shape[1:])
    recon = model(masked).reshape(n, b, *images.shape[1:])
    return (recon * keep).sum(dim=0)


def msgms_anomaly_map(image: Tensor, recon: Tensor, scales: int = 4, c: float = GMS_C) -> Tensor:
    """(B,H,W) ``1 - GMS`` averaged over the pyramid, each level upsampled to full size."""
    size = image.shape[-2:]
    levels = [
        F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        for m in msgms_maps(image, recon, scales, c)
    ]
    return torch.stack(levels).mean(dim=0)[:, 0]


@torch.no_grad()
def score_by_inpainting(
    model: nn.Module,
    images: Tensor,
    mask_sets: Sequence[Tensor],
    input_size: int,
    scales: int = 4,
    sigma: float = 4.0,
) -> tuple[Tensor, Tensor]:
    """(B,3,H,W) -> scores (B,), maps (B,H,W) at the input size.

    One MSGMS map per (n,h,w) mask set, averaged; then Gaussian smoothing at the input size.
    The image score is the smoothed map's maximum.
    """
    model.eval()
    small = resize(images, input_size)
    maps = torch.stack(
        [
            msgms_anomaly_map(
                small, stitched_reconstruction(model, small, m.to(small.device)), scales
            )
            for m in mask_sets
        ]
    ).mean(dim=0)
    maps = upsample_and_smooth(maps, tuple(images.shape[-2:]), sigma)
    return maps.flatten(1).amax(dim=1), maps
