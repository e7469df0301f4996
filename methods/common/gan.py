"""GAN building blocks shared by the generative methods (TDG; later f-AnoGAN and others).

Pure torch. The SinGAN family (SinGAN, TDG) stacks small fully convolutional patch-GANs on
an image pyramid: every scale has a generator that refines the upsampled output of the
coarser scale and a Markovian (patch) discriminator whose output is a grid of per-patch
decisions. The pieces here are that family's blocks, DCGAN-style initialisation drawn from
an explicit ``torch.Generator`` (so a method's randomness is one seeded stream), the WGAN-GP
gradient penalty, and the pyramid arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, autograd, nn

LEAKY_SLOPE = 0.2  # LeakyReLU slope of DCGAN, SinGAN and TDG


class ConvBlock(nn.Sequential):
    """Convolution -> BatchNorm -> LeakyReLU(0.2): the unit of SinGAN/TDG's generators and
    discriminators (stride 1, no padding there) and of DCGAN-style encoders (stride 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        batch_norm: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.LeakyReLU(LEAKY_SLOPE))
        super().__init__(*layers)


@torch.no_grad()
def init_gan_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), norm
    shifts 0. Conv biases keep PyTorch's default law U(-1/sqrt(fan_in), 1/sqrt(fan_in)) but
    are drawn from ``generator`` too, so a seeded generator fixes every parameter."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            m.weight.normal_(0.0, 0.02, generator=generator)
            if m.bias is not None:
                # PyTorch's fan-in: dim 1 times the kernel, for conv, transposed conv, linear
                fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.affine:
            m.weight.normal_(1.0, 0.02, generator=generator)
            m.bias.zero_()


class PatchDiscriminator(nn.Module):
    """SinGAN's Markovian discriminator: ``num_layers`` unpadded kxk convolutions of constant
    ``width`` (head and body are ConvBlocks, the tail a plain convolution with
    ``out_channels`` outputs, no activation). An HxW input gives an
    (H - r + 1)x(W - r + 1) grid of decisions, one per patch of side ``r`` =
    :func:`receptive_field`.

    SinGAN halves the width in the body down to a floor ``min_nfc``; SinGAN's and TDG's
    configurations set the floor equal to the width, which is this constant width.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        width: int = 32,
        num_layers: int = 5,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"a patch discriminator needs num_layers >= 2, got {num_layers}")
        self.head = ConvBlock(in_channels, width, kernel_size)
        self.body = nn.Sequential(
            *(ConvBlock(width, width, kernel_size) for _ in range(num_layers - 2))
        )
        self.tail = nn.Conv2d(width, out_channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.body(self.head(x)))


class ResidualPatchGenerator(nn.Module):
    """SinGAN's per-scale generator: ``num_layers`` unpadded convolutions map a padded input
    (noise plus the upsampled coarser image, and any conditioning channels) to an image
    residual in (-1, 1) (tanh) that is added to the centre of ``prev``.

    The input must be padded by ``num_layers * (kernel_size - 1) // 2`` on every side
    (:func:`generator_padding`) so that the output has the unpadded size.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 32,
        num_layers: int = 5,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"a patch generator needs num_layers >= 2, got {num_layers}")
        self.head = ConvBlock(in_channels, width, kernel_size)
        self.body = nn.Sequential(
            *(ConvBlock(width, width, kernel_size) for _ in range(num_layers - 2))
        )
        self.tail = nn.Sequential(nn.Conv2d(width, out_channels, kernel_size), nn.Tanh())

    def forward(self, x: Tensor, prev: Tensor) -> Tensor:
        residual = self.tail(self.body(self.head(x)))
        return residual + centre_crop(prev, residual.shape[-2:])


def receptive_field(num_layers: int, kernel_size: int = 3) -> int:
    """Side of the input patch behind one output of a stack of unpadded stride-1 convs."""
    return num_layers * (kernel_size - 1) + 1


def generator_padding(num_layers: int, kernel_size: int = 3) -> int:
    """Zero padding per side that keeps a generator's output at its input's unpadded size."""
    return num_layers * (kernel_size - 1) // 2


