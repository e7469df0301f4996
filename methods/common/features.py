"""Feature-map plumbing shared by the method cores (PaDiM, RegAD, SPADE, DifferNet)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def concat_at_finest(features: Sequence[Tensor]) -> Tensor:
    """Coarser maps are repeated (nearest) to the first map's grid and stacked on channels.

    Nearest upsampling is what PaDiM's unfold/fold ``embedding_concat`` computes: every
    fine position gets the coarse feature of the cell it lies in.
    """
    target = features[0].shape[-2:]
    resized = [
        f if f.shape[-2:] == target else F.interpolate(f, size=target, mode="nearest")
        for f in features
    ]
    return torch.cat(resized, dim=1)


def concat_upsampled(features: Sequence[Tensor]) -> Tensor:
    """Coarser maps bilinearly upsampled to the first map's grid and stacked on channels.

    SPADE's pixel descriptor: the feature pyramid read at one position, every level
    interpolated rather than repeated, so neighbouring positions of a coarse cell differ.
    """
    target = features[0].shape[-2:]
    resized = [
        f
        if f.shape[-2:] == target
        else F.interpolate(f, size=target, mode="bilinear", align_corners=False)
        for f in features
    ]
    return torch.cat(resized, dim=1)


def global_average(feature: Tensor) -> Tensor:
    """(N,C,H,W) -> (N,C): the global-average-pooled descriptor of a feature map."""
    return feature.mean(dim=(2, 3))


def multiscale_pooled(
    extractor: Callable[[Tensor], Sequence[Tensor]], images: Tensor, scales: int
) -> Tensor:
    """(N,3,H,W) -> (N, scales*C): the last feature map's global average at sizes H, H/2, ...

    DifferNet's descriptor: the image is shrunk by nearest-neighbour interpolation
    (``F.interpolate``'s default, as DifferNet's code) to 1/2, 1/4, ... of its side, each
    scale goes through the backbone, and the pooled last stages are concatenated, finest
    first. Gradients flow back to ``images`` when it requires them.
    """
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    height, width = images.shape[-2:]
    if min(height, width) >> (scales - 1) < 1:
        raise ValueError(f"images of {height}x{width} px cannot be halved {scales - 1} times")
    pooled = []
    for s in range(scales):
        scaled = images if s == 0 else F.interpolate(images, size=(height >> s, width >> s))
        pooled.append(global_average(extractor(scaled)[-1]))
    return torch.cat(pooled, dim=1)
