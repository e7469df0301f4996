"""Nearest neighbour over raw RGB patches, in pure torch (+ faiss); no harness imports.

The image is box-downsampled (``downsample``), every ``patch_size`` x ``patch_size`` RGB
patch at every position of the support images goes into the memory bank, and a test patch
(every ``stride``-th position) scores its Euclidean distance to the nearest one. No learned
weights, no normalisation: whatever a method gains over this comes from its features, not
from the k-NN scoring around them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsad_methods.common.maps import upsample_and_smooth
from fsad_methods.patchcore.core import FaissNearestNeighbours


def pixel_patches(
    images: Tensor, downsample: int, patch_size: int, stride: int = 1
) -> tuple[Tensor, int, int]:
    """(N,3,H,W) -> ((N*h*w, 3*p*p) patch vectors, h, w): a patch centred on every
    ``stride``-th pixel of the downsampled image, the border mirrored so that the patches
    cover the whole image."""
    n, _, height, width = images.shape
    size = (max(1, height // downsample), max(1, width // downsample))
    small = F.adaptive_avg_pool2d(images.float(), size)
    pad = patch_size // 2
    if pad:
        mode = "reflect" if pad < min(small.shape[-2:]) else "replicate"
        small = F.pad(small, (pad, pad, pad, pad), mode=mode)
    columns = F.unfold(small, patch_size, stride=stride)  # (N, 3*p*p, h*w)
    h = (small.shape[-2] - patch_size) // stride + 1
    w = (small.shape[-1] - patch_size) // stride + 1
    return columns.transpose(1, 2).reshape(n * h * w, -1).contiguous(), h, w


class PixelKNNModel:
    """Memory bank of every raw RGB patch of the support images."""

    def __init__(
        self, downsample: int = 4, patch_size: int = 3, stride: int = 2, num_neighbours: int = 1,
        sigma: float = 4.0,
    ) -> None:  # fmt: skip
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        if not 1 <= stride <= patch_size:
            raise ValueError(f"stride must be 1..patch_size ({patch_size}) to cover every pixel")
        if patch_size < 1 or patch_size % 2 != 1:
            raise ValueError(f"patch_size must be a positive odd number, got {patch_size}")
        if num_neighbours < 1:
            raise ValueError(f"num_neighbours must be >= 1, got {num_neighbours}")
        self.downsample = downsample
        self.patch_size = patch_size
        self.stride = stride
        self.num_neighbours = num_neighbours
        self.sigma = sigma
        self.search = FaissNearestNeighbours()
        self.bank_size = 0

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        bank, _, _ = pixel_patches(images, self.downsample, self.patch_size)
        self.search.fit(bank)
        self.bank_size = len(bank)

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Image scores (max of the map) and maps at the input resolution."""
        queries, h, w = pixel_patches(images, self.downsample, self.patch_size, self.stride)
        k = min(self.num_neighbours, self.bank_size)
        patch = self.search.distances(queries, k).mean(dim=1).reshape(len(images), h, w)
        maps = upsample_and_smooth(patch, tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).amax(dim=1), maps
