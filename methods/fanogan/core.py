"""f-AnoGAN (Schlegl, Seeböck, Waldstein, Langs & Schmidt-Erfurth, Medical Image Analysis
2019) in pure torch; no harness imports.

Two training stages on normal images only, then a one-pass score.

1. **WGAN-GP** (Gulrajani et al., 2017): a residual generator G (z ~ N(0, I) -> image in
   [-1, 1]) and a residual critic D (layer-normalised) trained with the Wasserstein loss and
   gradient penalty (weight 10), 5 critic updates per generator update, Adam 1e-4 with
   betas (0, 0.9): the official ``wgangp_64x64.py``.
2. **izif encoder**: an encoder E with the critic's architecture (BatchNorm instead of
   layer norm) maps images to z; G and D frozen, E is trained on
   ``L = mean (x - G(E(x)))^2 + kappa * mean (f(x) - f(G(E(x))))^2`` where f is the
   critic's last feature layer (before its linear output); RMSProp 5e-5, kappa 1: the
   official ``z_encoding_izif.py``.
3. **Score**: the same two terms per image, ``A(x) = A_R(x) + kappa * A_D(x)``. The map is
   the per-pixel residual ``|x - G(E(x))|`` (mean over colour channels), upsampled to the
   input size and Gaussian-smoothed.

Network sizes follow the official 64 px configuration generalised to any power-of-two
side >= 8: log2(side / 4) residual blocks, channel multipliers (generator) 8, 4, 2, 1 and
(critic, encoder) 2, 4, 8, 8 times ``dim``, capped at 8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.augment import regad_views
from fsad_methods.common.encoders import seeded_init
from fsad_methods.common.gan import ResidualBlock, frozen, gradient_penalty, layer_norm_2d
from fsad_methods.common.maps import upsample_and_smooth
from fsad_methods.common.reconstruction import resize

BN_MOMENTUM = 0.01  # TensorFlow's batch-norm decay 0.99, which the official code used
SUPPORT_VIEWS = ("regad", "none")


def num_blocks(image_size: int) -> int:
    """Residual blocks between 4x4 and ``image_size`` (a power of two, at least 8)."""
    blocks = round(math.log2(image_size / 4))
    if image_size < 8 or 4 * 2**blocks != image_size:
        raise ValueError(f"image_size={image_size} must be a power of two, at least 8")
    return blocks


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _down_channels(blocks: int, dim: int) -> list[int]:
    """Channels after the input convolution and after each down block: d, 2d, 4d, 8d, 8d."""
    return [dim] + [dim * min(2 ** (i + 1), 8) for i in range(blocks)]


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, C, S, S) in [-1, 1]."""

    def __init__(self, image_size: int, dim: int, z_dim: int, channels: int = 3) -> None:
        super().__init__()
        blocks = num_blocks(image_size)
        widths = [8 * dim] + [dim * min(2 ** (blocks - 1 - i), 8) for i in range(blocks)]
        self.start = widths[0]
        self.input = nn.Linear(z_dim, 4 * 4 * widths[0])
        self.blocks = nn.Sequential(
            *(ResidualBlock(widths[i], widths[i + 1], "up", _batch_norm) for i in range(blocks))
        )
        self.norm = _batch_norm(widths[-1])
        self.output = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.input(z).view(len(z), self.start, 4, 4)
        x = F.relu(self.norm(self.blocks(x)))
        return torch.tanh(self.output(x))


class _DownNet(nn.Module):
    """Input convolution, down blocks to 4x4, flattened features, linear output."""

    def __init__(
        self,
        image_size: int,
        dim: int,
        outputs: int,
        norm: Callable[[int], nn.Module],
        channels: int = 3,
    ) -> None:
        super().__init__()
        widths = _down_channels(num_blocks(image_size), dim)
        self.input = nn.Conv2d(channels, dim, 3, padding=1)
        self.blocks = nn.Sequential(
            *(ResidualBlock(widths[i], widths[i + 1], "down", norm) for i in range(len(widths) - 1))
        )
        self.feature_dim = 4 * 4 * widths[-1]
        self.output = nn.Linear(self.feature_dim, outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.blocks(self.input(x)).flatten(1)


class Critic(_DownNet):
    """Images -> (N,) critic values; ``features`` is f(x), the izif feature residual's f."""

    def __init__(self, image_size: int, dim: int, channels: int = 3) -> None:
        super().__init__(image_size, dim, 1, layer_norm_2d, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))[:, 0]


class Encoder(_DownNet):
    """Images -> z (N, z_dim): the critic's architecture with BatchNorm, linear output."""

    def __init__(self, image_size: int, dim: int, z_dim: int, channels: int = 3) -> None:
        super().__init__(image_size, dim, z_dim, _batch_norm, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))


@dataclass(frozen=True)
class GANSchedule:
    """WGAN-GP: ``iterations`` generator updates, ``critic_iters`` critic updates each."""

    iterations: int = 300
    critic_iters: int = 5
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    gp_weight: float = 10.0


@dataclass(frozen=True)
class EncoderSchedule:
    """izif: ``iterations`` RMSProp updates of the encoder on batches of real images."""

    iterations: int = 300
    batch_size: int = 64
    lr: float = 5e-5
    kappa: float = 1.0


@dataclass(frozen=True)
class FAnoGANConfig:
    image_size: int = 64
    dim: int = 64
    z_dim: int = 128
    gan: GANSchedule = field(default_factory=GANSchedule)
    encoder: EncoderSchedule = field(default_factory=EncoderSchedule)
    support_views: str = "regad"
    sigma: float = 4.0

    def __post_init__(self) -> None:
        num_blocks(self.image_size)
        if self.support_views not in SUPPORT_VIEWS:
            raise ValueError(f"support_views={self.support_views!r}; use one of {SUPPORT_VIEWS}")


