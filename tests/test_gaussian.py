"""Per-position Gaussians against numpy / scipy / sklearn computed one position at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import ledoit_wolf

from fsad_methods.common.gaussian import PositionGaussians, ledoit_wolf_covariance


def correlated_features(n: int, c: int = 6, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    """Channels mixed by a random matrix per position so covariances are far from diagonal."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, h * w, c))
    mix = rng.standard_normal((h * w, c, c))
    shift = rng.uniform(-3, 3, size=(h * w, c))
    data = np.einsum("npc,pcd->npd", base, mix) + shift
    return torch.from_numpy(data.transpose(0, 2, 1).reshape(n, c, h, w)).float()


def reference_distances(train: np.ndarray, test: np.ndarray, cov_at) -> np.ndarray:
    """scipy's mahalanobis with an explicit inverse, position by position."""
    _, c, h, w = train.shape
    out = np.zeros((len(test), h, w))
    for y in range(h):
        for x in range(w):
            samples = train[:, :, y, x].astype(np.float64)
            inverse = np.linalg.inv(cov_at(samples))
            for b in range(len(test)):
                out[b, y, x] = mahalanobis(test[b, :, y, x], samples.mean(0), inverse)
    return out


@pytest.mark.parametrize("n", [3, 20])
def test_eps_distances_match_scipy(n: int) -> None:
    train, test = correlated_features(n), correlated_features(5, seed=1)
    eps = 0.01
    gaussians = PositionGaussians.fit(train, "eps", eps)

    def cov(samples: np.ndarray) -> np.ndarray:
        return np.cov(samples, rowvar=False) + eps * np.eye(samples.shape[1])

    expected = reference_distances(train.numpy(), test.numpy(), cov)
    got = gaussians.mahalanobis(test, chunk=5).double().numpy()  # chunk not dividing H*W
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_ledoit_wolf_distances_match_scipy() -> None:
    train, test = correlated_features(8, c=10), correlated_features(4, c=10, seed=2)
    eps = 1e-3
    gaussians = PositionGaussians.fit(train, "ledoit_wolf", eps)

    def cov(samples: np.ndarray) -> np.ndarray:
        return ledoit_wolf(samples)[0] + eps * np.eye(samples.shape[1])

    expected = reference_distances(train.numpy(), test.numpy(), cov)
    np.testing.assert_allclose(gaussians.mahalanobis(test).double().numpy(), expected, rtol=2e-3)


@pytest.mark.parametrize(("n", "c"), [(2, 5), (7, 5), (30, 12), (5, 40)])
def test_batched_ledoit_wolf_matches_sklearn(n: int, c: int) -> None:
    samples = correlated_features(n, c=c, h=2, w=3, seed=n).double()
    batch = samples.reshape(n, c, -1).permute(2, 0, 1)
    covs, shrinkage = ledoit_wolf_covariance(batch)
    for p in (0, 3, 5):
        expected_cov, expected_shrinkage = ledoit_wolf(batch[p].numpy())
        np.testing.assert_allclose(covs[p].numpy(), expected_cov, rtol=1e-9, atol=1e-12)
        assert float(shrinkage[p]) == pytest.approx(expected_shrinkage, rel=1e-9, abs=1e-12)
    assert bool(((shrinkage >= 0) & (shrinkage <= 1)).all())


@pytest.mark.parametrize("covariance", ["eps", "ledoit_wolf"])
def test_single_sample_is_finite_and_isotropic(covariance: str) -> None:
    """K = 1: the covariance is eps I, so the distance is |x - x_train| / sqrt(eps)."""
    train, test = correlated_features(1), correlated_features(3, seed=4)
    eps = 0.01
    gaussians = PositionGaussians.fit(train, covariance, eps)
    got = gaussians.mahalanobis(test)
    expected = torch.linalg.vector_norm(test - train, dim=1) / eps**0.5
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gaussians.mahalanobis(train), torch.zeros(1, 3, 4))


def test_factor_is_lower_triangular_float32() -> None:
    gaussians = PositionGaussians.fit(correlated_features(10), "eps", 0.01)
    assert gaussians.cholesky.dtype == gaussians.mean.dtype == torch.float32
    assert gaussians.cholesky.shape == (12, 6, 6) and gaussians.mean.shape == (12, 6)
    assert torch.equal(gaussians.cholesky, torch.tril(gaussians.cholesky))


def test_bad_inputs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="covariance must be one of"):
        PositionGaussians.fit(correlated_features(3), "diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps must be > 0"):
        PositionGaussians.fit(correlated_features(3), "eps", 0.0)
    gaussians = PositionGaussians.fit(correlated_features(3), "eps")
    with pytest.raises(ValueError, match="do not match the fitted"):
        gaussians.mahalanobis(correlated_features(2, h=4, w=4))
