"""Multiresolution Knowledge Distillation (Salehi et al., CVPR 2021) in pure torch; no
harness imports.

A frozen pretrained teacher (the paper: VGG-16) and a smaller student ("cloner") trained
from scratch to reproduce the teacher's activations at several "critical" layers, one per
resolution (VGG-16: the outputs of its last four blocks, strides 4 to 32). Per layer i and
image, with a_s, a_t the student's and teacher's activations flattened:

    value_i     = mean_j (a_s(j) - a_t(j))^2
    direction_i = 1 - cos(a_s, a_t)

and ``loss = sum_i direction_i + lambda * sum_i value_i`` (the official code's weighting;
the paper writes lambda on the direction term). Trained on normal images only, the student
imitates the teacher there and nowhere else: the same loss, per test image, is its anomaly
score. The map is the paper's gradient localisation: the gradient of that loss with respect
to the input, absolute values summed over colour channels, normalised per image (minimum to
99th percentile, clipped), Gaussian-smoothed (sigma 4 px at 128 px) and opened with a 3x3
cross (the official evaluation opens each thresholded map with that element; grey-level
opening of the map is the same thing, since a flat opening commutes with thresholding).

Student: the official "cloner" configuration, built for the teacher it copies: VGG-style
blocks of 3x3 convolutions (BatchNorm and ReLU; no bias) each ended by 2x2 max pooling.
Block 1 has two ``width``-channel convolutions, block 2 one ``width`` and one output
convolution, later blocks two ``width`` and one output convolution; a block whose pooled
stride is a critical layer's ends with a convolution to that layer's channel count (without
BatchNorm, as the official code leaves the last convolution of a block). For VGG-16 with
width 16 this is the official cfg ``[16, 16, M, 16, 128, M, 16, 16, 256, M, 16, 16, 512, M,
16, 16, 512, M]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad_methods.common.augment import regad_views
from fsad_methods.common.encoders import seeded_init
from fsad_methods.common.maps import gaussian_smooth
from fsad_methods.common.reconstruction import resize

MAP_PERCENTILE = 0.99  # official convert_to_grayscale: maps scaled by their 99th percentile
OPENING = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])  # cv2 3x3 ellipse


class Student(nn.Module):
    """The cloner: outputs one map per critical stride, with the teacher's channel counts."""

    def __init__(
        self,
        strides: Sequence[int],
        channels: Sequence[int],
        width: int = 16,
        output_relu: bool = True,
    ) -> None:
        super().__init__()
        if list(strides) != sorted(set(strides)) or any(s < 2 or s & (s - 1) for s in strides):
            raise ValueError(f"critical strides {list(strides)} must be increasing powers of 2")
        if len(strides) != len(channels):
            raise ValueError(f"{len(strides)} strides but {len(channels)} channel counts")
        out_channels = dict(zip(strides, channels, strict=True))
        self.strides = list(strides)
        blocks, in_channels, stride = [], 3, 1
        while stride < max(strides):
            stride *= 2
            convs = 2 if stride == 2 else (2 if stride == 4 else 3)
            widths = [width] * convs
            critical = stride in out_channels
            if critical:
                widths[-1] = out_channels[stride]
            layers: list[nn.Module] = []
            for i, out in enumerate(widths):
                layers.append(nn.Conv2d(in_channels, out, 3, padding=1, bias=False))
                last = i == len(widths) - 1
                if not last:
                    layers += [nn.BatchNorm2d(out), nn.ReLU()]
                elif output_relu or not critical:
                    layers.append(nn.ReLU())
                in_channels = out
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, images: Tensor) -> list[Tensor]:
        outputs, x = [], images
        for index, block in enumerate(self.blocks):
            x = block(x)
            if 2 ** (index + 1) in self.strides:
                outputs.append(x)
        return outputs


def distillation_terms(
    student: Sequence[Tensor], teacher: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per image and critical layer: value (mean squared error) and direction (1 - cosine
    of the flattened activations). Returns two (B, layers) tensors."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student maps for {len(teacher)} teacher maps")
    values, directions = [], []
    for s, t in zip(student, teacher, strict=True):
        if s.shape != t.shape:
            raise ValueError(f"student map {tuple(s.shape)} != teacher map {tuple(t.shape)}")
        values.append((s - t).square().flatten(1).mean(dim=1))
        directions.append(1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1))
    return torch.stack(values, dim=1), torch.stack(directions, dim=1)


