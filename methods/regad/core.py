"""RegAD (Huang et al., ECCV 2022) in pure torch; no harness imports.

Registration as the proxy task: three backbone stages, each followed by a spatial
transformer, form the encoder of a SimSiam-style siamese network trained on pairs of normal
images of the same category (the *other* categories) to make their features agree
position by position. At test time the K support images are augmented, their registered
features (warped back to the image frame) fit one Gaussian per position as in PaDiM, and a
test position scores its Mahalanobis distance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.features import concat_at_finest
from fsad_methods.common.gaussian import PositionGaussians
from fsad_methods.common.maps import upsample_and_smooth
from fsad_methods.regad.stn import SpatialTransformer, compose, invert, warp


def _head(channels: int, depth: int) -> nn.Sequential:
    """1x1-conv MLP: (conv-BN-ReLU) x (depth-1), then a plain conv (SimSiam's heads)."""
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)]
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Conv2d(channels, channels, 1))
    return nn.Sequential(*layers)


class RegADNet(nn.Module):
    """Backbone stages interleaved with STNs, plus the siamese encoder and predictor heads.

    ``stages`` applied in order map normalised images to the stage features (finest first);
    ``channels`` are their widths; ``mean``/``std`` normalise [0, 1] images. The first
    ``frozen_stages`` stages keep their weights and BatchNorm statistics: the high-resolution
    first stage costs the most to back-propagate through on a CPU.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        channels: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        stn_mode: str = "rotation_scale",
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.frozen_stages = frozen_stages
        for stage in self.stages[:frozen_stages]:
            stage.requires_grad_(False)
        self.stns = nn.ModuleList(SpatialTransformer(c, stn_mode) for c in channels)
        self.encoder = _head(channels[-1], 3)
        self.predictor = _head(channels[-1], 2)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> RegADNet:
        super().train(mode)
        for stage in self.stages[: self.frozen_stages]:
            stage.eval()
        return self

    def aligned(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """STN outputs of every stage and their warps (B,2,3)."""
        x = (images - self.mean) / self.std
        features, thetas = [], []
        for index, (stage, stn) in enumerate(zip(self.stages, self.stns, strict=True)):
            with torch.set_grad_enabled(torch.is_grad_enabled() and index >= self.frozen_stages):
                x = stage(x)
            x, theta = stn(x)
            features.append(x)
            thetas.append(theta)
        return features, thetas

    def siamese(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output z and predictor output p on the last registered stage."""
        features, _ = self.aligned(images)
        z = self.encoder(features[-1])
        return z, self.predictor(z)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Registered features warped back to the image frame, concatenated at the finest grid.

        Stage i saw its input through warps 1..i, so undoing them (one composed warp,
        inverse i first) puts every feature at the image position it describes.
        """
        features, thetas = self.aligned(images)
        back, undo = [], None
        for feature, theta in zip(features, thetas, strict=True):
            undo = invert(theta) if undo is None else compose(invert(theta), undo)
            back.append(warp(feature, undo))
        return concat_at_finest(back)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean over positions of -cos(p, z) along channels; z is a target (no gradient)."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def pair_loss(net: RegADNet, first: Tensor, second: Tensor) -> Tensor:
    """Symmetric SimSiam loss with stop-gradient: -(cos(p1, z2) + cos(p2, z1)) / 2."""
    z, p = net.siamese(torch.cat([first, second]))
    z1, z2 = z.chunk(2)
    p1, p2 = p.chunk(2)
    return (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2


@dataclass(frozen=True)
class TrainSettings:
    iterations: int
    batch_size: int = 16
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    val_pairs: int = 32
    eval_every: int = 25


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    val_iterations: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    best_iteration: int = -1  # -1: the last state was kept (no validation images)


def split_images(
    images: Mapping[str, Tensor], fraction: float, generator: torch.Generator
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per category, hold out ``fraction`` of the images (at least 2, or none) for validation."""
    train, val = {}, {}
    for name, batch in images.items():
        order = torch.randperm(len(batch), generator=generator)
        n_val = int(len(batch) * fraction)
        if n_val >= 2 and len(batch) - n_val >= 2:
            val[name] = batch[order[:n_val]]
            train[name] = batch[order[n_val:]]
        else:
            train[name] = batch
    return train, val


