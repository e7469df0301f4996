"""PatchCore core pieces against independent numpy/torch computations."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fsad_methods.patchcore.core import (
    FaissNearestNeighbours,
    GreedyCoresetSampler,
    PatchCoreModel,
    aggregate_features,
    greedy_coreset,
)


def reference_k_center(points: np.ndarray, n: int, start: int) -> list[int]:
    """Textbook greedy k-center on a full distance matrix."""
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    chosen = [start]
    for _ in range(n - 1):
        chosen.append(int(np.argmax(dist[:, chosen].min(axis=1))))
    return chosen


def test_greedy_coreset_equals_textbook_k_center() -> None:
    bank = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    picked = greedy_coreset(bank, 30, None, torch.Generator().manual_seed(5))
    expected = reference_k_center(bank.numpy().astype(np.float64), 30, int(picked[0]))
    assert picked.tolist() == expected


def test_coreset_covers_better_than_random() -> None:
    generator = torch.Generator().manual_seed(1)
    bank = torch.cat(
        [torch.randn(500, 8, generator=generator), 10 + torch.randn(5, 8, generator=generator)]
    )
    picked = greedy_coreset(bank, 20, 4, torch.Generator().manual_seed(2))
    # the 5 far outliers form their own cluster: the k-center coreset must reach it
    assert (picked >= 500).any()
    assert len(set(picked.tolist())) == 20


def test_faiss_distances_equal_brute_force() -> None:
    generator = torch.Generator().manual_seed(3)
    bank, queries = (
        torch.randn(200, 12, generator=generator),
        torch.randn(50, 12, generator=generator),
    )
    search = FaissNearestNeighbours()
    search.fit(bank)
    expected = torch.cdist(queries.double(), bank.double()).topk(3, largest=False).values
    torch.testing.assert_close(
        search.distances(queries, 3).double(), expected, rtol=1e-4, atol=1e-4
    )


def test_aggregate_features_shapes_and_local_average() -> None:
    fine, coarse = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    out = aggregate_features([fine, coarse])
    assert out.shape == (2, 10, 8, 8)
    # interior 3x3 mean of the fine map
    torch.testing.assert_close(out[:, :4, 3, 3], fine[:, :, 2:5, 2:5].mean(dim=(-1, -2)))
    assert aggregate_features([fine, coarse], embed_dim=5).shape == (2, 5, 8, 8)


def test_border_average_counts_zero_padding_as_the_reference_code() -> None:
    """A corner's 3x3 window holds 4 pixels inside and 5 of zero padding: the sum over 9 by
    default (official PatchCore, anomalib), the sum over the 4 inside with count_padding=False."""
    feature = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    corner_sum = 1.0 + 2.0 + 5.0 + 6.0  # rows 0-1, columns 0-1
    edge_sum = (1.0 + 2.0 + 3.0) + (5.0 + 6.0 + 7.0)  # top edge at column 1: 6 inside
    counted = aggregate_features([feature])[0, 0]
    ignored = aggregate_features([feature], count_padding=False)[0, 0]
    expected_counted = torch.tensor([corner_sum / 9, edge_sum / 9])
    expected_ignored = torch.tensor([corner_sum / 4, edge_sum / 6])
    torch.testing.assert_close(counted[0, :2], expected_counted)
    torch.testing.assert_close(ignored[0, :2], expected_ignored)
    # inside the map both are the plain 3x3 mean
    torch.testing.assert_close(counted[1, 1], feature[0, 0, :3, :3].mean())
    torch.testing.assert_close(ignored[1, 1], feature[0, 0, :3, :3].mean())


def test_channel_pooling_weights_every_layer_equally() -> None:
    """A 2-channel layer of zeros and an 8-channel layer of ones pool to half zeros, half ones."""
    narrow, wide = torch.zeros(1, 2, 4, 4), torch.ones(1, 8, 4, 4)
    out = aggregate_features([narrow, wide], embed_dim=2)
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor([0.0, 1.0]))


class PixelFeatures(nn.Module):
    """A stand-in backbone: stride-4 average features of the image itself."""

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.nn.functional.avg_pool2d(images, 4)]


def test_support_scores_zero_with_full_bank_and_defect_scores_high() -> None:
    generator = torch.Generator().manual_seed(4)
    support = 0.5 + 0.05 * torch.randn(3, 3, 32, 32, generator=generator)
    model = PatchCoreModel(PixelFeatures(), GreedyCoresetSampler(ratio=1.0), sigma=1.0)
    model.fit(support, torch.Generator().manual_seed(0))
    scores, maps = model.score(support)
    assert torch.allclose(scores, torch.zeros(3), atol=1e-3)
    defect = support[:1].clone()
    defect[:, :, 8:16, 8:16] = 1.0
    defect_scores, defect_maps = model.score(defect)
    # 2x2 defect cells of +0.5 per channel, diluted by the 3x3 average: about 0.37
    assert defect_scores[0] > 0.2
    assert maps.shape == (3, 32, 32)
    # the map peaks inside the defect
    peak = divmod(int(defect_maps[0].argmax()), 32)
    assert 6 <= peak[0] <= 17 and 6 <= peak[1] <= 17


class Exhaustive:
    """A stand-in nearest-neighbour search: brute force with torch.cdist."""

    def fit(self, bank: torch.Tensor) -> None:
        self.bank = bank

    def distances(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cdist(queries, self.bank).topk(k, largest=False).values


class KeepAll:
    def sample(self, bank: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return bank


def test_sampler_and_search_are_injected_strategies() -> None:
    """A variant is an argument: the full bank with a brute-force search scores as the full
    coreset with faiss (both exact)."""
    support = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    default = PatchCoreModel(PixelFeatures(), GreedyCoresetSampler(ratio=1.0), sigma=1.0)
    variant = PatchCoreModel(PixelFeatures(), KeepAll(), Exhaustive(), sigma=1.0)
    for model in (default, variant):
        model.fit(support, torch.Generator().manual_seed(0))
    (s1, m1), (s2, m2) = default.score(images), variant.score(images)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m1, m2, rtol=1e-4, atol=1e-5)
    assert variant.bank_size == default.bank_size == 2 * 8 * 8