def mkd_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], lamda: float) -> Tensor:
    """(B,) total loss per image: sum of direction terms + lamda * sum of value terms."""
    value, direction = distillation_terms(student, teacher)
    return direction.sum(dim=1) + lamda * value.sum(dim=1)


@dataclass(frozen=True)
class Schedule:
    """Adam on the student; each epoch visits every training image once, in random order."""

    epochs: int = 601
    batch_size: int = 64
    lr: float = 1e-3


def gradient_map(
    grad: Tensor, sigma: float, normalise: bool = True, opening: bool = True
) -> Tensor:
    """(B,3,H,W) input gradients -> (B,H,W) maps, as the official localisation computes them."""
    maps = grad.abs().sum(dim=1)
    if normalise:
        flat = maps.flatten(1)
        low = flat.amin(dim=1)
        high = torch.quantile(flat, MAP_PERCENTILE, dim=1)
        span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
        maps = ((maps - low[:, None, None]) / span[:, None, None]).clamp(0, 1)
    maps = gaussian_smooth(maps, sigma)
    if opening:
        maps = kornia.morphology.opening(maps[:, None], OPENING.to(maps))[:, 0]
    return maps


class MKDModel:
    """One episode: ``fit`` trains a fresh student on K normal images, then ``score``.

    ``teacher`` maps (N,3,H,W) images in [0, 1] to the critical layers' activations; it is
    frozen and never changes. ``support_views="regad"`` trains on RegAD's 22 fixed views of
    every support image (the few-shot "+" protocol), ``"none"`` on the supports only.
    """

    def __init__(
        self,
        teacher: nn.Module,
        strides: Sequence[int],
        channels: Sequence[int],
        input_size: int = 128,
        width: int = 16,
        output_relu: bool = True,
        lamda: float = 0.5,
        schedule: Schedule | None = None,
        support_views: str = "regad",
        sigma: float = 4.0,
        normalise_map: bool = True,
        opening: bool = True,
    ) -> None:
        if support_views not in ("regad", "none"):
            raise ValueError(f"support_views={support_views!r}; use 'regad' or 'none'")
        self.teacher = teacher
        self.strides, self.channels = list(strides), list(channels)
        self.input_size = input_size
        self.width = width
        self.output_relu = output_relu
        self.lamda = lamda
        self.schedule = schedule or Schedule()
        self.support_views = support_views
        self.sigma = sigma
        self.normalise_map = normalise_map
        self.opening = opening
        self.student: Student | None = None
        self.losses: list[float] = []

    def training_set(self, support: Tensor) -> Tensor:
        images = resize(support.float(), self.input_size)
        return regad_views(images) if self.support_views == "regad" else images

    def fit(self, support: Tensor, gen: torch.Generator) -> MKDModel:
        images = self.training_set(support)
        with torch.no_grad():
            targets = [t.detach() for t in self.teacher(images)]
        with seeded_init(gen):
            student = Student(self.strides, self.channels, self.width, self.output_relu)
        student = student.to(images.device)
        s = self.schedule
        optimiser = torch.optim.Adam(student.parameters(), lr=s.lr)
        self.losses = []
        student.train()
        with torch.enable_grad():
            for _ in range(s.epochs):
                order = torch.randperm(len(images), generator=gen).to(images.device)
                for start in range(0, len(images), s.batch_size):
                    batch = order[start : start + s.batch_size]
                    teacher = [t[batch] for t in targets]
                    loss = mkd_loss(student(images[batch]), teacher, self.lamda).mean()
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    self.losses.append(loss.item())
        student.eval()
        self.student = student
        return self

    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) -> scores (B,) and gradient maps (B,H,W) at the input size.

        Student and teacher run in eval mode, so each image's loss and gradient depend on
        that image only. Needs autograd: callers under ``torch.inference_mode`` are handled
        by re-enabling it here."""
        if self.student is None:
            raise RuntimeError("MKDModel.score called before fit")
        with torch.inference_mode(False), torch.enable_grad():
            small = resize(images.clone().float(), self.input_size).detach().requires_grad_(True)
            totals = mkd_loss(self.student(small), self.teacher(small), self.lamda)
            (grad,) = torch.autograd.grad(totals.sum(), small)
        maps = gradient_map(grad.detach(), self.sigma, self.normalise_map, self.opening)
        maps = F.interpolate(
            maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        return totals.detach(), maps
