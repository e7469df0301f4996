"""Tiny synthetic images for the conformance suite: fast, deterministic, obviously defective."""

from __future__ import annotations

import torch


def tiny_normals(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A striped texture with a random phase and mild noise: normals that differ a little."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = []
    for _ in range(n):
        phase = float(torch.rand(1, generator=generator)) * 6.28
        stripes = 0.5 + 0.25 * torch.sin((xs + ys) / 3.0 + phase)
        noise = 0.03 * torch.randn(size, size, generator=generator)
        gray = (stripes + noise).clamp(0, 1)
        images.append(torch.stack([gray, gray * 0.9, gray * 0.8]))
    return torch.stack(images)


def tiny_defect(size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A normal image with a saturated square patch; returns (image (1,3,S,S), mask (1,S,S))."""
    image = tiny_normals(1, size, seed)
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    lo, hi = size // 3, size // 3 + size // 4
    mask[:, lo:hi, lo:hi] = True
    image[:, 0][mask] = 1.0
    image[:, 1][mask] = 0.1
    image[:, 2][mask] = 0.1
    return image, mask
