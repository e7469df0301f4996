"""CutPaste: the augmentations put the pasted patch exactly where they say, the patch grid
and the Gaussian density agree with direct computations (scikit-learn's Ledoit-Wolf), and a
short fit already ranks a corrupted image above normal ones. The conformance suite runs on
cutpaste from test_conformance.py (it parametrises over every registered plugin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.covariance import ledoit_wolf

from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.cutpaste.augment import (
    VARIANTS,
    CutPasteAugment,
    Jitter,
    base_augment,
    proxy_batch,
)
from fsad_methods.cutpaste.core import Density, PatchGrid
from fsad_methods.cutpaste.plugin import CutPaste

PLAIN = CutPasteAugment(jitter=Jitter(0.0))  # no colour change: pasted pixels are copies


def _image(size: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- augmentations


@pytest.mark.parametrize("seed", range(8))
def test_cut_paste_copies_the_source_box_into_the_target_box_only(seed: int) -> None:
    image = _image(seed=seed)
    out, source, target = PLAIN.cut_paste(image, torch.Generator().manual_seed(seed))
    inside = torch.zeros(image.shape[1:], dtype=torch.bool)
    target.of(inside).fill_(True)
    torch.testing.assert_close(out[:, ~inside], image[:, ~inside], rtol=0, atol=0)
    torch.testing.assert_close(target.of(out), source.of(image), rtol=0, atol=0)
    assert target.height * target.width == int(inside.sum())


def test_cut_paste_with_jitter_changes_only_the_target_box() -> None:
    image = _image(seed=3)
    augment = CutPasteAugment(jitter=Jitter(0.5))
    out, _, target = augment.cut_paste(image, torch.Generator().manual_seed(1))
    outside = torch.ones(image.shape[1:], dtype=torch.bool)
    target.of(outside).fill_(False)
    assert torch.equal(out[:, outside], image[:, outside])
    assert not torch.equal(target.of(out), target.of(image))
    assert out.min() >= 0 and out.max() <= 1


def test_patch_sizes_follow_the_papers_area_and_aspect_ranges() -> None:
    gen = torch.Generator().manual_seed(0)
    side = 256
    for _ in range(300):
        h, w = PLAIN.patch_size(side, side, gen)
        area = h * w / side**2
        assert 0.02 - 0.002 <= area <= 0.15 + 0.003  # rounding of the sides
        assert 0.3 - 0.05 <= w / h <= 1 / 0.3 + 0.1


@pytest.mark.parametrize("seed", range(6))
def test_scar_without_rotation_pastes_a_thin_copied_rectangle_where_the_mask_says(
    seed: int,
) -> None:
    image = _image(64, seed)
    augment = CutPasteAugment(jitter=Jitter(0.0), scar_rotation=0.0, scale=0.5)
    out, mask = augment.cut_paste_scar(image, torch.Generator().manual_seed(seed))
    assert torch.equal(out[:, ~mask], image[:, ~mask])
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    height, width = len(rows), len(cols)
    assert int(mask.sum()) == height * width  # one solid rectangle
    assert 5 <= height <= 13 and 1 <= width <= 8  # 10-25 by 2-16 px at 256, halved
    top, left = int(rows[0]), int(cols[0])
    pasted = out[:, top : top + height, left : left + width]
    windows = image.unfold(1, height, 1).unfold(2, width, 1)  # (3, H', W', height, width)
    match = (windows - pasted[:, None, None]).abs().amax(dim=(0, 3, 4))
    assert float(match.min()) < 1e-5  # a window of the original (up to resampling rounding)


def test_rotated_scar_changes_pixels_only_inside_its_mask() -> None:
    image = _image(64, 7)
    augment = CutPasteAugment(jitter=Jitter(0.1), scale=1.0)
    for seed in range(5):
        out, mask = augment.cut_paste_scar(image, torch.Generator().manual_seed(seed))
        assert mask.any()
        assert torch.equal(out[:, ~mask], image[:, ~mask])


def test_proxy_batch_groups_classes_and_keeps_the_normal_class_unchanged() -> None:
    images = torch.stack([_image(32, s) for s in range(3)])
    for variant, kinds in VARIANTS.items():
        inputs, labels = proxy_batch(images, PLAIN, variant, torch.Generator().manual_seed(0))
        classes = 1 + len(kinds)
        assert inputs.shape == (3 * classes, 3, 32, 32)
        assert labels.tolist() == [c for c in range(classes) for _ in range(3)]
        assert torch.equal(inputs[:3], images)
        assert all(not torch.equal(inputs[3 * c + i], images[i]) for c in (1,) for i in range(3))


def test_base_augment_without_translation_or_jitter_is_the_identity() -> None:
    images = torch.stack([_image(32, s) for s in range(2)])
    same = base_augment(images, 0.0, Jitter(0.0), torch.Generator().manual_seed(0))
    assert torch.equal(same, images)


# ---------------------------------------------------------------- patch grid and density


def test_patch_grid_cuts_and_spreads_like_a_loop_over_patches() -> None:
    grid = PatchGrid(side=20, size=8, stride=4)
    image = _image(20)
    patches = grid.patches(image)
    assert grid.cells == 4 and patches.shape == (16, 3, 8, 8)
    scores = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    total, count = torch.zeros(2, 20, 20), torch.zeros(20, 20)
    for i in range(4):
        for j in range(4):
            window = (slice(i * 4, i * 4 + 8), slice(j * 4, j * 4 + 8))
            assert torch.equal(patches[i * 4 + j], image[:, window[0], window[1]])
            total[:, window[0], window[1]] += scores[:, i, j, None, None]
            count[window] += 1
    torch.testing.assert_close(grid.spread(scores), total / count)


def test_patch_grid_refuses_a_stride_that_does_not_tile() -> None:
    with pytest.raises(ValueError, match="multiple of the stride"):
        PatchGrid(side=20, size=8, stride=5)


def test_density_matches_sklearn_ledoit_wolf_mahalanobis() -> None:
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(30, 5, generator=gen, dtype=torch.float64).float() * torch.arange(1, 6)
    test = torch.randn(7, 5, generator=gen)
    eps = 0.01
    density = Density(normalise=False, eps=eps)
    ours = density.distance(density.fit(train), test)
    cov, _ = ledoit_wolf(train.double().numpy())
    precision = np.linalg.inv(cov + eps * np.eye(5))
    diff = test.double().numpy() - train.double().numpy().mean(axis=0)
    expected = np.sqrt(np.einsum("ij,jk,ik->i", diff, precision, diff))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-4)


def test_density_normalises_representations_to_the_unit_sphere() -> None:
    train = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    density = Density(normalise=True)
    gaussian = density.fit(train)
    torch.testing.assert_close(
        density.distance(gaussian, train * 7.0), density.distance(gaussian, train)
    )


# ---------------------------------------------------------------- the method

TINY = {**CutPaste.conformance_params, "steps": 4, "patch_steps": 4}


def _fit_and_score(params: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    method = CutPaste(**params)
    method.fit(tiny_normals(4, 64))
    defect, _ = tiny_defect(64)
    with torch.inference_mode():
        pred = method.predict(torch.cat([defect, tiny_normals(3, 64, seed=9)]))
    return pred.scores, pred.maps


@pytest.mark.parametrize("detection", ["image", "patch"])
def test_a_corrupted_image_scores_above_normal_ones_after_a_short_fit(detection: str) -> None:
    scores, maps = _fit_and_score({**TINY, "detection": detection})
    assert scores[0] > scores[1:].max()
    _, mask = tiny_defect(64)
    assert maps[0][mask[0]].mean() > maps[0][~mask[0]].mean()  # the map points at the square


def test_same_seed_same_scores_and_maps() -> None:
    first, second = _fit_and_score(TINY, seed=3), _fit_and_score(TINY, seed=3)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_fit_does_not_change_the_shared_backbone() -> None:
    method = CutPaste(**TINY)
    extractor, _ = method._extractor()
    before = {k: v.clone() for k, v in extractor.state_dict().items()}
    torch.manual_seed(0)
    method.fit(tiny_normals(2, 64))
    after = extractor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"patch_stride": 5}, "must tile input_size=128"),
        ({"variant": "4way"}, "variant='4way'"),
        ({"area_ratio": [0.2, 0.1]}, "area_ratio=[0.2, 0.1] must be an increasing pair"),
        ({"steps": -1}, "steps=-1"),
        ({"head": [64, 0]}, "head=[64, 0] must list positive layer widths"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(params: dict, fragment: str) -> None:
    with pytest.raises(ParamError) as error:
        CutPaste(**params)
    message = str(error.value)
    assert message.startswith("cutpaste: ") and fragment in message and "\n" not in message


def test_scar_scale_follows_the_input_size() -> None:
    method = CutPaste(input_size=64)
    assert math.isclose(method._build().task.cutpaste.scale, 0.25)