def sample_pairs(
    images: Mapping[str, Tensor], n: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """n pairs of two different images of one category, categories drawn uniformly."""
    names = [name for name, batch in images.items() if len(batch) >= 2]
    if not names:
        raise ValueError("RegAD needs a category with at least 2 normal images to form pairs")
    first, second = [], []
    for index in torch.randint(len(names), (n,), generator=generator).tolist():
        batch = images[names[index]]
        a, b = torch.randperm(len(batch), generator=generator)[:2].tolist()
        first.append(batch[a])
        second.append(batch[b])
    return torch.stack(first), torch.stack(second)


@torch.no_grad()
def validation_loss(net: RegADNet, pairs: tuple[Tensor, Tensor], batch: int) -> float:
    net.eval()
    total = 0.0
    for start in range(0, len(pairs[0]), batch):
        a, b = pairs[0][start : start + batch], pairs[1][start : start + batch]
        total += float(pair_loss(net, a, b)) * len(a)
    net.train()
    return total / len(pairs[0])


def train_registration(
    net: RegADNet,
    images: Mapping[str, Tensor],
    settings: TrainSettings,
    generator: torch.Generator,
) -> TrainLog:
    """SGD with a cosine schedule on same-category pairs; keeps the best validation state.

    Validation pairs come from held-out images of the same (training) categories, so model
    selection never looks at the category the model will be tested on. Zero iterations leave
    the network as built (the no-meta-training ablation).
    """
    if settings.iterations == 0:
        net.eval()
        return TrainLog()
    train, val = split_images(images, settings.val_fraction, generator)
    val_pairs = sample_pairs(val, settings.val_pairs, generator) if val else None
    optimiser = torch.optim.SGD(
        net.parameters(), lr=settings.lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / settings.iterations))
    )
    log = TrainLog()
    best: tuple[float, dict[str, Tensor]] | None = None
    net.train()
    for step in range(1, settings.iterations + 1):
        first, second = sample_pairs(train, settings.batch_size, generator)
        loss = pair_loss(net, first, second)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        log.losses.append(float(loss.detach()))
        if val_pairs is not None and (
            step % settings.eval_every == 0 or step == settings.iterations
        ):
            value = validation_loss(net, val_pairs, settings.batch_size)
            log.val_iterations.append(step)
            log.val_losses.append(value)
            if best is None or value < best[0]:
                best = (value, copy.deepcopy(net.state_dict()))
                log.best_iteration = step
    if best is not None:
        net.load_state_dict(best[1])
    net.eval()
    return log


def augment_support(images: Tensor, copies: int, generator: torch.Generator) -> Tensor:
    """The images plus ``copies`` random transforms of each, RegAD's test-time family.

    Each copy is one of: rotation by up to 45 degrees, translation by up to 10% of the side,
    horizontal flip, greyscale, or a multiple of 90 degrees, chosen uniformly.
    """
    out = [images]
    for _ in range(copies):
        kind = int(torch.randint(5, (1,), generator=generator))
        if kind == 0:
            angle = (torch.rand(len(images), generator=generator) * 2 - 1) * math.pi / 4
            cos, sin = torch.cos(angle), torch.sin(angle)
            zero = torch.zeros_like(angle)
            theta = torch.stack([cos, -sin, zero, sin, cos, zero], 1).view(-1, 2, 3)
            out.append(warp(images, theta.to(images)))
        elif kind == 1:
            shift = (torch.rand(len(images), 2, generator=generator) * 2 - 1) * 0.2
            theta = torch.eye(2, 3).repeat(len(images), 1, 1)
            theta[:, :, 2] = shift
            out.append(warp(images, theta.to(images)))
        elif kind == 2:
            out.append(images.flip(-1))
        elif kind == 3:
            out.append(images.mean(dim=1, keepdim=True).expand_as(images))
        else:
            turns = int(torch.randint(1, 4, (1,), generator=generator))
            out.append(images.rot90(turns, dims=(-2, -1)))
    return torch.cat(out)


def resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)


class RegADScorer:
    """Test time: Gaussians on augmented support features, Mahalanobis maps, smoothing."""

    def __init__(
        self, net: RegADNet, input_size: int, copies: int, eps: float = 0.01, sigma: float = 4.0
    ) -> None:
        self.net = net.eval()
        self.input_size = input_size
        self.copies = copies
        self.eps = eps
        self.sigma = sigma
        self.gaussians: PositionGaussians | None = None

    @torch.no_grad()
    def embed(self, images: Tensor, batch: int = 32) -> Tensor:
        small = resize(images, self.input_size)
        return torch.cat(
            [self.net.embed(small[i : i + batch]) for i in range(0, len(small), batch)]
        )

    @torch.no_grad()
    def fit(self, support: Tensor, generator: torch.Generator) -> None:
        augmented = augment_support(resize(support, self.input_size), self.copies, generator)
        self.gaussians = PositionGaussians.fit(self.embed(augmented), "eps", self.eps)

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.gaussians is None:
            raise RuntimeError("RegADScorer.score called before fit")
        distances = self.gaussians.mahalanobis(self.embed(images))
        maps = upsample_and_smooth(distances, tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).max(dim=1).values, maps
