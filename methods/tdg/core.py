"""TDG: a hierarchy of transformation-discriminating patch-GANs (Sheynin, Benaim & Wolf,
"A Hierarchical Transformation-Discriminating Generative Model for Few Shot Anomaly
Detection", ICCV 2021). Pure torch; no harness imports.

Training (``TDG.fit``), coarse to fine over an image pyramid of the K normal images, as in
SinGAN: scale n has a generator G_n that turns noise plus the upsampled output of the
coarser scales into an image (conditioned on the index of the training image it imitates,
a constant extra input channel) and a patch discriminator D_n with T + 1 outputs per patch:
one per transformation of a fixed set, and "fake".

- D_n: cross-entropy over patches; real images under transformation t are labelled t,
  generated images under any transformation are labelled "fake".
- G_n: cross-entropy pushing its transformed samples to be labelled with the applied
  transformation (i.e. judged real), plus ``alpha`` x MSE of its reconstruction of each
  training image from fixed noise (SinGAN's reconstruction loss).

Scoring (``TDG.score``) uses the discriminators only: at every scale the test image is
shown under every transformation t; the softmax over the T transformation logits (the fake
logit dropped) gives each patch's probability of the correct t. Per scale and t the mean of
the lowest ``fraction`` of those probabilities is a normality vote; the anomaly score is one
minus the votes averaged over t and scales. The map averages ``1 - p`` per patch, mapped
back through each transformation and upsampled, over t and scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from fsad_methods.common.augment import regad_views
from fsad_methods.common.gan import (
    PatchDiscriminator,
    ResidualPatchGenerator,
    frozen,
    generator_padding,
    image_pyramid,
    init_gan_weights,
    pyramid_sizes,
    receptive_field,
)
from fsad_methods.tdg.transforms import Transform, all_pairs, transform_pairs, transform_set

KERNEL = 3
NOISE_CHANNELS = 3
MAX_WIDTH = 128  # the width doubles every 4 scales up to this cap (official code)
SUPPORT_VIEWS = ("none", "regad")


@dataclass(frozen=True)
class TDGConfig:
    """Every setting of the model; the plugin builds it from its parameters."""

    transforms: str = "rotations"
    image_size: int = 64  # side of the finest scale (the official max_size)
    min_size: int = 25  # side of the coarsest scale
    scale_factor: float = 0.75  # at most this ratio between neighbouring scales
    width: int = 32  # channels of every conv at scales 0-3 (nfc); doubles every 4 scales
    num_layers: int = 5
    iterations: int = 5000  # per scale
    d_steps: int = 3
    g_steps: int = 3
    lr_d: float = 5e-4
    lr_g: float = 5e-4
    beta1: float = 0.5
    lr_gamma: float = 0.1
    d_decay_at: float = 0.1  # learning-rate drop after this share of iterations (500/5000)
    g_decay_at: float = 0.2  # (1000/5000)
    alpha: float = 100.0  # reconstruction weight
    noise_amp: float = 0.1  # noise amplitude relative to the coarser scales' error
    pairs_per_step: int = 0  # (image, transformation) pairs per step; 0 = all K x T
    fraction: float = 0.1  # share of lowest-scoring patches averaged into a vote
    support_views: str = "none"  # "regad": train on RegAD's 22 views of each support (TDG+)

    def __post_init__(self) -> None:
        transform_set(self.transforms)  # raises on an unknown name
        field_ = receptive_field(self.num_layers, KERNEL)
        if self.min_size < field_:
            raise ValueError(
                f"TDG: min_size={self.min_size} is smaller than the discriminator's "
                f"{field_}-pixel patch; use min_size >= {field_} or fewer num_layers"
            )
        pyramid_sizes(self.image_size, self.min_size, self.scale_factor)  # raises if invalid
        for name in ("width", "iterations", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"TDG: {name}={getattr(self, name)} must be at least 1")
        for name in ("d_steps", "g_steps", "pairs_per_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"TDG: {name}={getattr(self, name)} must not be negative")
        if self.support_views not in SUPPORT_VIEWS:
            raise ValueError(
                f"TDG: support_views={self.support_views!r}; use one of {SUPPORT_VIEWS}"
            )
        if not 0 < self.fraction <= 1:
            raise ValueError(f"TDG: fraction={self.fraction} must lie in (0, 1]")

    @property
    def sizes(self) -> list[int]:
        return pyramid_sizes(self.image_size, self.min_size, self.scale_factor)

    def width_at(self, scale: int) -> int:
        return min(self.width * 2 ** (scale // 4), MAX_WIDTH)


@dataclass
class Scale:
    """One trained level: its networks, per-image noise amplitude and reconstruction noise."""

    size: int
    generator: ResidualPatchGenerator
    discriminator: PatchDiscriminator
    noise_amp: Tensor  # (K,1,1,1)
    z_opt: Tensor  # (K,3,size,size) fixed noise of the reconstruction path


@dataclass
class TrainLog:
    """Last losses of each scale, for diagnostics."""

    d_loss: list[float] = field(default_factory=list)
    g_adv: list[float] = field(default_factory=list)
    g_rec: list[float] = field(default_factory=list)


def to_gan_range(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], the generators' tanh range."""
    return (images * 2 - 1).clamp(-1, 1)


