"""SPADE (Cohen & Hoshen, 2020) in pure torch (+ faiss for exact nearest neighbours).

Semantic Pyramid Anomaly Detection, two kNN stages on a frozen pretrained backbone:

1. Image level: each image is described by the global average of its last feature stage; a
   test image scores the mean Euclidean distance to its k nearest support images (k = 50 in
   the paper, at most K here).
2. Pixel level: the pyramid features of those k nearest support images, at every position,
   form a gallery; a test position scores the mean distance to its kappa nearest gallery
   features (kappa = 1), so a region that no similar normal image contains anywhere stands
   out. The grid of distances is upsampled to the image and smoothed (Gaussian, sigma 4).

``pixel_matching="concat"`` describes a position by the pyramid levels concatenated at the
finest grid, as the paper's feature pyramid; ``"per_layer"`` matches every level on its own
and averages the upsampled distance maps, as the widely used public re-implementation
(byungjae89/SPADE-pytorch) does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsad_methods.common.features import concat_upsampled, global_average
from fsad_methods.common.maps import gaussian_smooth

PIXEL_MATCHING = ("concat", "per_layer")


def nearest_distances(queries: Tensor, gallery: Tensor, k: int) -> Tensor:
    """(Q,D) x (G,D) -> (Q,k) Euclidean distances to the k nearest gallery rows, ascending.

    Exact search (faiss ``IndexFlatL2``): no index training, so results do not depend on
    the data's order or on threads beyond float rounding.
    """
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k={k} nearest neighbours requested from a gallery of {len(gallery)}")
    index = faiss.IndexFlatL2(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery.detach().cpu().numpy(), dtype=np.float32))
    data = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
    squared, _ = index.search(data, k)
    return torch.from_numpy(np.sqrt(np.maximum(squared, 0.0))).to(queries.device)


def positions(feature: Tensor) -> Tensor:
    """(N,C,H,W) -> (N*H*W, C): one row per image position."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


class SPADEModel:
    """``extractor`` maps (N,3,H,W) images in [0,1] to feature maps, finest first; the last
    map gives the image descriptor and all earlier ones the pixel pyramid."""

    def __init__(
        self,
        extractor: Callable[[Tensor], Sequence[Tensor]],
        k_images: int = 50,
        k_pixels: int = 1,
        sigma: float = 4.0,
        pixel_matching: str = "concat",
    ) -> None:
        if k_images < 1 or k_pixels < 1:
            raise ValueError(f"k_images={k_images} and k_pixels={k_pixels} must be >= 1")
        if pixel_matching not in PIXEL_MATCHING:
            raise ValueError(f"pixel_matching={pixel_matching!r}; choose one of {PIXEL_MATCHING}")
        self.extractor = extractor
        self.k_images = k_images
        self.k_pixels = k_pixels
        self.sigma = sigma
        self.pixel_matching = pixel_matching
        self.support_global: Tensor | None = None
        self.support_pyramid: list[Tensor] = []

    @torch.no_grad()
    def _features(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        features = list(self.extractor(images))
        if len(features) < 2:
            raise ValueError(
                f"SPADE needs at least two feature stages (pyramid + image level), "
                f"the extractor gave {len(features)}"
            )
        pyramid = features[:-1]
        if self.pixel_matching == "concat":
            pyramid = [concat_upsampled(pyramid)]
        return global_average(features[-1]), pyramid

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        self.support_global, self.support_pyramid = self._features(images)

    def nearest_supports(self, query_global: Tensor) -> tuple[Tensor, Tensor]:
        """Distances (B,k) to, and indices (B,k) of, the k nearest support images."""
        if self.support_global is None:
            raise RuntimeError("SPADEModel.score called before fit")
        k = min(self.k_images, len(self.support_global))
        distances = torch.cdist(query_global, self.support_global)
        return torch.topk(distances, k, dim=1, largest=False)

    def _pixel_distances(self, level: Tensor, query: Tensor, neighbours: Tensor) -> Tensor:
        """(h,w) distances of one test image's positions to the gallery of its neighbours."""
        gallery = positions(level[neighbours])
        k = min(self.k_pixels, len(gallery))
        distances = nearest_distances(positions(query[None]), gallery, k)
        return distances.mean(dim=1).reshape(query.shape[-2:])

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Image scores (mean distance to the k nearest supports) and smoothed maps (B,H,W)."""
        query_global, query_pyramid = self._features(images)
        image_distances, neighbours = self.nearest_supports(query_global)
        size = tuple(images.shape[-2:])
        maps = []
        for b in range(len(images)):  # one gallery per test image: its own nearest supports
            levels = [
                self._pixel_distances(level, query[b], neighbours[b])
                for level, query in zip(self.support_pyramid, query_pyramid, strict=True)
            ]
            upsampled = [
                F.interpolate(d[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
                for d in levels
            ]
            maps.append(torch.stack(upsampled).mean(dim=0))
        return image_distances.mean(dim=1), gaussian_smooth(torch.stack(maps), self.sigma)
