"""One multivariate Gaussian per feature-map position, scored by Mahalanobis distance.

PaDiM and RegAD both model the normal features at each (h, w) position with a Gaussian and
score a test feature by its Mahalanobis distance. Everything is batched over positions: the
covariances are factorised by one batched Cholesky and distances come from one batched
triangular solve per chunk of positions, so no Python loop runs over positions and the
memory of scoring stays bounded by ``chunk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Covariance = Literal["eps", "ledoit_wolf"]
COVARIANCES: tuple[str, ...] = ("eps", "ledoit_wolf")


def positions_first(features: Tensor) -> Tensor:
    """(N,C,H,W) -> (H*W, N, C): one sample matrix per position."""
    n, c, h, w = features.shape
    return features.reshape(n, c, h * w).permute(2, 0, 1)


def ledoit_wolf_covariance(samples: Tensor) -> tuple[Tensor, Tensor]:
    """Ledoit-Wolf shrunk covariance for every position at once.

    ``samples`` is (P, N, C). Same estimator as sklearn.covariance.ledoit_wolf (biased
    empirical covariance shrunk towards ``mu * I``, ``mu`` its mean eigenvalue); returns the
    (P, C, C) covariances and the (P,) shrinkage. With N = 1 the result is all zeros.
    """
    n, c = samples.shape[1], samples.shape[2]
    centred = samples - samples.mean(dim=1, keepdim=True)
    empirical = centred.transpose(1, 2) @ centred / n
    mu = torch.diagonal(empirical, dim1=1, dim2=2).sum(-1) / c
    eye = torch.eye(c, dtype=samples.dtype, device=samples.device)
    # beta: variance of the entries of x x^T around the empirical covariance
    fourth = (centred.square().sum(-1).square()).sum(-1) / n
    frob = empirical.square().sum((1, 2))
    beta = (fourth - frob) / (c * n)
    delta = (empirical - mu[:, None, None] * eye).square().sum((1, 2)) / c
    beta = torch.minimum(beta.clamp_min(0), delta)  # >= 0 exactly; rounding can dip below
    shrinkage = torch.where(delta > 0, beta / delta.clamp_min(torch.finfo(delta.dtype).tiny), 0)
    shrunk = (1 - shrinkage)[:, None, None] * empirical
    shrunk = shrunk + (shrinkage * mu)[:, None, None] * eye
    return shrunk, shrinkage


def sample_covariance(samples: Tensor) -> Tensor:
    """Unbiased covariance (np.cov) per position; zeros when N = 1 instead of NaN."""
    n = samples.shape[1]
    centred = samples - samples.mean(dim=1, keepdim=True)
    return centred.transpose(1, 2) @ centred / max(n - 1, 1)


@dataclass(frozen=True)
class PositionGaussians:
    """Means (P, C) and lower Cholesky factors (P, C, C), float32, of an (H, W) grid."""

    mean: Tensor
    cholesky: Tensor
    height: int
    width: int

    @classmethod
    def fit(
        cls, features: Tensor, covariance: Covariance = "eps", eps: float = 0.01
    ) -> PositionGaussians:
        """Fit on (N,C,H,W) features. ``eps * I`` is added in both modes.

        "eps" is PaDiM's estimator (sample covariance + eps I); "ledoit_wolf" shrinks first,
        and the eps ridge keeps it positive definite when N = 1 or a channel is constant.
        """
        if covariance not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0 so every covariance is invertible, got {eps}")
        _, c, h, w = features.shape
        samples = positions_first(features.float())
        if covariance == "eps":
            cov = sample_covariance(samples)
        else:
            cov, _ = ledoit_wolf_covariance(samples)
        cov.diagonal(dim1=1, dim2=2).add_(eps)
        factor, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()):
            raise ValueError(
                f"covariance not positive definite at {int((info != 0).sum())} positions "
                f"(non-finite features?); raise eps (now {eps})"
            )
        return cls(samples.mean(dim=1), factor, h, w)

    def mahalanobis(self, features: Tensor, chunk: int = 1024) -> Tensor:
        """(B,C,H,W) test features -> (B,H,W) Mahalanobis distances.

        d^2 = |L^-1 (x - mu)|^2 with cov = L L^T; positions are processed ``chunk`` at a time.
        """
        b, c, h, w = features.shape
        if (h, w) != (self.height, self.width) or c != self.mean.shape[1]:
            raise ValueError(
                f"features (C,H,W)=({c},{h},{w}) do not match the fitted "
                f"({self.mean.shape[1]},{self.height},{self.width})"
            )
        samples = positions_first(features.float())  # (P, B, C)
        out = torch.empty(h * w, b, dtype=torch.float32, device=features.device)
        for start in range(0, h * w, chunk):
            stop = min(start + chunk, h * w)
            diff = (samples[start:stop] - self.mean[start:stop, None]).transpose(1, 2)
            solved = torch.linalg.solve_triangular(self.cholesky[start:stop], diff, upper=False)
            out[start:stop] = torch.linalg.vector_norm(solved, dim=1)
        return out.T.reshape(b, h, w)

    def to(self, device: str | torch.device) -> PositionGaussians:
        return PositionGaussians(
            self.mean.to(device), self.cholesky.to(device), self.height, self.width
        )
