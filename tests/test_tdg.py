"""TDG and the shared GAN blocks: the gradient penalty against autograd done by hand, the
transformation sets and their labels, and what a short fit must already get right.

The conformance suite (tests/test_conformance.py) covers the plugin contract for every
registered plugin, TDG included.
"""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect
from fsad_methods.common.gan import (
    PatchDiscriminator,
    ResidualPatchGenerator,
    frozen,
    generator_padding,
    gradient_penalty,
    init_gan_weights,
    pyramid_sizes,
    receptive_field,
)
from fsad_methods.tdg.core import SUPPORT_VIEWS, TDG, TDGConfig, patch_cross_entropy
from fsad_methods.tdg.plugin import TDG as TDGPlugin
from fsad_methods.tdg.plugin import SupportViews, TransformSet
from fsad_methods.tdg.transforms import (
    TRANSFORM_SETS,
    Transform,
    all_pairs,
    transform_pairs,
    transform_set,
)

SIZE = 48
# small enough for seconds: 2 scales (16, 24 px), 4-layer 8-channel nets
TINY = {
    "image_size": 24,
    "min_size": 16,
    "width": 8,
    "num_layers": 4,
    "iterations": 40,
    "d_steps": 1,
    "g_steps": 1,
    "pairs_per_step": 8,
    "d_decay_at": 1.0,  # no learning-rate drop in so short a run
    "g_decay_at": 1.0,
}


def _images(n: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- gradient penalty


def test_gradient_penalty_of_a_linear_critic_is_known_in_closed_form() -> None:
    """critic(x) = <w, x>: the gradient is w everywhere, the penalty (||w|| - 1)^2."""
    weight = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(1))

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * weight).flatten(1).sum(1)

    real, fake = _images(4, 5, seed=2), _images(4, 5, seed=3)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    expected = (weight.norm() - 1) ** 2
    torch.testing.assert_close(penalty, expected)


def test_gradient_penalty_matches_per_sample_autograd() -> None:
    """A patch critic (sum of its grid), sample by sample with torch.autograd.grad."""
    critic = PatchDiscriminator(3, 1, width=4, num_layers=3).eval()
    init_gan_weights(critic, torch.Generator().manual_seed(0))
    real, fake = _images(3, 9, seed=4), _images(3, 9, seed=5)
    penalty = gradient_penalty(critic, real, fake, torch.Generator().manual_seed(7))

    a = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(7))  # the same draw
    terms = []
    for i in range(3):
        point = (a[i] * real[i] + (1 - a[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(point).sum(), point)
        terms.append((grad.norm() - 1) ** 2)
    torch.testing.assert_close(penalty, torch.stack(terms).mean())


def test_gradient_penalty_back_propagates_into_the_critic() -> None:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1), nn.Tanh())
    penalty = gradient_penalty(critic, _images(2, 4), _images(2, 4, seed=1))
    penalty.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


def test_frozen_keeps_gradients_out_of_the_frozen_module_and_restores_it() -> None:
    d = PatchDiscriminator(3, 2, width=4, num_layers=3)
    g = ResidualPatchGenerator(3, 3, width=4, num_layers=3)
    pad = generator_padding(3)
    x = F.pad(_images(2, 10), [pad] * 4)
    with frozen(d):
        d(g(x, x)).sum().backward()
    assert all(p.grad is None for p in d.parameters())
    assert all(p.grad is not None for p in g.parameters())
    assert all(p.requires_grad for p in d.parameters())


# ---------------------------------------------------------------- GAN plumbing


def test_generator_output_keeps_the_unpadded_size_and_adds_prev() -> None:
    layers = 4
    g = ResidualPatchGenerator(4, 3, width=4, num_layers=layers)
    pad = generator_padding(layers)
    prev = F.pad(_images(2, 11), [pad] * 4)
    x = torch.cat([prev, torch.zeros(2, 1, *prev.shape[-2:])], 1)
    out = g(x, prev)
    assert out.shape == (2, 3, 11, 11)
    residual = g.tail(g.body(g.head(x)))
    torch.testing.assert_close(out - residual, prev[..., pad:-pad, pad:-pad])


def test_discriminator_grid_has_one_decision_per_receptive_field() -> None:
    d = PatchDiscriminator(3, 5, width=4, num_layers=5)
    r = receptive_field(5)
    assert r == 11
    assert d(_images(1, 20)).shape == (1, 5, 20 - r + 1, 20 - r + 1)


@pytest.mark.parametrize(
    ("max_size", "min_size", "factor"), [(64, 25, 0.75), (32, 20, 0.75), (40, 16, 0.5)]
)
def test_pyramid_sizes_follow_singans_rule(max_size: int, min_size: int, factor: float) -> None:
    sizes = pyramid_sizes(max_size, min_size, factor)
    assert sizes[0] == min_size and sizes[-1] == max_size
    assert sizes == sorted(sizes)
    ratios = [a / b for a, b in zip(sizes, sizes[1:], strict=False)]
    assert all(r >= factor - 0.02 for r in ratios)  # no step coarser than the factor (rounding)
    if len(sizes) > 2:  # and the fewest scales: one fewer would need a coarser step
        assert (min_size / max_size) ** (1 / (len(sizes) - 2)) < factor


