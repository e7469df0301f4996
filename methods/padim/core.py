"""PaDiM (Defard et al., ICPR 2020 workshops) in pure torch; no harness imports.

Features of a few backbone stages are concatenated at the finest resolution, a fixed random
subset of d channels is kept, one Gaussian is fitted per position on the support images,
and a test position scores its Mahalanobis distance; the map is upsampled, smoothed, and
its maximum is the image score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fsad_methods.common.features import concat_at_finest
from fsad_methods.common.gaussian import Covariance, PositionGaussians
from fsad_methods.common.maps import upsample_and_smooth


def random_channels(total: int, d: int | None, seed: int) -> Tensor | None:
    """Sorted indices of a fixed random channel subset (None keeps every channel)."""
    if d is None or d >= total:
        return None
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:d].sort().values


class PaDiMModel:
    """``extractor`` maps (N,3,H,W) images to a list of feature maps (finest first)."""

    def __init__(
        self,
        extractor: Callable[[Tensor], Sequence[Tensor]],
        channels: Tensor | None = None,
        covariance: Covariance = "eps",
        eps: float = 0.01,
        sigma: float = 4.0,
    ) -> None:
        self.extractor = extractor
        self.channels = channels
        self.covariance = covariance
        self.eps = eps
        self.sigma = sigma
        self.gaussians: PositionGaussians | None = None

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        embedding = concat_at_finest(self.extractor(images))
        if self.channels is not None:
            embedding = embedding.index_select(1, self.channels.to(embedding.device))
        return embedding

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        self.gaussians = PositionGaussians.fit(self.embed(images), self.covariance, self.eps)

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Image scores (max of the smoothed map) and maps at the input resolution."""
        if self.gaussians is None:
            raise RuntimeError("PaDiMModel.score called before fit")
        distances = self.gaussians.mahalanobis(self.embed(images))
        maps = upsample_and_smooth(distances, tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).max(dim=1).values, maps
