"""Shared reconstruction pieces: U-Net, RIAD losses, masks, stitching and MSGMS maps.

SSIM is checked against scikit-image, GMS against a plain numpy version written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from fsad_methods.common.losses import (
    GMS_C,
    GRAD_EPS,
    ReconstructionLoss,
    gms_map,
    msgms_loss,
    ssim_loss,
)
from fsad_methods.common.reconstruction import (
    grid_masks,
    msgms_anomaly_map,
    random_pixel_masks,
    score_by_inpainting,
    stitched_reconstruction,
)
from fsad_methods.common.unet import ConvBlock, UNet


def smooth_pair(size: int = 32, border: int = 0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two related random images in [0,1]; an optional constant frame of ``border`` pixels."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size + 2, size + 2, generator=g), 3, 1)
    b = (a + 0.15 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    if border:
        for image in (a, b):
            frame = torch.ones_like(image, dtype=torch.bool)
            frame[..., border:-border, border:-border] = False
            image[frame] = 0.5
    return a.double(), b.double()


# ---------------------------------------------------------------- U-Net


def test_unet_shape_blocks_and_init() -> None:
    net = UNet(width=4)
    x = torch.rand(2, 3, 32, 48)
    assert net(x).shape == x.shape
    assert sum(isinstance(m, ConvBlock) for m in net.modules()) == 9
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    assert all(isinstance(m[1], nn.BatchNorm2d) for m in net.modules() if isinstance(m, ConvBlock))
    # Xavier-normal: std = sqrt(2 / (fan_in + fan_out)); check on the widest layer
    big = max(convs, key=lambda c: c.weight.numel())
    fan_in = big.weight.shape[1] * 9
    fan_out = big.weight.shape[0] * 9
    assert big.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.1)


def test_unet_width_scales_channels() -> None:
    assert UNet(width=8).inc[0].out_channels == 8
    assert UNet(width=8).down[-1][0].out_channels == 64


def test_unet_rejects_sizes_it_cannot_pool() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        UNet(4)(torch.rand(1, 3, 40, 40))


# ---------------------------------------------------------------- SSIM


def test_ssim_loss_matches_skimage() -> None:
    # with a constant frame wider than the window radius, every padding rule gives the same
    # full SSIM map, so the whole-map means of kornia and scikit-image must agree
    a, b = smooth_pair(48, border=8)
    reference = structural_similarity(
        a[0].numpy(),
        b[0].numpy(),
        data_range=1.0,
        channel_axis=0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )[1]
    assert ssim_loss(a, b).item() == pytest.approx(1 - reference.mean(), abs=1e-6)


def test_ssim_loss_is_zero_for_identical_images() -> None:
    a, _ = smooth_pair()
    assert ssim_loss(a, a).item() == pytest.approx(0.0, abs=1e-8)


# ---------------------------------------------------------------- GMS


def numpy_gms(x: np.ndarray, y: np.ndarray, c: float = GMS_C) -> np.ndarray:
    """(3,H,W) pair -> (H,W) GMS on the channel mean, Prewitt /3, mirrored borders."""

    def magnitude(gray: np.ndarray) -> np.ndarray:
        p = np.pad(gray, 1, mode="reflect")
        h, w = gray.shape
        gx = np.zeros_like(gray)
        gy = np.zeros_like(gray)
        for i in range(h):
            for j in range(w):
                win = p[i : i + 3, j : j + 3]
                gx[i, j] = (win[:, 0].sum() - win[:, 2].sum()) / 3
                gy[i, j] = (win[0, :].sum() - win[2, :].sum()) / 3
        return np.sqrt(gx**2 + gy**2 + GRAD_EPS)

    g1, g2 = magnitude(x.mean(axis=0)), magnitude(y.mean(axis=0))
    return (2 * g1 * g2 + c) / (g1**2 + g2**2 + c)


def numpy_pool(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def test_gms_matches_numpy() -> None:
    a, b = smooth_pair(12)
    expected = numpy_gms(a[0].numpy(), b[0].numpy())
    np.testing.assert_allclose(gms_map(a, b)[0, 0].numpy(), expected, rtol=1e-10)


def test_msgms_loss_matches_numpy_pyramid() -> None:
    a, b = smooth_pair(16)
    x, y, levels = a[0].numpy(), b[0].numpy(), []
    for level in range(4):
        if level:
            x, y = numpy_pool(x), numpy_pool(y)
        levels.append((1 - numpy_gms(x, y)).mean())
    assert msgms_loss(a, b).item() == pytest.approx(np.mean(levels), rel=1e-10)


def test_losses_vanish_on_a_perfect_reconstruction_with_finite_gradients() -> None:
    a, _ = smooth_pair()
    a[..., :10, :10] = 0.3  # flat patch: zero image gradient, where sqrt is not smooth
    recon = a.clone().requires_grad_(True)
    loss = ReconstructionLoss()(a, recon)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    (g,) = torch.autograd.grad(loss, recon, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), recon)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()


def test_reconstruction_loss_weights_combine_terms() -> None:
    a, b = smooth_pair()
    total = ReconstructionLoss(2.0, 0.5, 3.0)(a, b)
    parts = 2.0 * torch.mean((a - b) ** 2) + 0.5 * ssim_loss(a, b) + 3.0 * msgms_loss(a, b)
    assert total.item() == pytest.approx(parts.item(), rel=1e-12)


# ---------------------------------------------------------------- masks and maps


@pytest.mark.parametrize(("cell", "n"), [(1, 2), (2, 3), (8, 3), (16, 3)])
def test_grid_masks_partition_the_image_into_cells(cell: int, n: int) -> None:
    masks = grid_masks(32, 32, cell, n, torch.Generator().manual_seed(0))
    assert masks.shape == (n, 32, 32)
    assert torch.equal(masks.sum(dim=0), torch.ones(32, 32, dtype=torch.long))
    owner = masks.int().argmax(dim=0)
    cells = owner.reshape(32 // cell, cell, 32 // cell, cell)
    assert (cells == cells[:, :1, :, :1]).all(), "a cell was split between masks"
    sizes = masks.flatten(1).sum(dim=1)
    assert int(sizes.max() - sizes.min()) <= cell * cell


def test_grid_masks_need_enough_cells() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        grid_masks(16, 16, 16, 3, torch.Generator())


def test_random_pixel_masks_density_range() -> None:
    masks = random_pixel_masks(200, 32, 32, (0.2, 0.8), torch.Generator().manual_seed(0))
    density = masks.float().mean(dim=(1, 2))
    assert density.min() > 0.15 and density.max() < 0.85
    assert density.std() > 0.1, "densities should vary between images"


class HiddenPixels(nn.Module):
    """Outputs 1 where the input was zeroed (hidden), 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x == 0).to(x.dtype)


