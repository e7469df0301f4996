"""RIAD's reconstruction losses: L2, SSIM and multi-scale gradient magnitude similarity.

GMS (Xue et al., 2014) compares Prewitt gradient magnitudes g of the image and of its
reconstruction: ``GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c)``, 1 where the edges agree. RIAD
averages ``1 - GMS`` over a 4-scale pyramid built by 2x2 average pooling (MSGMS). The
filtering comes from kornia; only the Prewitt kernel is written here because kornia's
spatial_gradient offers Sobel and central differences but not Prewitt.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

GMS_C = 0.0026  # stability constant used by RIAD for images in [0, 1]
GRAD_EPS = 1e-6  # inside the square root: keeps its first and second derivatives finite at 0
SSIM_WINDOW = 11


def prewitt_kernels(device: torch.device | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """(2,3,3) Prewitt kernels for d/dx and d/dy, scaled by 1/3 (a mean of differences)."""
    kx = torch.tensor([[1.0, 0.0, -1.0]] * 3, device=device, dtype=dtype) / 3.0
    return torch.stack([kx, kx.T])


def gradient_magnitude(gray: Tensor) -> Tensor:
    """(B,1,H,W) -> (B,1,H,W) Prewitt gradient magnitude, reflect-padded borders."""
    kernels = prewitt_kernels(gray.device, gray.dtype)
    gx = kornia.filters.filter2d(gray, kernels[:1], border_type="reflect")
    gy = kornia.filters.filter2d(gray, kernels[1:], border_type="reflect")
    return torch.sqrt(gx**2 + gy**2 + GRAD_EPS)


def gms_map(image: Tensor, recon: Tensor, c: float = GMS_C) -> Tensor:
    """(B,C,H,W) pair -> (B,1,H,W) similarity on the channel-mean grey image."""
    g1 = gradient_magnitude(image.mean(dim=1, keepdim=True))
    g2 = gradient_magnitude(recon.mean(dim=1, keepdim=True))
    return (2 * g1 * g2 + c) / (g1**2 + g2**2 + c)


def msgms_maps(image: Tensor, recon: Tensor, scales: int = 4, c: float = GMS_C) -> list[Tensor]:
    """``1 - GMS`` at each pyramid level (level i is 2**i times smaller), finest first."""
    maps = []
    for level in range(scales):
        if level:
            image, recon = F.avg_pool2d(image, 2), F.avg_pool2d(recon, 2)
        maps.append(1 - gms_map(image, recon, c))
    return maps


def msgms_loss(image: Tensor, recon: Tensor, scales: int = 4, c: float = GMS_C) -> Tensor:
    return torch.stack([m.mean() for m in msgms_maps(image, recon, scales, c)]).mean()


def ssim_loss(image: Tensor, recon: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Mean of ``1 - SSIM`` (kornia's ssim_loss halves it; RIAD does not)."""
    return 1 - kornia.metrics.ssim(image, recon, window, max_val=1.0).mean()


@dataclass(frozen=True)
class ReconstructionLoss:
    """``w_l2 * L2 + w_ssim * (1 - SSIM) + w_gms * MSGMS``, the RIAD objective."""

    w_l2: float = 1.0
    w_ssim: float = 1.0
    w_gms: float = 1.0
    scales: int = 4

    def __call__(self, image: Tensor, recon: Tensor) -> Tensor:
        loss = self.w_l2 * F.mse_loss(recon, image)
        if self.w_ssim:
            loss = loss + self.w_ssim * ssim_loss(image, recon)
        if self.w_gms:
            loss = loss + self.w_gms * msgms_loss(image, recon, self.scales)
        return loss
