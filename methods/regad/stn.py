"""Spatial transformers for feature maps: a small network predicts an affine warp per image.

Every mode is parameterised so that a zero output is the identity warp; the last layer starts
at zero, so an untrained transformer passes features through unchanged and training begins
from plain backbone features. Warps act in normalised coordinates, so one matrix means the
same geometric transform at every stage's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STN_MODES: dict[str, int] = {"rotation_scale": 3, "rotation": 1, "translation": 2, "affine": 6}


def warp(features: Tensor, theta: Tensor) -> Tensor:
    """Sample ``features`` at ``theta @ (x, y, 1)``; reflection padding adds no black borders."""
    grid = F.affine_grid(theta, list(features.shape), align_corners=False)
    return F.grid_sample(
        features, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def invert(theta: Tensor) -> Tensor:
    """Inverse of (B,2,3) affine maps: warp(warp(x, t), invert(t)) ~ x."""
    linear = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([linear, -linear @ theta[:, :, 2:]], dim=2)


def compose(first: Tensor, then: Tensor) -> Tensor:
    """One matrix for warp(warp(x, first), then): the 3x3 product first @ then."""
    return first[:, :, :2] @ then + torch.cat(
        [torch.zeros_like(first[:, :, :2]), first[:, :, 2:]], dim=2
    )


def params_to_theta(params: Tensor, mode: str) -> Tensor:
    """(B, n) predicted parameters -> (B, 2, 3) affine matrices; zeros give the identity."""
    batch = params.shape[0]
    eye = torch.eye(2, 3, dtype=params.dtype, device=params.device).expand(batch, 2, 3)
    if mode == "affine":
        return eye + params.view(batch, 2, 3)
    if mode == "translation":
        return torch.cat([eye[:, :, :2], params[:, :, None]], dim=2)
    angle = params[:, 0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
    if mode == "rotation_scale":  # R @ diag(sx, sy), scales 1 + p
        rotation = rotation * (1 + params[:, None, 1:3])
    elif mode != "rotation":
        raise ValueError(f"unknown STN mode {mode!r}; choose one of {sorted(STN_MODES)}")
    return torch.cat([rotation, torch.zeros_like(rotation[:, :, :1])], dim=2)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class SpatialTransformer(nn.Module):
    """Localisation net (two conv blocks, two linear layers) + warp; starts at the identity."""

    def __init__(self, channels: int, mode: str = "rotation_scale", hidden: int = 128) -> None:
        super().__init__()
        if mode not in STN_MODES:
            raise ValueError(f"unknown STN mode {mode!r}; choose one of {sorted(STN_MODES)}")
        self.mode = mode
        self.localise = nn.Sequential(
            _conv_block(channels, 64),
            _conv_block(64, 16),
            nn.AdaptiveAvgPool2d(4),  # any input size gives the same head
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, STN_MODES[mode]),
        )
        nn.init.zeros_(self.localise[-1].weight)
        nn.init.zeros_(self.localise[-1].bias)

    def theta(self, features: Tensor) -> Tensor:
        return params_to_theta(self.localise(features), self.mode)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        theta = self.theta(features)
        return warp(features, theta), theta