def test_stitching_takes_every_pixel_from_the_pass_that_hid_it() -> None:
    images = torch.rand(2, 3, 16, 16) + 0.1  # no zeros of their own
    masks = grid_masks(16, 16, 2, 3, torch.Generator().manual_seed(1))
    assert torch.equal(
        stitched_reconstruction(HiddenPixels(), images, masks), torch.ones_like(images)
    )


def test_anomaly_map_is_zero_for_identical_images_and_marks_a_change() -> None:
    a, _ = smooth_pair(32)
    assert msgms_anomaly_map(a, a).abs().max().item() < 1e-12
    b = a.clone()
    b[..., 20:26, 4:10] = 1.0 - b[..., 20:26, 4:10]
    amap = msgms_anomaly_map(a, b)[0]
    assert amap.shape == (32, 32)
    assert amap[20:26, 4:10].mean() > 5 * amap[:12, 16:].mean()


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def test_score_by_inpainting_shapes_and_max() -> None:
    images = torch.rand(3, 3, 40, 40)
    masks = [grid_masks(32, 32, 4, 3, torch.Generator().manual_seed(0))]
    scores, maps = score_by_inpainting(Identity(), images, masks, input_size=32, sigma=2.0)
    assert scores.shape == (3,) and maps.shape == (3, 40, 40)
    assert torch.equal(scores, maps.flatten(1).amax(dim=1))