def test_paper_pyramid_has_the_official_five_scales() -> None:
    """Official code, 128 px MVTec image, max 64, min 25, factor 0.75: stop_scale = 4."""
    assert len(TDGConfig(image_size=64, min_size=25).sizes) == 5


# ---------------------------------------------------------------- transformations


def test_rotations_act_as_the_cyclic_group() -> None:
    x = _images()
    rotations = transform_set("rotations")
    assert len(rotations) == 4
    torch.testing.assert_close(rotations[0].apply(x), x, rtol=0, atol=0)
    for a, b in itertools.product(range(4), repeat=2):
        composed = rotations[a].apply(rotations[b].apply(x))
        torch.testing.assert_close(composed, rotations[(a + b) % 4].apply(x), rtol=0, atol=0)
    torch.testing.assert_close(rotations[1].apply(x), torch.rot90(x, 1, (-2, -1)))


def test_rgb54_has_54_distinct_members() -> None:
    members = transform_set("rgb54")
    assert len(members) == 54 and len(set(members)) == 54
    x = _images(1, 20)
    outputs = torch.stack([t.apply(x) for t in members]).flatten(1)
    distances = torch.cdist(outputs, outputs)
    off_diagonal = distances[~torch.eye(54, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3  # every label names a different image


def test_translation_moves_content_by_15_percent_with_reflected_borders() -> None:
    x = _images(1, 20)
    step = int(20 * 0.15)
    right = Transform(tx=1).apply(x)
    torch.testing.assert_close(right[..., step:], x[..., :-step], rtol=0, atol=0)
    torch.testing.assert_close(right[..., :step], x[..., 1 : step + 1].flip(-1), rtol=0, atol=0)
    down = Transform(ty=1).apply(x)
    torch.testing.assert_close(down[..., step:, :], x[..., :-step, :], rtol=0, atol=0)


def test_greyscale_members_use_luma_on_every_channel() -> None:
    x = _images(2, 8)
    grey = Transform(grey=True).apply(x)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(grey[:, c], luma)


@pytest.mark.parametrize("name", sorted(TRANSFORM_SETS))
def test_maps_are_brought_back_to_the_original_frame(name: str) -> None:
    """invert_map undoes the geometry: exact without translation, exact away from the
    reflected border with it."""
    m = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(3))
    image = m.expand(-1, 3, -1, -1)
    for t in transform_set(name):
        back = t.invert_map(t.apply(image)[:, :1])  # luma of equal channels is the map
        if t.tx == 0 and t.ty == 0:
            torch.testing.assert_close(back, m)
        else:
            inner = slice(3, -3)  # the 3-pixel shift's reflected border is lost
            torch.testing.assert_close(back[..., inner, inner], m[..., inner, inner])


def test_discriminator_batches_are_labelled_with_the_applied_transformation() -> None:
    images = _images(3, 10)
    members = transform_set("rotations")
    pairs = all_pairs(3, len(members))
    assert len(pairs) == 12 and len({tuple(p) for p in pairs.tolist()}) == 12
    batch, labels = transform_pairs(images, members, pairs)
    torch.testing.assert_close(labels, pairs[:, 1])
    for row, (i, t) in enumerate(pairs.tolist()):
        torch.testing.assert_close(batch[row], torch.rot90(images[i], t, (-2, -1)))


def test_patch_cross_entropy_labels_every_patch() -> None:
    logits = torch.randn(4, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 4])
    expected = F.cross_entropy(
        logits.permute(0, 2, 3, 1).reshape(-1, 5), labels.repeat_interleave(9)
    )
    torch.testing.assert_close(patch_cross_entropy(logits, labels), expected)
    torch.testing.assert_close(
        patch_cross_entropy(logits, 4),
        F.cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, 5), torch.full((36,), 4)),
    )


# ---------------------------------------------------------------- a short fit