def patch_cross_entropy(logits: Tensor, labels: Tensor | int) -> Tensor:
    """Mean cross-entropy over every patch of (P, C, h, w) logits; one label per sample."""
    p, _, h, w = logits.shape
    if isinstance(labels, int):
        target = torch.full((p, h, w), labels, dtype=torch.long, device=logits.device)
    else:
        target = labels.view(p, 1, 1).expand(p, h, w)
    return F.cross_entropy(logits, target)


class TDG:
    """The model of one episode: ``fit`` on K normal images, then ``score``."""

    def __init__(self, config: TDGConfig, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.transforms: tuple[Transform, ...] = transform_set(config.transforms)
        self.pad = generator_padding(config.num_layers, KERNEL)
        self.scales: list[Scale] = []
        self.log = TrainLog()

    # ----------------------------------------------------------------- generation
    def _noise(self, scale: int, count: int, size: int, gen: torch.Generator) -> Tensor:
        """Gaussian noise; greyscale (one channel repeated) at the coarsest scale."""
        channels = 1 if scale == 0 else NOISE_CHANNELS
        z = torch.randn(count, channels, size, size, generator=gen).to(self.device)
        return z.expand(count, NOISE_CHANNELS, size, size)

    def _generate(
        self, g: ResidualPatchGenerator, noise: Tensor, prev: Tensor, amp: Tensor, ids: Tensor
    ) -> Tensor:
        """G(amp * z + prev, prev) for the training images ``ids`` (their index is the
        conditioning channel), inputs zero-padded so the output keeps the size."""
        pad = [self.pad] * 4
        prev_p = F.pad(prev, pad)
        x = amp * F.pad(noise, pad) + prev_p
        id_map = ids.to(x).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return g(torch.cat([x, id_map], dim=1), prev_p)

    def _upsample(self, x: Tensor, scale: int) -> Tensor:
        size = self.config.sizes[scale]
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def _coarser_output(
        self, scale: int, ids: Tensor, gen: torch.Generator | None, reconstruct: bool = False
    ) -> Tensor:
        """Output of scales 0..scale-1 for images ``ids``, upsampled to ``scale``: a random
        sample, or with ``reconstruct`` the fixed-noise reconstruction. Zeros at scale 0."""
        size0 = self.config.sizes[0]
        x = torch.zeros(len(ids), NOISE_CHANNELS, size0, size0, device=self.device)
        for m in range(scale):
            level = self.scales[m]
            if reconstruct:
                z = level.z_opt[ids]
            else:
                assert gen is not None
                z = self._noise(m, len(ids), level.size, gen)
            y = self._generate(level.generator, z, x, level.noise_amp[ids], ids)
            x = self._upsample(y, m + 1)
        return x

    # ----------------------------------------------------------------- training
    def _networks(
        self, scale: int, gen: torch.Generator
    ) -> tuple[ResidualPatchGenerator, PatchDiscriminator]:
        """New G and D; warm-started from the previous scale when the width is unchanged."""
        cfg, width = self.config, self.config.width_at(scale)
        g = ResidualPatchGenerator(NOISE_CHANNELS + 1, 3, width, cfg.num_layers, KERNEL)
        d = PatchDiscriminator(3, len(self.transforms) + 1, width, cfg.num_layers, KERNEL)
        if scale and cfg.width_at(scale - 1) == width:
            g.load_state_dict(self.scales[-1].generator.state_dict())
            d.load_state_dict(self.scales[-1].discriminator.state_dict())
        else:
            init_gan_weights(g, gen)
            init_gan_weights(d, gen)
        return g.to(self.device), d.to(self.device)

    def _pairs(self, count: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(image, transformation) pairs of one step, the images they use (sorted) and the
        pairs with each image replaced by its position among those.

        All K x T pairs (the official schedule), or ``pairs_per_step`` of them drawn without
        replacement; the generator then runs on the images drawn only."""
        pairs = all_pairs(count, len(self.transforms))
        limit = self.config.pairs_per_step
        if limit and limit < len(pairs):
            pairs = pairs[torch.randperm(len(pairs), generator=gen)[:limit]]
        used = pairs[:, 0].unique()
        local = torch.stack([torch.searchsorted(used, pairs[:, 0].contiguous()), pairs[:, 1]], 1)
        return pairs, used, local

    def _train_scale(self, scale: int, real: Tensor, gen: torch.Generator) -> None:
        cfg, count, size = self.config, len(real), real.shape[-1]
        fake_label = len(self.transforms)
        everyone = torch.arange(count)
        g, d = self._networks(scale, gen)
        z_opt = self._noise(0, 1, size, gen).expand(count, -1, -1, -1)  # one grey noise for all
        if scale == 0:
            amp = torch.ones(count, 1, 1, 1, device=self.device)
            z_prev = torch.zeros_like(real)
        else:
            z_prev = self._coarser_output(scale, everyone, None, reconstruct=True)
            amp = cfg.noise_amp * (real - z_prev).abs().flatten(1).mean(1).view(-1, 1, 1, 1)
        opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
        opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
        sched_d = torch.optim.lr_scheduler.MultiStepLR(
            opt_d, [max(1, round(cfg.d_decay_at * cfg.iterations))], cfg.lr_gamma
        )
        sched_g = torch.optim.lr_scheduler.MultiStepLR(
            opt_g, [max(1, round(cfg.g_decay_at * cfg.iterations))], cfg.lr_gamma
        )
        g.train()
        d.train()
        pairs, used, local = self._pairs(count, gen)
        prev = z_prev[used]
        d_loss = g_adv = g_rec = torch.zeros(())
        for _ in range(cfg.iterations):
            noise = self._noise(scale, count, size, gen)
            for _ in range(cfg.d_steps):
                pairs, used, local = self._pairs(count, gen)
                batch, labels = transform_pairs(real, self.transforms, pairs)
                d_real = patch_cross_entropy(d(batch), labels)
                prev = self._coarser_output(scale, used, gen) if scale else z_prev[used]
                with torch.no_grad():
                    fake = self._generate(g, noise[used], prev, amp[used], used)
                fakes, _ = transform_pairs(fake, self.transforms, local)
                d_loss = d_real + patch_cross_entropy(d(fakes), fake_label)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            for _ in range(cfg.g_steps):
                fake = self._generate(g, noise[used], prev, amp[used], used)
                fakes, labels = transform_pairs(fake, self.transforms, local)
                with frozen(d):
                    g_adv = patch_cross_entropy(d(fakes), labels)
                rec = self._generate(g, z_opt[used], z_prev[used], amp[used], used)
                g_rec = cfg.alpha * F.mse_loss(rec, real[used])
                opt_g.zero_grad(set_to_none=True)
                (g_adv + g_rec).backward()
                opt_g.step()
            sched_d.step()
            sched_g.step()
        g.eval().requires_grad_(False)
        d.eval().requires_grad_(False)
        self.scales.append(Scale(size, g, d, amp, z_opt))
        self.log.d_loss.append(float(d_loss.detach()))
        self.log.g_adv.append(float(g_adv.detach()))
        self.log.g_rec.append(float(g_rec.detach()))

    def fit(self, support: Tensor, gen: torch.Generator) -> TDG:
        """Train every scale, coarse to fine, on (K,3,H,W) images in [0, 1] (with
        ``support_views="regad"`` on their 22 K RegAD views, each its own training image)."""
        self.scales, self.log = [], TrainLog()
        if self.config.support_views == "regad":
            support = regad_views(support.float())
        reals = image_pyramid(to_gan_range(support.float().to(self.device)), self.config.sizes)
        for scale, real in enumerate(reals):
            self._train_scale(scale, real, gen)
        return self

    # ----------------------------------------------------------------- scoring
    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) in [0, 1] -> image scores (B,) and maps (B,H,W), higher = anomalous."""
        if not self.scales:
            raise RuntimeError("TDG.score called before fit")
        cfg, out_size = self.config, tuple(images.shape[-2:])
        pyramid = image_pyramid(to_gan_range(images.float().to(self.device)), cfg.sizes)
        border = receptive_field(cfg.num_layers, KERNEL) // 2
        num_t = len(self.transforms)
        scores = torch.zeros(len(images), device=self.device)
        maps = torch.zeros(len(images), *out_size, device=self.device)
        for level, x in zip(self.scales, pyramid, strict=True):
            votes, level_maps = [], []
            for t, transform in enumerate(self.transforms):
                logits = level.discriminator(transform.apply(x))[:, :num_t]
                correct = logits.softmax(dim=1)[:, t]  # (B,h,w)
                lowest = max(1, int(correct[0].numel() * cfg.fraction))
                votes.append(correct.flatten(1).topk(lowest, dim=1, largest=False).values.mean(1))
                wrong = F.pad((1 - correct)[:, None], [border] * 4, mode="replicate")
                level_maps.append(transform.invert_map(wrong))
            scores += 1 - torch.stack(votes).mean(0)
            level_map = torch.stack(level_maps).mean(0)
            maps += F.interpolate(level_map, size=out_size, mode="bilinear", align_corners=False)[
                :, 0
            ]
        return scores / len(self.scales), maps / len(self.scales)
