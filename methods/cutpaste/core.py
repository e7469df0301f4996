"""CutPaste (Li, Sohn, Yoon & Pfister, CVPR 2021) in pure torch; no harness imports.

Two stages. (1) Self-supervised representation learning: a pretrained encoder with an MLP
projection head and a linear classifier learns to tell normal images from their CutPaste
(and CutPaste-Scar) augmented copies (``augment.py``). (2) A Gaussian density estimator
(GDE) is fitted to the encoder's pooled representation of the normal images; the anomaly
score is the Mahalanobis distance to it.

Localisation is the paper's patch-level model (its localisation results; Figure 1, bottom): the
same proxy task trained on random square crops ("patches", 64 px of a 256 px image); at test
time every patch at a fixed stride is scored by a GDE fitted on the support images'
patches, each patch's score is spread over the pixels it covers (averaged where patches
overlap) and the map is Gaussian-smoothed (sigma 4 px at 256 px). The paper also shows
GradCAM maps of the image-level model, qualitatively only; those are not implemented.

Few-shot: both proxy tasks are trained on (augmented draws from) the K support images and
both densities are fitted on the K supports (optionally with augmented views).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.encoders import pooled_last_stage, seeded_init
from fsad_methods.common.gaussian import PositionGaussians
from fsad_methods.common.maps import upsample_and_smooth
from fsad_methods.common.reconstruction import resize
from fsad_methods.cutpaste.augment import (
    VARIANTS,
    CutPasteAugment,
    Jitter,
    base_augment,
    proxy_batch,
)

PATCH_CHUNK = 256  # patches per encoder call while scoring


class ProxyNet(nn.Module):
    """Encoder -> pooled representation -> MLP head (Linear, BatchNorm, ReLU per layer) ->
    linear classifier. The GDE reads the pooled representation, not the head."""

    def __init__(
        self, encoder: nn.Module, feature_dim: int, head: Sequence[int], classes: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        layers: list[nn.Module] = []
        width = feature_dim
        for dim in head:
            layers += [nn.Linear(width, dim), nn.BatchNorm1d(dim), nn.ReLU()]
            width = dim
        self.head = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, classes)

    def embed(self, images: Tensor) -> Tensor:
        return pooled_last_stage(self.encoder, images)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.head(self.embed(images)))


@dataclass(frozen=True)
class Schedule:
    """SGD with momentum, cosine decay of the learning rate to 0 over ``steps`` updates;
    each update sees ``batch_size`` draws from the support images, each in every class."""

    steps: int = 60
    batch_size: int = 8
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 3e-5


@dataclass(frozen=True)
class ProxyTask:
    """The augmentations of the proxy task and of the image each sample starts from."""

    variant: str = "3way"  # "binary" (CutPaste), "scar" (CutPaste-Scar), "3way"
    cutpaste: CutPasteAugment = field(default_factory=CutPasteAugment)
    translate: float = 0.1  # base augmentation: shift by up to this share of the side
    jitter: float = 0.1  # base augmentation: colour jitter strength

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown CutPaste variant {self.variant!r}; use one of {VARIANTS}")

    @property
    def classes(self) -> int:
        return 1 + len(VARIANTS[self.variant])


def random_crops(images: Tensor, size: int, gen: torch.Generator) -> Tensor:
    """One random ``size`` x ``size`` crop of each (N,3,H,W) image."""
    n, _, h, w = images.shape
    tops = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return torch.stack(
        [img[:, t : t + size, s : s + size] for img, t, s in zip(images, tops, lefts, strict=True)]
    )


def proxy_samples(
    images: Tensor,
    task: ProxyTask,
    batch_size: int,
    gen: torch.Generator,
    crop: int | None = None,
) -> tuple[Tensor, Tensor]:
    """One training batch: ``batch_size`` draws (with replacement) from ``images``, each
    base-augmented, cropped to ``crop`` px for the patch-level model, then shown in every
    class of the proxy task. Returns (inputs, labels)."""
    pick = torch.randint(0, len(images), (batch_size,), generator=gen)
    base = base_augment(images[pick.to(images.device)], task.translate, Jitter(task.jitter), gen)
    if crop is not None:
        base = random_crops(base, crop, gen)
    return proxy_batch(base, task.cutpaste, task.variant, gen)


def train_proxy(
    net: ProxyNet,
    images: Tensor,
    task: ProxyTask,
    schedule: Schedule,
    gen: torch.Generator,
    crop: int | None = None,
) -> list[float]:
    """Cross-entropy training of ``net`` on the proxy task built from ``images`` (K,3,S,S);
    with ``crop`` the samples are random crops of that side (the patch-level model).
    Returns the loss of every step; leaves ``net`` in eval mode."""
    optimiser = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad],
        lr=schedule.lr,
        momentum=schedule.momentum,
        weight_decay=schedule.weight_decay,
    )
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(schedule.steps, 1))
    losses = []
    net.train()
    with torch.enable_grad():
        for _ in range(schedule.steps):
            inputs, labels = proxy_samples(images, task, schedule.batch_size, gen, crop)
            loss = F.cross_entropy(net(inputs), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            decay.step()
            losses.append(loss.item())
    net.eval()
    return losses


@dataclass(frozen=True)
class Density:
    """The GDE: L2-normalised (optionally) representations, Ledoit-Wolf covariance + eps."""

    normalise: bool = True
    eps: float = 1e-3

    def prepare(self, embeddings: Tensor) -> Tensor:
        return F.normalize(embeddings, dim=1) if self.normalise else embeddings

    def fit(self, embeddings: Tensor) -> PositionGaussians:
        """One Gaussian over (N,D) embeddings (PositionGaussians with a single position)."""
        samples = self.prepare(embeddings)[:, :, None, None]
        return PositionGaussians.fit(samples, covariance="ledoit_wolf", eps=self.eps)

    def distance(self, gaussian: PositionGaussians, embeddings: Tensor) -> Tensor:
        return gaussian.mahalanobis(self.prepare(embeddings)[:, :, None, None])[:, 0, 0]


@dataclass(frozen=True)
class PatchGrid:
    """Square patches of side ``size`` every ``stride`` pixels on an image of side ``side``."""

    side: int
    size: int
    stride: int

    def __post_init__(self) -> None:
        if not 0 < self.size <= self.side or (self.side - self.size) % self.stride:
            raise ValueError(
                f"patches of {self.size} px every {self.stride} px must tile a {self.side} px "
                "image exactly: (side - size) must be a multiple of the stride"
            )

    @property
    def cells(self) -> int:
        return (self.side - self.size) // self.stride + 1

    def patches(self, image: Tensor) -> Tensor:
        """(3,S,S) -> (cells**2, 3, size, size), row-major."""
        cols = F.unfold(image[None], self.size, stride=self.stride)  # (1, 3*size*size, P)
        return cols[0].T.reshape(-1, image.shape[0], self.size, self.size)

    def spread(self, scores: Tensor) -> Tensor:
        """(B, cells, cells) patch scores -> (B, S, S): every pixel gets the mean score of
        the patches that contain it (the paper's receptive-field upsampling)."""
        b = len(scores)
        cols = scores.reshape(b, 1, -1).expand(b, self.size * self.size, -1)
        fold = dict(output_size=(self.side, self.side), kernel_size=self.size, stride=self.stride)
        total = F.fold(cols, **fold)
        count = F.fold(torch.ones_like(cols[:1]), **fold)
        return (total / count)[:, 0]


DETECTION = ("image", "patch")


class CutPasteModel:
    """One episode: ``fit`` on K normal images, then ``score``.

    ``encoder`` maps (N,3,H,W) images in [0, 1] to a list of feature maps whose last one is
    pooled; it is deep-copied for each model at every fit, so every episode starts from
    the pretrained weights and the caller's module never changes. The patch-level model
    always gives the maps; ``detection="image"`` trains the image-level model for the image
    score (the paper's detection results), ``"patch"`` takes the highest patch score
    instead (the paper's patch-level detection) and trains one model only.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        input_size: int = 256,
        patches: PatchGrid | None = None,
        task: ProxyTask | None = None,
        head: Sequence[int] = (512,) * 8 + (128,),
        image_schedule: Schedule | None = None,
        patch_schedule: Schedule | None = None,
        density: Density | None = None,
        density_views: int = 0,
        sigma: float = 4.0,
        detection: str = "image",
    ) -> None:
        if detection not in DETECTION:
            raise ValueError(f"detection={detection!r}; use one of {DETECTION}")
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.input_size = input_size
        self.patches = patches or PatchGrid(input_size, input_size // 4, max(1, input_size // 64))
        if self.patches.side != input_size:
            raise ValueError(f"patch grid side {self.patches.side} != input_size {input_size}")
        self.task = task or ProxyTask()
        self.head = tuple(head)
        self.image_schedule = image_schedule or Schedule()
        self.patch_schedule = patch_schedule or Schedule()
        self.density = density or Density()
        self.density_views = density_views
        self.sigma = sigma
        self.detection = detection
        self.image_net: ProxyNet | None = None
        self.patch_net: ProxyNet | None = None
        self.image_gde: PositionGaussians | None = None
        self.patch_gde: PositionGaussians | None = None
        self.losses: dict[str, list[float]] = {}

    def _net(self, gen: torch.Generator) -> ProxyNet:
        with seeded_init(gen):
            net = ProxyNet(
                copy.deepcopy(self.encoder), self.feature_dim, self.head, self.task.classes
            )
        return net.to(next(self.encoder.parameters()).device)

    def _density_set(self, images: Tensor, gen: torch.Generator) -> Tensor:
        """The supports, plus ``density_views`` base-augmented copies of each."""
        views = [images]
        jitter = Jitter(self.task.jitter)
        for _ in range(self.density_views):
            views.append(base_augment(images, self.task.translate, jitter, gen))
        return torch.cat(views)

    @torch.no_grad()
    def _patch_embeddings(self, image: Tensor) -> Tensor:
        """(3,S,S) -> (P, D) pooled representations of every patch of the grid."""
        assert self.patch_net is not None
        patches = self.patches.patches(image)
        return torch.cat(
            [
                self.patch_net.embed(patches[i : i + PATCH_CHUNK])
                for i in range(0, len(patches), PATCH_CHUNK)
            ]
        )

    def fit(self, support: Tensor, gen: torch.Generator) -> CutPasteModel:
        images = resize(support.float(), self.input_size)
        self.losses = {}
        self.image_net = self.image_gde = None
        if self.detection == "image":
            self.image_net = self._net(gen)
            self.losses["image"] = train_proxy(
                self.image_net, images, self.task, self.image_schedule, gen
            )
            with torch.no_grad():
                embeddings = self.image_net.embed(self._density_set(images, gen))
            self.image_gde = self.density.fit(embeddings)
        self.patch_net = self._net(gen)
        self.losses["patch"] = train_proxy(
            self.patch_net, images, self.task, self.patch_schedule, gen, self.patches.size
        )
        views = self._density_set(images, gen)
        self.patch_gde = self.density.fit(
            torch.cat([self._patch_embeddings(view) for view in views])
        )
        return self

    @torch.no_grad()
    def patch_scores(self, images: Tensor) -> Tensor:
        """(B,3,S,S) at ``input_size`` -> (B, cells, cells) patch Mahalanobis distances."""
        assert self.patch_gde is not None
        cells = self.patches.cells
        return torch.stack(
            [
                self.density.distance(self.patch_gde, self._patch_embeddings(image))
                for image in images
            ]
        ).reshape(len(images), cells, cells)

    @torch.no_grad()
    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) -> image scores (B,) and maps (B,H,W) at the input size.

        Images are scored one at a time through the patch model and in eval mode through the
        image model, so a score never depends on the rest of the batch."""
        if self.patch_gde is None:
            raise RuntimeError("CutPasteModel.score called before fit")
        small = resize(images.float(), self.input_size)
        grids = self.patch_scores(small)
        maps = upsample_and_smooth(self.patches.spread(grids), tuple(images.shape[-2:]), self.sigma)
        if self.image_net is None:
            return grids.flatten(1).amax(dim=1), maps
        assert self.image_gde is not None
        return self.density.distance(self.image_gde, self.image_net.embed(small)), maps