def ramps(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """Normals whose every patch shows its orientation: red rises to the right, green rises
    downwards (linear ramps survive resizing), blue stripes at a random phase, mild noise.
    Unlike symmetric stripes, each quarter turn of a patch looks different, so the rotation
    label is learnable at every scale."""
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        phase = float(torch.rand(1, generator=gen)) * 6.28
        blue = 0.5 + 0.3 * torch.sin(12 * (xs + ys) + phase)
        noise = 0.03 * torch.randn(3, size, size, generator=gen)
        images.append((torch.stack([0.1 + 0.8 * xs, 0.1 + 0.8 * ys, blue]) + noise).clamp(0, 1))
    return torch.stack(images)


def turned_patch(image: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy whose central square is turned a quarter: locally wrong orientation."""
    out, mask = image.clone(), torch.zeros(image.shape[-2:], dtype=torch.bool)
    lo = (image.shape[-1] - side) // 2
    window = (..., slice(lo, lo + side), slice(lo, lo + side))
    out[window] = torch.rot90(image[window], 1, (-2, -1))
    mask[window[1:]] = True
    return out, mask


@pytest.fixture(scope="module")
def fitted() -> TDG:
    return TDG(TDGConfig(**TINY)).fit(ramps(4, seed=0), torch.Generator().manual_seed(0))


def test_discriminators_name_the_rotation_of_a_normal_image(fitted: TDG) -> None:
    """The classifier head has learned the labels: on an unseen normal image turned by k,
    the softmax over the four turns puts most mass on k, at every scale."""
    normal = ramps(1, seed=11) * 2 - 1
    for level, size in zip(fitted.scales, fitted.config.sizes, strict=True):
        x = F.interpolate(normal, size=(size, size), mode="bilinear", antialias=True)
        for k, rotation in enumerate(fitted.transforms):
            with torch.no_grad():
                probs = level.discriminator(rotation.apply(x))[:, :4].softmax(1)
            assert probs.mean((0, 2, 3)).argmax() == k, (size, k, probs.mean((0, 2, 3)))


def test_a_corrupted_copy_scores_above_normal_images(fitted: TDG) -> None:
    normals = ramps(6, seed=21)
    corrupted, mask = turned_patch(ramps(1, seed=22)[0], SIZE // 2)
    scores, maps = fitted.score(torch.cat([normals, corrupted[None]]))
    assert scores[-1] > scores[:-1].max() + 0.05, scores
    # and the map puts the anomaly where it is
    inside, outside = maps[-1][mask].mean(), maps[-1][~mask].mean()
    assert inside > outside + 0.05, (inside, outside)


def test_same_generator_seed_gives_identical_scores() -> None:
    images = torch.cat([ramps(2, seed=5), tiny_defect(SIZE)[0]])
    runs = []
    for _ in range(2):
        model = TDG(TDGConfig(**{**TINY, "iterations": 10}))
        model.fit(ramps(3, seed=0), torch.Generator().manual_seed(4))
        runs.append(model.score(images))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_scores_depend_on_the_generator_seed() -> None:
    """The seed reaches the model (a seed nobody uses would silently give equal scores)."""
    images = ramps(2, seed=5)
    scores = []
    for seed in (4, 5):
        model = TDG(TDGConfig(**{**TINY, "iterations": 5}))
        model.fit(ramps(3, seed=0), torch.Generator().manual_seed(seed))
        scores.append(model.score(images)[0])
    assert not torch.equal(scores[0], scores[1])


def test_regad_support_views_train_one_image_per_view() -> None:
    model = TDG(TDGConfig(**{**TINY, "iterations": 2, "support_views": "regad"}))
    model.fit(ramps(2), torch.Generator().manual_seed(0))
    assert len(model.scales[0].noise_amp) == 2 * 22


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"transforms": "flips"}, "transforms='flips': input should be 'rotations' or 'rgb54'"),
        ({"min_size": 8}, "min_size=8 is smaller than the discriminator's 11-pixel patch"),
        ({"min_size": 40}, "min_size=40 exceeds image_size=32"),
        ({"support_views": "many"}, "support_views='many'"),
        ({"fraction": 0.0}, "fraction=0.0"),
        ({"scale_factor": 1.5}, "scale_factor=1.5"),
        ({"iterations": 20.5}, "iterations=20.5"),
        ({"step": 3}, "unknown parameter"),
    ],
)
def test_bad_parameters_fail_with_a_one_line_reason(params: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message) as info:
        TDGPlugin(**params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"), [("pairs_per_step", -1), ("beta1", 1.0), ("width", 0), ("lr_d", 0.0)]
)
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        TDGPlugin(**{name: value})
    message = str(error.value)
    assert message.startswith(f"tdg: parameter {name}={value!r}:") and "\n" not in message


def test_choices_are_the_cores() -> None:
    assert set(get_args(TransformSet)) == set(TRANSFORM_SETS)
    assert set(get_args(SupportViews)) == set(SUPPORT_VIEWS)


def test_every_preset_builds_a_valid_configuration() -> None:
    for name, preset in TDGPlugin.presets.items():
        assert TDGPlugin(**preset).config is not None, name
    paper = TDGPlugin(**TDGPlugin.presets["paper"]).config
    assert (paper.iterations, paper.transforms, paper.pairs_per_step) == (5000, "rgb54", 540)
    assert paper.support_views == "regad"


def test_whole_number_floats_become_ints() -> None:
    config = TDGPlugin(iterations=20.0, width=8.0).config
    assert (config.iterations, config.width) == (20, 8)
    assert isinstance(config.iterations, int) and isinstance(config.width, int)
    assert TDGPlugin(iterations=20.0).get_params()["iterations"] == 20  # the identity, too
