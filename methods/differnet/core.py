"""DifferNet (Rudolph, Wandt & Rosenhahn, WACV 2021) in pure torch; no harness imports.

A frozen pretrained backbone describes an image by its last stage, globally averaged, at three
image scales (the image, then halved twice), concatenated. A normalizing flow of soft-clamped
affine coupling blocks (``methods/common/flows.py``) maps these descriptors to a standard
normal latent and is trained by maximum likelihood on randomly transformed normal images
(DifferNet: rotations, optionally brightness/contrast/saturation jitter). A test image is
scored on several transformed copies: the mean of ``z**2`` over copies and dimensions, i.e.
the mean latent negative log-likelihood up to constants (the paper's tau(x), computed as the
official code does). Its map is the paper's localisation: the gradient of the training loss
with respect to each transformed copy, rotated back, Gaussian-blurred, absolute values
averaged over copies and channels, squared.

Few-shot "+" variant (RegAD's DiffNet+): the K support images are first expanded with
RegAD's fixed augmented views (``regad_views``), then trained on exactly as DifferNet trains
on a training set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from fsad_methods.common.augment import ColorJitter, RandomRotation, regad_views, rotate
from fsad_methods.common.features import multiscale_pooled
from fsad_methods.common.flows import CouplingFlow, gaussian_nll, mlp_subnet
from fsad_methods.common.maps import gaussian_smooth
from fsad_methods.common.reconstruction import resize

# DifferNet's optimiser settings besides the learning rate (official train.py)
ADAM_BETAS = (0.8, 0.8)
ADAM_EPS = 1e-4
WEIGHT_DECAY = 1e-5
FEATURE_BATCH = 32  # images per backbone call while computing the training features

Extractor = Callable[[Tensor], Sequence[Tensor]]


@dataclass(frozen=True)
class FlowSpec:
    """Coupling blocks, hidden width of the 3-hidden-layer subnetworks, soft clamp alpha."""

    blocks: int = 8
    hidden: int = 2048
    clamp: float = 3.0


@dataclass(frozen=True)
class Schedule:
    """Training: each epoch sees every training image ``n_transforms`` times, transformed.

    ``feature_pool`` caps the distinct transformed copies whose features are computed per
    training image; epochs then cycle through them. None draws fresh copies for every epoch
    (DifferNet's data loader), which costs epochs x n_transforms backbone passes per image.
    """

    epochs: int = 192
    n_transforms: int = 4
    batch_size: int = 24
    lr: float = 2e-4
    feature_pool: int | None = None

    def copies_per_image(self) -> int:
        fresh = self.epochs * self.n_transforms
        return fresh if self.feature_pool is None else min(fresh, self.feature_pool)

    def epoch_copies(self, epoch: int) -> Tensor:
        """Which pooled copies an epoch trains on: the next ``n_transforms`` in turn, each at
        most once per epoch (a smaller pool gives ``feature_pool`` copies an epoch; repeating
        one in the same batch would only repeat its term of the mean loss)."""
        pool = self.copies_per_image()
        per_epoch = min(self.n_transforms, pool)
        return torch.arange(epoch * per_epoch, (epoch + 1) * per_epoch) % pool


@dataclass(frozen=True)
class Transforms:
    """Training transforms; ``test_copies`` fixed rotations score each test image."""

    rotation: RandomRotation = field(default_factory=RandomRotation)
    jitter: ColorJitter = field(default_factory=ColorJitter)
    support_views: bool = True
    test_copies: int = 64

    def train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.jitter(self.rotation(images, generator), generator)

    def test_angles(self) -> Tensor:
        """Evenly spaced angles over the training range: i * 360 / n for full rotations (the
        official code's fixed test rotations), else from -degrees to +degrees."""
        n, degrees = self.test_copies, self.rotation.degrees
        if degrees == 0:
            return torch.zeros(1)
        if degrees >= 180:
            return torch.arange(n) * (360.0 / n)
        return torch.linspace(-degrees, degrees, n) if n > 1 else torch.zeros(1)


class DifferNetModel:
    """``extractor`` maps (N,3,H,W) images in [0,1] to feature maps; only the last is used."""

    def __init__(
        self,
        extractor: Extractor,
        input_size: int = 448,
        scales: int = 3,
        flow: FlowSpec | None = None,
        schedule: Schedule | None = None,
        transforms: Transforms | None = None,
        grad_sigma: float = 3.0,
    ) -> None:
        if input_size >> (scales - 1) < 8:
            raise ValueError(f"input_size {input_size} is too small for {scales} scales")
        self.extractor = extractor
        self.input_size = input_size
        self.scales = scales
        self.flow_spec = flow or FlowSpec()
        self.schedule = schedule or Schedule()
        self.transforms = transforms or Transforms()
        self.grad_sigma = grad_sigma
        self.flow: CouplingFlow | None = None
        self.losses: list[float] = []

    def describe(self, images: Tensor) -> Tensor:
        """(N,3,S,S) -> (N, scales*C) multi-scale pooled descriptors."""
        return multiscale_pooled(self.extractor, images, self.scales)

    def training_set(self, images: Tensor) -> Tensor:
        small = resize(images, self.input_size)
        return regad_views(small) if self.transforms.support_views else small

    @torch.no_grad()
    def training_features(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """(copies, N, D): descriptors of every transformed copy of every training image."""
        copies = []
        for _ in range(self.schedule.copies_per_image()):
            transformed = self.transforms.train(images, generator)
            copies.append(
                torch.cat(
                    [
                        self.describe(transformed[i : i + FEATURE_BATCH])
                        for i in range(0, len(transformed), FEATURE_BATCH)
                    ]
                )
            )
        return torch.stack(copies)

    def _new_flow(self, dim: int, generator: torch.Generator, device: torch.device) -> CouplingFlow:
        """Initialised from the episode's generator, leaving torch's global stream untouched."""
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            spec = self.flow_spec
            flow = CouplingFlow(dim, spec.blocks, mlp_subnet(spec.hidden), spec.clamp)
        return flow.to(device)

    def fit(self, images: Tensor, generator: torch.Generator) -> None:
        train = self.training_set(images)
        features = self.training_features(train, generator)  # (copies, N, D)
        _, n, dim = features.shape
        flow = self._new_flow(dim, generator, features.device)
        optimiser = torch.optim.Adam(
            flow.parameters(),
            lr=self.schedule.lr,
            betas=ADAM_BETAS,
            eps=ADAM_EPS,
            weight_decay=WEIGHT_DECAY,
        )
        s = self.schedule
        self.losses = []
        flow.train()
        with torch.enable_grad():
            for epoch in range(s.epochs):
                order = torch.randperm(n, generator=generator).to(features.device)
                epoch_features = features[s.epoch_copies(epoch).to(features.device)]
                for start in range(0, n, s.batch_size):
                    batch = epoch_features[:, order[start : start + s.batch_size]]
                    z, log_det = flow(batch.reshape(-1, dim))
                    loss = gaussian_nll(z, log_det).mean() / dim
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    self.losses.append(loss.item())
        flow.eval()
        self.flow = flow

    def _score_one(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Score and (S,S) gradient map of one (1,3,S,S) image, from its rotated copies."""
        assert self.flow is not None
        angles = self.transforms.test_angles().to(image.device)
        copies = rotate(image.expand(len(angles), -1, -1, -1), angles).detach()
        copies.requires_grad_(True)
        z, log_det = self.flow(self.describe(copies))
        dim = z.shape[1]
        (grad,) = torch.autograd.grad(gaussian_nll(z, log_det).sum() / dim, copies)
        back = rotate(grad, -angles)  # each copy's gradient in the image's own frame
        n, c, h, w = back.shape
        back = gaussian_smooth(back.reshape(n * c, h, w), self.grad_sigma).reshape(n, c, h, w)
        grad_map = back.abs().mean(dim=(0, 1)).square()
        return z.detach().square().mean(), grad_map.detach()

    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Scores (B,) and gradient maps (B,H,W) at the input size.

        Images are scored one at a time (all copies of one image in one backbone call), so a
        score never depends on the rest of the batch. Needs autograd: callers under
        ``torch.inference_mode`` are handled by re-enabling it here.
        """
        if self.flow is None:
            raise RuntimeError("DifferNetModel.score called before fit")
        scores, maps = [], []
        with torch.inference_mode(False), torch.enable_grad():
            small = resize(images.clone(), self.input_size)
            for i in range(len(small)):
                score, grad_map = self._score_one(small[i : i + 1])
                scores.append(score)
                maps.append(grad_map)
        maps_t = torch.stack(maps)
        if maps_t.shape[-2:] != images.shape[-2:]:
            maps_t = F.interpolate(
                maps_t[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
        return torch.stack(scores), maps_t