def izif_terms(
    images: Tensor, generator: Generator, critic: Critic, encoder: Encoder
) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: the image residual ``mean (x - x')^2``, the critic-feature residual
    ``mean (f(x) - f(x'))^2`` with ``x' = G(E(x))``, and x' itself."""
    recon = generator(encoder(images))
    residual = (images - recon).square().flatten(1).mean(dim=1)
    feature = (critic.features(images) - critic.features(recon)).square().mean(dim=1)
    return residual, feature, recon


def _draw(images: Tensor, count: int, gen: torch.Generator) -> Tensor:
    """``count`` images drawn with replacement (a K-shot set is smaller than a batch)."""
    pick = torch.randint(0, len(images), (count,), generator=gen)
    return images[pick.to(images.device)]


def _noise(count: int, z_dim: int, gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.randn(count, z_dim, generator=gen).to(device)


def train_wgan_gp(
    generator: Generator,
    critic: Critic,
    images: Tensor,
    schedule: GANSchedule,
    gen: torch.Generator,
) -> dict[str, list[float]]:
    """The official loop: each iteration one generator update (none at the first), then
    ``critic_iters`` critic updates each on a fresh real batch."""
    s, device = schedule, images.device
    z_dim = generator.input.in_features
    opt_g = torch.optim.Adam(generator.parameters(), lr=s.lr, betas=s.betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=s.lr, betas=s.betas)
    log: dict[str, list[float]] = {"critic": [], "generator": []}
    generator.train()
    critic.train()
    for iteration in range(s.iterations):
        if iteration > 0:
            with frozen(critic):
                fake = generator(_noise(s.batch_size, z_dim, gen, device))
                g_loss = -critic(fake).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            log["generator"].append(g_loss.item())
        for _ in range(s.critic_iters):
            real = _draw(images, s.batch_size, gen)
            with torch.no_grad():
                fake = generator(_noise(s.batch_size, z_dim, gen, device))
            wasserstein = critic(fake).mean() - critic(real).mean()
            penalty = gradient_penalty(critic, real, fake, gen)
            d_loss = wasserstein + s.gp_weight * penalty
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            log["critic"].append(d_loss.item())
    generator.eval().requires_grad_(False)
    critic.eval().requires_grad_(False)
    return log


def train_izif(
    encoder: Encoder,
    generator: Generator,
    critic: Critic,
    images: Tensor,
    schedule: EncoderSchedule,
    gen: torch.Generator,
) -> list[float]:
    """The izif encoder training with G and D frozen in eval mode. RMSProp with TensorFlow's
    defaults (decay 0.9, epsilon 1e-10), as the official code."""
    optimiser = torch.optim.RMSprop(encoder.parameters(), lr=schedule.lr, alpha=0.9, eps=1e-10)
    losses = []
    encoder.train()
    for _ in range(schedule.iterations):
        real = _draw(images, schedule.batch_size, gen)
        residual, feature, _ = izif_terms(real, generator, critic, encoder)
        loss = residual.mean() + schedule.kappa * feature.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    encoder.eval().requires_grad_(False)
    return losses


class FAnoGAN:
    """One episode: ``fit`` trains G, D and E from scratch on K normal images; ``score``."""

    def __init__(self, config: FAnoGANConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.generator: Generator | None = None
        self.critic: Critic | None = None
        self.encoder: Encoder | None = None
        self.log: dict[str, list[float]] = {}

    def training_set(self, support: Tensor) -> Tensor:
        """Images in [-1, 1] at ``image_size`` (with RegAD's 22 views of each support)."""
        images = resize(support.float(), self.config.image_size)
        if self.config.support_views == "regad":
            images = regad_views(images)
        return (images * 2 - 1).clamp(-1, 1)

    def fit(self, support: Tensor, gen: torch.Generator) -> FAnoGAN:
        cfg = self.config
        images = self.training_set(support.to(self.device))
        with seeded_init(gen):
            generator = Generator(cfg.image_size, cfg.dim, cfg.z_dim)
            critic = Critic(cfg.image_size, cfg.dim)
            encoder = Encoder(cfg.image_size, cfg.dim, cfg.z_dim)
        generator, critic, encoder = (m.to(self.device) for m in (generator, critic, encoder))
        with torch.enable_grad():
            self.log = train_wgan_gp(generator, critic, images, cfg.gan, gen)
            self.log["encoder"] = train_izif(encoder, generator, critic, images, cfg.encoder, gen)
        self.generator, self.critic, self.encoder = generator, critic, encoder
        return self

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) in [0, 1] -> scores A(x) (B,) and residual maps (B,H,W) at the input
        size. Every network is in eval mode, so an image's score depends on it alone."""
        if self.generator is None or self.critic is None or self.encoder is None:
            raise RuntimeError("FAnoGAN.score called before fit")
        x = (resize(images.float(), self.config.image_size) * 2 - 1).clamp(-1, 1)
        residual, feature, recon = izif_terms(x, self.generator, self.critic, self.encoder)
        scores = residual + self.config.encoder.kappa * feature
        maps = (x - recon).abs().mean(dim=1)
        maps = upsample_and_smooth(maps, tuple(images.shape[-2:]), self.config.sigma)
        return scores, maps

    def samples(self, count: int, gen: torch.Generator) -> Tensor:
        """Generator samples in [0, 1], for inspection."""
        if self.generator is None:
            raise RuntimeError("FAnoGAN.samples called before fit")
        with torch.no_grad():
            z = _noise(count, self.config.z_dim, gen, self.device)
            return (self.generator(z) + 1) / 2


def parameter_count(modules: Sequence[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
