"""PatchCore in pure torch (+ faiss for exact nearest neighbours); no harness imports.

Mid-level backbone features are averaged over a 3x3 neighbourhood, concatenated at the
finest resolution, subsampled by greedy k-center coreset selection on a random projection,
and a test patch scores its distance to the nearest memory patch. The subsampler and the
nearest-neighbour search are injected strategies (as in patchcore-inspection), so a variant
is an argument, not a copy of the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.maps import upsample_and_smooth


def _pool_channels(feature: Tensor, width: int) -> Tensor:
    n, c, h, w = feature.shape
    flat = F.adaptive_avg_pool1d(feature.permute(0, 2, 3, 1).reshape(-1, 1, c), width)
    return flat.reshape(n, h, w, width).permute(0, 3, 1, 2)


def aggregate_features(
    features: Sequence[Tensor], embed_dim: int | None = None, count_padding: bool = True
) -> Tensor:
    """3x3 local average per layer, upsampled to the finest layer and concatenated.

    ``count_padding`` (default) divides every 3x3 sum by 9, so the zero padding at the border
    counts, as the official code's zero-padded unfolding and anomalib's ``AvgPool2d(3, 1, 1)``
    do; False averages only the positions inside the map (fsad-bench's PatchCore 1.0), which
    measured 0.03-0.06 image AUROC lower on real photos (methods/patchcore/README.md).

    With ``embed_dim`` each layer is first pooled to ``embed_dim`` channels and the
    concatenation then to ``embed_dim``, as the PatchCore paper does, so every layer has
    the same weight however many channels it has (pooling the raw concatenation would
    weight WideResNet-50's 1024-channel layer 3 twice as much as its layer 2).
    """
    target = features[0].shape[-2:]
    pooled = []
    for feature in features:
        feature = F.avg_pool2d(feature, 3, stride=1, padding=1, count_include_pad=count_padding)
        if feature.shape[-2:] != target:
            feature = F.interpolate(feature, size=target, mode="bilinear", align_corners=False)
        pooled.append(feature)
    if embed_dim is None:
        return torch.cat(pooled, dim=1)
    return _pool_channels(torch.cat([_pool_channels(f, embed_dim) for f in pooled], 1), embed_dim)


# Rows per block of the coreset distance update: a 4 MiB block of differences stays in cache
# instead of a full-bank temporary being allocated, written and read back on every step; a
# K=8 Lite0 bank (8192 x 128 projected) is a single block, so small banks pay no extra calls.
_CORESET_BLOCK_BYTES = 1 << 22


def greedy_coreset(
    bank: Tensor, n_select: int, projection_dim: int | None, generator: torch.Generator
) -> Tensor:
    """Indices of a k-center greedy coreset, chosen on a random Gaussian projection.

    Each step adds the point farthest from the current coreset, so the selection covers the
    bank's support with few points; distances on a 128-d projection keep it cheap. Distances
    are updated block by block (``_DistanceUpdate``) with the same per-row operations as
    a whole-bank update, so the selection does not depend on the block size.
    """
    n_select = max(1, min(n_select, len(bank)))
    if n_select == len(bank):
        return torch.arange(len(bank), device=bank.device)
    points = bank
    if projection_dim is not None and projection_dim < bank.shape[1]:
        weight = torch.randn(bank.shape[1], projection_dim, generator=generator) / math.sqrt(
            projection_dim
        )
        points = bank @ weight.to(bank)
    points = points.contiguous()
    start = int(torch.randint(len(points), (1,), generator=generator))
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = start
    min_dist = torch.full((len(points),), math.inf, dtype=points.dtype, device=points.device)
    update = _DistanceUpdate(points)
    update(points[start], min_dist)
    for i in range(1, n_select):
        index = int(torch.argmax(min_dist))
        selected[i] = index
        if i + 1 < n_select:  # the last pick's distances are never read
            update(points[index], min_dist)
    return selected.to(bank.device)


class _DistanceUpdate:
    """``min_dist = min(min_dist, ||points - center||)`` in cache-sized blocks of rows.

    Each row's distance is the same ``vector_norm`` of the same difference row as in one
    whole-bank call (the reduction runs along the row), so the values are bit-identical; only
    the memory traffic drops, as the preallocated block of differences stays in cache.
    """

    def __init__(self, points: Tensor) -> None:
        n, dim = points.shape
        rows = max(1, min(n, _CORESET_BLOCK_BYTES // max(1, dim * points.element_size())))
        self.points = points
        self.blocks = [(a, min(a + rows, n)) for a in range(0, n, rows)]
        self.diff = points.new_empty(rows, dim)
        self.dist = points.new_empty(rows)

    def __call__(self, center: Tensor, min_dist: Tensor) -> None:
        for a, b in self.blocks:
            diff, dist = self.diff[: b - a], self.dist[: b - a]
            torch.sub(self.points[a:b], center, out=diff)
            torch.linalg.vector_norm(diff, dim=1, out=dist)
            torch.minimum(min_dist[a:b], dist, out=min_dist[a:b])


class Sampler(Protocol):
    def sample(self, bank: Tensor, generator: torch.Generator) -> Tensor:
        """The rows of ``bank`` (N, C) to keep in the memory bank."""
        ...


class NearestNeighbours(Protocol):
    def fit(self, bank: Tensor) -> None: ...

    def distances(self, queries: Tensor, k: int) -> Tensor:
        """Euclidean distances to the k nearest memory patches, shape (N, k)."""
        ...


class GreedyCoresetSampler:
    """The paper's k-center greedy coreset, chosen on a random projection (``greedy_coreset``)."""

    def __init__(self, ratio: float = 0.1, projection_dim: int | None = 128) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        self.ratio, self.projection_dim = ratio, projection_dim

    def sample(self, bank: Tensor, generator: torch.Generator) -> Tensor:
        n_select = math.ceil(self.ratio * len(bank))
        return bank[greedy_coreset(bank, n_select, self.projection_dim, generator)]


class FaissNearestNeighbours:
    """Exact L2 search (IndexFlatL2): results do not depend on index training or threads."""

    def __init__(self) -> None:
        self.index: faiss.Index | None = None

    def fit(self, bank: Tensor) -> None:
        data = np.ascontiguousarray(bank.detach().cpu().numpy(), dtype=np.float32)
        self.index = faiss.IndexFlatL2(data.shape[1])
        self.index.add(data)

    def distances(self, queries: Tensor, k: int) -> Tensor:
        """Euclidean distances to the k nearest memory patches, shape (N, k)."""
        if self.index is None:
            raise RuntimeError("nearest-neighbour index used before fit")
        data = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        squared, _ = self.index.search(data, k)
        return torch.from_numpy(np.sqrt(np.maximum(squared, 0.0))).to(queries.device)


class PatchCoreModel:
    """Memory bank of normal patch features; ``extractor`` maps images to feature maps."""

    def __init__(
        self,
        extractor: nn.Module,
        sampler: Sampler | None = None,
        search: NearestNeighbours | None = None,
        num_neighbours: int = 1,
        sigma: float = 4.0,
        embed_dim: int | None = None,
        count_padding: bool = True,
    ) -> None:
        self.extractor = extractor
        self.sampler = sampler or GreedyCoresetSampler()
        self.search = search or FaissNearestNeighbours()
        self.num_neighbours = num_neighbours
        self.sigma = sigma
        self.embed_dim = embed_dim
        self.count_padding = count_padding
        self.bank_size = 0

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """(N,3,H,W) -> (N,C,h,w) patch embeddings."""
        return aggregate_features(self.extractor(images), self.embed_dim, self.count_padding)

    @torch.no_grad()
    def fit(self, images: Tensor, generator: torch.Generator) -> None:
        embedding = self.embed(images)
        bank = self.sampler.sample(
            embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]), generator
        )
        self.search.fit(bank)
        self.bank_size = len(bank)

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Image scores (max patch distance) and smoothed maps at the input resolution."""
        embedding = self.embed(images)
        n, c, h, w = embedding.shape
        queries = embedding.permute(0, 2, 3, 1).reshape(-1, c)
        k = min(self.num_neighbours, self.bank_size)
        patch = self.search.distances(queries, k).mean(dim=1).reshape(n, h, w)
        scores = patch.flatten(1).max(dim=1).values
        return scores, upsample_and_smooth(patch, tuple(images.shape[-2:]), self.sigma)
