"""Normalizing flows on feature vectors: soft-clamped affine couplings, fixed permutations.

The coupling block is the two-sided GLOW-style affine coupling that DifferNet (Rudolph et al.,
WACV 2021) took from FrEIA (``glow_coupling_layer``; FrEIA's ``GLOWCouplingBlock``). The
input is split into halves x1, x2 and

    y1 = x1 * exp(c(s2(x2))) + t2(x2)
    y2 = x2 * exp(c(s1(y1))) + t1(y1)

with one subnetwork per half returning (s, t), and the soft clamp
``c(s) = clamp * 0.636 * atan(s / clamp)`` (DifferNet's eq. 2; 0.636 ~ 2/pi as in FrEIA), which
keeps every log-scale inside (-clamp, clamp). The log-determinant of the Jacobian is the sum of
the clamped log-scales. FrEIA 0.2's own ``"ATAN"`` clamp omits the ``/ clamp`` inside the
arctangent; pass ``clamp_activation=lambda u: 0.636 * torch.atan(u / clamp)`` to FrEIA to get
this block (tests/test_differnet.py compares the two when FrEIA is installed).

Each block is preceded by a fixed random permutation of the features, drawn with numpy's legacy
``RandomState(seed)`` as FrEIA's ``PermuteRandom(seed=k)`` and DifferNet do, so block k
permutes the same way in all three.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

SOFT_CLAMP_SCALE = 0.636  # FrEIA's and DifferNet's constant, ~ 2/pi: |c(s)| < clamp

SubnetConstructor = Callable[[int, int], nn.Module]


def soft_clamp(s: Tensor, clamp: float) -> Tensor:
    """``clamp * 0.636 * atan(s / clamp)``: ~ s near 0, bounded by +-clamp."""
    return clamp * SOFT_CLAMP_SCALE * torch.atan(s / clamp)


def mlp_subnet(hidden: int, depth: int = 3) -> SubnetConstructor:
    """DifferNet's subnetwork: ``depth`` hidden ReLU layers of width ``hidden``, linear output.

    DifferNet's ``F_fully_connected`` is fc1 -> ReLU -> fc2 -> ReLU -> fc2b -> ReLU -> fc3
    (depth 3; its dropout defaults to 0 and its BatchNorm is never used).
    """
    if hidden < 1 or depth < 1:
        raise ValueError(f"mlp_subnet needs hidden >= 1 and depth >= 1, got {hidden}, {depth}")

    def build(dim_in: int, dim_out: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = dim_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, dim_out))
        return nn.Sequential(*layers)

    return build


class FixedPermutation(nn.Module):
    """Permutes features the same way every call; volume-preserving (log-det 0)."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        perm = torch.from_numpy(np.random.RandomState(seed).permutation(dim))
        self.register_buffer("perm", perm)
        self.register_buffer("perm_inv", torch.argsort(perm))

    def forward(self, x: Tensor, reverse: bool = False) -> Tensor:
        return x[:, self.perm_inv if reverse else self.perm]


class SoftClampedCoupling(nn.Module):
    """Two-sided affine coupling with soft-clamped log-scales (see the module docstring)."""

    def __init__(self, dim: int, subnet: SubnetConstructor, clamp: float = 3.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling block needs at least 2 features, got {dim}")
        if clamp <= 0:
            raise ValueError(f"clamp must be > 0, got {clamp}")
        self.len1, self.len2 = dim // 2, dim - dim // 2
        self.clamp = clamp
        self.subnet1 = subnet(self.len1, 2 * self.len2)  # from y1: scales/shifts of x2
        self.subnet2 = subnet(self.len2, 2 * self.len1)  # from x2: scales/shifts of x1

    def _scale_shift(self, net: nn.Module, u: Tensor, n: int) -> tuple[Tensor, Tensor]:
        out = net(u)
        return soft_clamp(out[:, :n], self.clamp), out[:, n:]

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)``; with ``reverse`` the inverse map and its log-det."""
        x1, x2 = x[:, : self.len1], x[:, self.len1 :]
        if not reverse:
            s2, t2 = self._scale_shift(self.subnet2, x2, self.len1)
            y1 = x1 * torch.exp(s2) + t2
            s1, t1 = self._scale_shift(self.subnet1, y1, self.len2)
            y2 = x2 * torch.exp(s1) + t1
            return torch.cat([y1, y2], dim=1), s1.sum(dim=1) + s2.sum(dim=1)
        s1, t1 = self._scale_shift(self.subnet1, x1, self.len2)
        y2 = (x2 - t1) * torch.exp(-s1)
        s2, t2 = self._scale_shift(self.subnet2, y2, self.len1)
        y1 = (x1 - t2) * torch.exp(-s2)
        return torch.cat([y1, y2], dim=1), -(s1.sum(dim=1) + s2.sum(dim=1))


class CouplingFlow(nn.Module):
    """``blocks`` x (fixed permutation seeded with the block index, soft-clamped coupling).

    Maps (N, dim) features to latents z of the same shape; ``forward`` also returns
    log|det dz/dx| per sample, so ``-log p(x) = gaussian_nll(z, log_det)`` up to a constant.
    """

    def __init__(
        self,
        dim: int,
        blocks: int = 8,
        subnet: SubnetConstructor | None = None,
        clamp: float = 3.0,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"a flow needs at least one coupling block, got {blocks}")
        subnet = subnet or mlp_subnet(2 * dim)
        self.dim = dim
        self.permutations = nn.ModuleList(FixedPermutation(dim, seed=k) for k in range(blocks))
        self.couplings = nn.ModuleList(
            SoftClampedCoupling(dim, subnet, clamp) for _ in range(blocks)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"flow expects (N, {self.dim}) features, got {tuple(x.shape)}")
        log_det = x.new_zeros(len(x))
        for permute, couple in zip(self.permutations, self.couplings, strict=True):
            x, block_log_det = couple(permute(x))
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for permute, couple in zip(
            reversed(self.permutations), reversed(self.couplings), strict=True
        ):
            z, _ = couple(z, reverse=True)
            z = permute(z, reverse=True)
        return z


def gaussian_nll(z: Tensor, log_det: Tensor) -> Tensor:
    """Per-sample ``-log p(x)`` under a standard normal latent, without the constant
    ``dim/2 log(2 pi)``: ``|z|^2 / 2 - log|det J|`` (DifferNet's training loss, its eq. 4)."""
    return 0.5 * z.square().sum(dim=1) - log_det
