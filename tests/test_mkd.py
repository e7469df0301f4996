"""MKD: the distillation losses against a direct computation, the student built as the
official cloner, the gradient map against scipy's filters, and what a short fit must
already get right. The conformance suite runs on mkd from test_conformance.py (it
parametrises over every registered plugin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from fsad_bench.features.backbones import cached_feature_extractor
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.encoders import BackboneStages
from fsad_methods.mkd.core import (
    MAP_PERCENTILE,
    Student,
    distillation_terms,
    gradient_map,
    mkd_loss,
)
from fsad_methods.mkd.plugin import MKD

VGG16_CRITICAL = ((4, 8, 16, 32), (128, 256, 512, 512))  # the official critical layers


def _maps(seed: int, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in shapes]


def test_losses_match_a_direct_computation() -> None:
    shapes = [(3, 4, 8, 8), (3, 6, 4, 4), (3, 5, 2, 2)]
    student, teacher = _maps(0, shapes), _maps(1, shapes)
    value, direction = distillation_terms(student, teacher)
    lamda = 0.5
    for b in range(3):
        total = 0.0
        for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
            a, c = s[b].flatten().numpy(), t[b].flatten().numpy()
            mse = float(np.mean((a - c) ** 2))
            cos = float(a @ c / (np.linalg.norm(a) * np.linalg.norm(c)))
            assert value[b, i].item() == pytest.approx(mse, rel=1e-12)
            assert direction[b, i].item() == pytest.approx(1 - cos, rel=1e-10)
            total += (1 - cos) + lamda * mse
        assert mkd_loss(student, teacher, lamda)[b].item() == pytest.approx(total, rel=1e-10)


def test_training_mean_equals_the_official_mse_and_cosine_losses() -> None:
    """The batch loss is the official MseDirectionLoss: nn.MSELoss (mean over all elements)
    plus the batch mean of 1 - cosine, summed over layers."""
    shapes = [(4, 3, 6, 6), (4, 5, 3, 3)]
    student, teacher = _maps(2, shapes), _maps(3, shapes)
    lamda = 0.5
    expected = sum(
        torch.mean(1 - nn.CosineSimilarity()(s.flatten(1), t.flatten(1)))
        + lamda * nn.MSELoss()(s, t)
        for s, t in zip(student, teacher, strict=True)
    )
    torch.testing.assert_close(mkd_loss(student, teacher, lamda).mean(), expected)


def test_losses_are_zero_for_a_perfect_student_and_reject_mismatched_maps() -> None:
    maps = _maps(4, [(2, 3, 4, 4), (2, 5, 2, 2)])
    perfect = mkd_loss(maps, [m.clone() for m in maps], 0.5)
    torch.testing.assert_close(perfect, torch.zeros(2, dtype=perfect.dtype))
    with pytest.raises(ValueError, match="student map"):
        distillation_terms(maps, [maps[0], maps[0]])


def test_the_student_for_vgg16_is_the_official_cloner() -> None:
    """cfg 'B' of the official network.py: [16, 16, M, 16, 128, M, 16, 16, 256, M, 16, 16,
    512, M, 16, 16, 512, M]; BatchNorm after every convolution but a block's last."""
    student = Student(*VGG16_CRITICAL, width=16)
    layout: list[int | str] = []
    for block in student.blocks:
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        norms = [m for m in block if isinstance(m, nn.BatchNorm2d)]
        assert len(norms) == len(convs) - 1
        assert all(c.bias is None for c in convs)
        layout += [c.out_channels for c in convs] + ["M"]
    assert layout == [16, 16, "M", 16, 128, "M", 16, 16, 256, "M", 16, 16, 512, "M"] + [
        16,
        16,
        512,
        "M",
    ]
    outputs = student(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [
        (2, 128, 16, 16),
        (2, 256, 8, 8),
        (2, 512, 4, 4),
        (2, 512, 2, 2),
    ]


def test_student_outputs_can_be_negative_for_a_linear_teacher() -> None:
    torch.manual_seed(0)
    linear = Student((4, 8), (6, 10), width=4, output_relu=False)
    relu = Student((4, 8), (6, 10), width=4, output_relu=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert min(float(o.min()) for o in linear(x)) < 0
        assert min(float(o.min()) for o in relu(x)) >= 0


def test_gradient_map_matches_scipy_normalise_blur_and_opening() -> None:
    grad = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    sigma = 2.0
    ours = gradient_map(grad, sigma).numpy()
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    for b in range(2):
        summed = np.abs(grad[b].numpy()).sum(axis=0)
        low, high = summed.min(), np.quantile(summed, MAP_PERCENTILE)
        scaled = np.clip((summed - low) / (high - low), 0, 1)
        blurred = ndimage.gaussian_filter(scaled, sigma, mode="mirror", truncate=4.0)
        opened = ndimage.grey_opening(blurred, footprint=cross)
        inner = (slice(2, -2), slice(2, -2))  # borders: kornia and scipy pad differently
        np.testing.assert_allclose(ours[b][inner], opened[inner], atol=1e-5)


def test_score_gradient_is_the_input_gradient_of_the_loss() -> None:
    """Without normalisation, blur or opening, the map is sum_c |d loss / d x| at the
    internal size: compare with autograd on each image separately."""
    torch.manual_seed(0)
    method = MKD(**{**MKD.conformance_params, "epochs": 2})
    method.fit(tiny_normals(2, 64))
    model = method._model
    model.sigma, model.normalise_map, model.opening = 0.0, False, False
    images = tiny_normals(2, 64, seed=4)
    with torch.inference_mode():
        scores, maps = model.score(images)
    for i in range(2):
        x = images[i : i + 1].clone().requires_grad_(True)
        loss = mkd_loss(model.student(x), model.teacher(x), model.lamda)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        torch.testing.assert_close(scores[i], loss[0].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(maps[i], grad[0].abs().sum(0), rtol=1e-4, atol=1e-8)


def test_the_uncached_teacher_computes_what_the_harness_extractor_computes() -> None:
    extractor, _ = cached_feature_extractor("efficientnet_lite0", "pretrained", (1, 2, 3, 4), "cpu")
    teacher = BackboneStages(extractor, trainable=False)
    teacher.train()  # a frozen teacher stays in eval mode
    assert not teacher.training and not teacher.body.training
    images = tiny_normals(2, 64)
    with torch.no_grad():
        for ours, theirs in zip(teacher(images), extractor(images), strict=True):
            torch.testing.assert_close(ours, theirs)


# ---------------------------------------------------------------- the method

TINY = dict(MKD.conformance_params)


def _fit_and_score(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    method = MKD(**TINY)
    method.fit(tiny_normals(4, 64))
    defect, _ = tiny_defect(64)
    with torch.inference_mode():
        pred = method.predict(torch.cat([defect, tiny_normals(3, 64, seed=9)]))
    return pred.scores, pred.maps


def test_a_corrupted_image_scores_above_normal_ones_after_a_short_fit() -> None:
    scores, maps = _fit_and_score()
    assert scores[0] > scores[1:].max()
    _, mask = tiny_defect(64)
    assert maps[0][mask[0]].mean() > maps[0][~mask[0]].mean()  # the map points at the square


def test_training_lowers_the_distillation_loss() -> None:
    torch.manual_seed(0)
    method = MKD(**TINY)
    method.fit(tiny_normals(4, 64))
    losses = method._model.losses
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


def test_same_seed_same_scores_and_maps() -> None:
    first, second = _fit_and_score(seed=2), _fit_and_score(seed=2)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"input_size": 100}, "input_size=100: input should be a multiple of 32"),
        ({"support_views": "all"}, "support_views='all'"),
        ({"lamda": -1}, "lamda=-1"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(params: dict, fragment: str) -> None:
    with pytest.raises(ParamError) as error:
        MKD(**params)
    message = str(error.value)
    assert message.startswith("mkd: ") and fragment in message and "\n" not in message