def centre_crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """The central ``size`` window of (..., H, W)."""
    h, w = int(size[0]), int(size[1])
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    if top < 0 or left < 0:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to {(h, w)}")
    return x[..., top : top + h, left : left + w]


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP (Gulrajani et al., 2017): ``E[(||grad_x critic(x)||_2 - 1)^2]`` at random
    points ``x = a real + (1 - a) fake`` with one ``a ~ U(0, 1)`` per sample.

    The norm is taken over all of a sample's input dimensions; a critic with several
    outputs per sample (a patch grid) is differentiated through the sum of its outputs, as
    the reference code's ``grad_outputs=ones`` does. The graph is kept (``create_graph``)
    so the penalty can be back-propagated into the critic. The caller multiplies by its
    weight (lambda = 10 in the paper).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    a = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    points = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    scores = critic(points)
    (grads,) = autograd.grad(scores.sum(), points, create_graph=True)
    return (grads.flatten(1).norm(2, dim=1) - 1).square().mean()


def pyramid_sizes(max_size: int, min_size: int, scale_factor: float) -> list[int]:
    """Square side of every scale, coarsest first, as SinGAN/TDG choose them: the fewest
    scales whose ratio between neighbours is at least ``scale_factor``, the ratio then
    spread evenly so the coarsest side is ``min_size`` and the finest ``max_size``."""
    if not 0 < scale_factor < 1:
        raise ValueError(f"scale_factor={scale_factor} must lie in (0, 1)")
    if not 0 < min_size <= max_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}")
    if min_size == max_size:
        return [max_size]
    count = math.ceil(math.log(min_size / max_size) / math.log(scale_factor)) + 1
    ratio = (min_size / max_size) ** (1 / (count - 1))
    sizes = [round(max_size * ratio ** (count - 1 - i)) for i in range(count)]
    sizes[0], sizes[-1] = min_size, max_size
    return sizes


def resize_square(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (N,C,H,W) to (N,C,size,size), antialiased when shrinking."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < max(images.shape[-2:])
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
    )


def image_pyramid(images: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """One resized copy of ``images`` per side in ``sizes`` (each from the original, not from
    the previous level, so no resampling error accumulates)."""
    return [resize_square(images, s) for s in sizes]


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of ``modules`` excluded from autograd inside the block (a generator step
    back-propagates through the discriminator without accumulating its gradients)."""
    saved = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, flags in zip(modules, saved, strict=True):
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)


# --- Gulrajani et al.'s residual GAN (WGAN-GP, 2017), the networks of f-AnoGAN ------------


def layer_norm_2d(channels: int) -> nn.GroupNorm:
    """Layer normalisation over (C, H, W) with a per-channel scale and offset: the critic's
    normalisation in WGAN-GP's code (``tflib`` Layernorm over axes [1, 2, 3]), which avoids
    BatchNorm's coupling of the samples that the gradient penalty assumes away."""
    return nn.GroupNorm(1, channels)


def upsample_2x(x: Tensor) -> Tensor:
    """Nearest-neighbour 2x upsampling: ``depth_to_space`` of four stacked copies, which is
    what WGAN-GP's ``UpsampleConv`` does before its convolution."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def mean_pool_2x(x: Tensor) -> Tensor:
    """The mean of every 2x2 block (WGAN-GP's ``ConvMeanPool``/``MeanPoolConv`` pooling)."""
    return F.avg_pool2d(x, 2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block of WGAN-GP's 64x64 ResNet (``ResidualBlock`` in its
    code): ``shortcut(x) + conv2(relu(norm2(conv1(relu(norm1(x))))))``.

    ``resample="down"``: conv1 keeps the channels, conv2 changes them and is followed by
    2x2 mean pooling; the shortcut pools, then a 1x1 convolution. ``"up"``: nearest 2x
    upsampling before conv1, which changes the channels; the shortcut upsamples, then a 1x1
    convolution. ``None``: no resampling; identity shortcut when the channels agree.
    ``norm`` builds the normalisation layers (BatchNorm in generator and encoder,
    :func:`layer_norm_2d` in the critic). conv1 has no bias, as in the reference code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        resample: str | None = None,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if resample not in ("up", "down", None):
            raise ValueError(f"resample must be 'up', 'down' or None, got {resample!r}")
        self.resample = resample
        pad = kernel_size // 2
        middle = out_channels if resample == "up" else in_channels
        self.norm1 = norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, middle, kernel_size, padding=pad, bias=False)
        self.norm2 = norm(middle)
        self.conv2 = nn.Conv2d(middle, out_channels, kernel_size, padding=pad)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels and resample is None
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            shortcut = self.shortcut(mean_pool_2x(x))
        elif self.resample == "up":
            shortcut = self.shortcut(upsample_2x(x))
        else:
            shortcut = self.shortcut(x)
        h = F.relu(self.norm1(x))
        if self.resample == "up":
            h = upsample_2x(h)
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        if self.resample == "down":
            h = mean_pool_2x(h)
        return shortcut + h
