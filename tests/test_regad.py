"""RegAD: STN geometry, identity start, meta-training, meta state, and the meta-train wall."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pytest
import torch
from torch import nn

from fsad_bench.datasets.io import load_image
from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import cached_feature_extractor
from fsad_bench.method import MetaTrainSet, method_defaults
from fsad_bench.params import ParamError
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.run.seeding import seed_everything
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.features import concat_at_finest
from fsad_methods.regad import plugin as regad_plugin
from fsad_methods.regad.core import (
    RegADNet,
    TrainSettings,
    augment_support,
    pair_loss,
    train_registration,
)
from fsad_methods.regad.plugin import RegAD, StnMode, split_stages
from fsad_methods.regad.stn import (
    STN_MODES,
    SpatialTransformer,
    compose,
    invert,
    params_to_theta,
    warp,
)

TINY = {"input_size": 32, "iterations": 2, "batch_size": 2, "augment_copies": 1}


def tiny_net(mode: str = "rotation_scale") -> RegADNet:
    """Three strided convs stand in for a backbone: fast enough to train in a test."""
    stages = [
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU()),
    ]
    return RegADNet(stages, [8, 12, 16], (0.5,) * 3, (0.25,) * 3, mode)


def meta_set(held_out: str = "held") -> MetaTrainSet:
    images = {f"cat{i}": tiny_normals(8, 32, seed=10 + i) for i in range(2)}
    return MetaTrainSet(images, held_out, "tiny", seed=0)


@pytest.mark.parametrize("mode", sorted(STN_MODES))
def test_stn_starts_at_identity(mode: str) -> None:
    features = torch.randn(3, 5, 9, 7)
    warped, theta = SpatialTransformer(5, mode)(features)
    torch.testing.assert_close(theta, torch.eye(2, 3).expand(3, 2, 3))
    torch.testing.assert_close(warped, features)


def test_rotation_scale_is_rotation_times_scale() -> None:
    angle, sx, sy = 0.3, 1.2, 0.7
    theta = params_to_theta(torch.tensor([[angle, sx - 1, sy - 1]]), "rotation_scale")[0]
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    torch.testing.assert_close(theta[:, :2], rotation @ torch.diag(torch.tensor([sx, sy])))
    torch.testing.assert_close(theta[:, 2], torch.zeros(2))


def test_compose_and_invert_follow_the_warps() -> None:
    a = params_to_theta(torch.tensor([[0.2, 0.1, -0.1, 0.05, -0.1, 0.03]]), "affine")
    b = params_to_theta(torch.tensor([[-0.4, 0.1, -0.05]]), "rotation_scale")
    torch.testing.assert_close(compose(a, invert(a)), torch.eye(2, 3)[None])
    # a smooth image: bilinear resampling is then nearly exact away from the borders
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    image = torch.stack([torch.sin(2 * xs + ys), torch.cos(xs - 2 * ys)])[None]
    centre = (slice(None), slice(None), slice(40, 88), slice(40, 88))
    twice = warp(warp(image, a), b)[centre]
    torch.testing.assert_close(twice, warp(image, compose(a, b))[centre], atol=1e-3, rtol=0)
    assert (twice - warp(image, compose(b, a))[centre]).abs().max() > 0.05  # order matters


def test_stages_reproduce_the_extractor() -> None:
    extractor, _ = cached_feature_extractor("efficientnet_lite0", "pretrained", (1, 2, 3), "cpu")
    stages = split_stages(extractor.body, tuple(extractor.layers))
    images = torch.rand(2, 3, 64, 64)
    x, ours = extractor.normalise(images), []
    with torch.no_grad():
        for stage in stages:
            x = stage(x)
            ours.append(x)
        expected = extractor(images)
    assert [f.shape for f in ours] == [f.shape for f in expected]
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_untrained_net_embeds_plain_backbone_features() -> None:
    """Identity STNs and their inverses: embed == the stages' features concatenated."""
    net = tiny_net().eval()
    images = torch.rand(2, 3, 32, 32)
    x, plain = (images - net.mean) / net.std, []
    with torch.no_grad():
        for stage in net.stages:
            x = stage(x)
            plain.append(x)
    torch.testing.assert_close(net.embed(images), concat_at_finest(plain))


def test_meta_training_reduces_the_loss() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    images = {f"cat{i}": tiny_normals(10, 32, seed=i) for i in range(2)}
    settings = TrainSettings(iterations=40, batch_size=8, lr=0.05, val_fraction=0.0)
    generator = torch.Generator().manual_seed(0)
    fixed = (tiny_normals(8, 32, seed=5), tiny_normals(8, 32, seed=6))
    net.eval()
    with torch.no_grad():
        before = float(pair_loss(net, *fixed))
    log = train_registration(net, images, settings, generator)
    with torch.no_grad():
        after = float(pair_loss(net, *fixed))
    assert len(log.losses) == 40 and log.best_iteration == -1
    assert sum(log.losses[-5:]) / 5 < sum(log.losses[:5]) / 5
    assert after < before
    assert any(p.grad is not None for p in net.stns.parameters())


def test_model_selection_keeps_the_best_validation_state() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    images = {f"cat{i}": tiny_normals(10, 32, seed=i) for i in range(2)}
    settings = TrainSettings(iterations=12, batch_size=4, lr=0.05, val_fraction=0.3, eval_every=4)
    log = train_registration(net, images, settings, torch.Generator().manual_seed(0))
    assert log.val_iterations == [4, 8, 12]
    assert log.best_iteration == log.val_iterations[log.val_losses.index(min(log.val_losses))]


def test_augment_support_keeps_originals_and_follows_the_generator() -> None:
    support = tiny_normals(3, 32)
    first = augment_support(support, 5, torch.Generator().manual_seed(1))
    again = augment_support(support, 5, torch.Generator().manual_seed(1))
    assert first.shape == (18, 3, 32, 32) and torch.equal(first, again)
    assert torch.equal(first[:3], support)
    assert not torch.equal(first, augment_support(support, 5, torch.Generator().manual_seed(2)))


def test_meta_state_round_trip_gives_the_same_scores() -> None:
    method = RegAD(**TINY)
    seed_everything(0)
    method.meta_fit(meta_set())
    state = method.meta_state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    clone = RegAD(**TINY)
    clone.load_meta_state_dict(state)
    support, (defect, _) = tiny_normals(2, 32), tiny_defect(32)
    outputs = []
    for m in (method, clone):
        seed_everything(3)
        m.fit(support)
        with torch.inference_mode():
            outputs.append(m.predict(torch.cat([support, defect])))
    torch.testing.assert_close(outputs[0].scores, outputs[1].scores)
    torch.testing.assert_close(outputs[0].maps, outputs[1].maps)
    assert clone.provenance()["meta_loss_first_last"] == method.provenance()["meta_loss_first_last"]


def test_zero_iterations_keep_the_untrained_network() -> None:
    method = RegAD(**{**TINY, "iterations": 0})
    seed_everything(0)
    method.meta_fit(meta_set())
    images = tiny_normals(2, 32)
    with torch.no_grad():
        _, thetas = method._net.aligned(images)
    for theta in thetas:
        torch.testing.assert_close(theta, torch.eye(2, 3).expand(2, 2, 3))
    clone = RegAD(**{**TINY, "iterations": 0})
    clone.load_meta_state_dict(method.meta_state_dict())
    assert clone.provenance()["meta_iterations"] == 0


def test_provenance_names_the_backbone_that_ran() -> None:
    from fsad_bench.features.backbones import resolve_weights

    try:
        resolve_weights("resnet18")
        expected = "resnet18"
    except WeightsError:
        expected = "efficientnet_lite0"
    method = RegAD(**TINY)
    provenance = method.provenance()
    assert provenance["backbone"] == expected and provenance["backbone_requested"] == "auto"
    assert expected in provenance["weights"]
    assert method.get_params()["backbone"] == expected  # the run identity names it too
    rebuilt = RegAD(**method.get_params())
    assert rebuilt.get_params() == method.get_params()
    assert rebuilt.provenance()["backbone_requested"] == expected


@pytest.mark.parametrize("resnet18_here", [True, False])
def test_auto_resolves_at_construction(
    resnet18_here: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both branches, whatever this machine holds: ResNet-18 when its weights resolve
    (with the weights asked for), else EfficientNet-Lite0 with its pretrained weights."""
    asked: list[tuple[str, str]] = []

    def check(name: str, weights: str, layers: object = None) -> None:
        asked.append((name, weights))
        if not resnet18_here:
            raise WeightsError("no resnet18 here")

    monkeypatch.setattr(regad_plugin, "check_backbone", check)
    params = RegAD(weights="random").get_params()
    assert asked == [("resnet18", "random")]
    expected = ("resnet18", "random") if resnet18_here else ("efficientnet_lite0", "pretrained")
    assert (params["backbone"], params["weights"]) == expected
    asked.clear()
    assert RegAD(backbone="efficientnet_lite1").get_params()["backbone"] == "efficientnet_lite1"
    assert asked == []  # an explicit backbone is never looked up at construction
    assert method_defaults(RegAD)["backbone"] == "auto"  # the declared default stays auto


def test_bad_params_fail_with_the_fix() -> None:
    with pytest.raises(ParamError, match="stn_mode='perspective'.*'rotation_scale'"):
        RegAD(stn_mode="perspective")
    with pytest.raises(ParamError, match="exactly one of epochs and iterations"):
        RegAD(epochs=5)
    with pytest.raises(ParamError, match="exactly one of epochs and iterations"):
        RegAD(iterations=None)
    with pytest.raises(ParamError, match="frozen_stages=4: input should be less than or equal"):
        RegAD(frozen_stages=4)
    with pytest.raises(ParamError, match="input_size=100: input should be a multiple of 16"):
        RegAD(input_size=100)
    with pytest.raises(ParamError, match="backbone='vgg16': choose auto or one of"):
        RegAD(backbone="vgg16")
    RegAD(epochs=5, iterations=None)  # the paper's budget form builds


@pytest.mark.parametrize(
    ("name", "value"),
    [("input_size", 16), ("val_fraction", 1.0), ("momentum", -0.1), ("batch_size", 0)],
)
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        RegAD(**{name: value})
    message = str(error.value)
    assert message.startswith(f"regad: parameter {name}={value!r}:") and "\n" not in message


def test_stn_choices_are_the_cores() -> None:
    assert set(get_args(StnMode)) == set(STN_MODES)


def test_runner_never_shows_meta_fit_the_held_out_images(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compared by content: no held-out training image hides under another category's key."""
    seen: list[MetaTrainSet] = []
    original = RegAD.meta_fit

    def spy(self: RegAD, tasks: MetaTrainSet) -> None:
        seen.append(tasks)
        original(self, tasks)

    monkeypatch.setattr(RegAD, "meta_fit", spy)
    options = {"data_root": mvtec_root, "layout": "mvtec", "methods": "regad", "shots": "1",
               "seeds": "0", "out": tmp_path / "run", "image_size": 32,
               "params": [f"regad.{k}={v}" for k, v in TINY.items()]}  # fmt: skip
    summary = run(build_run_config(options), log=lambda _: None)
    assert not summary.failed, [r.error for r in summary.failed]
    categories = ("alpha", "beta", "gamma")
    train = {
        c: [load_image(p, 32) for p in sorted((mvtec_root / c / "train" / "good").glob("*.png"))]
        for c in categories
    }
    assert sorted(t.held_out for t in seen) == sorted(categories)

    def contains(batch: torch.Tensor, image: torch.Tensor) -> bool:
        return any(torch.equal(image, candidate) for candidate in batch)

    for tasks in seen:
        given = list(tasks.images.values())
        assert not any(contains(b, image) for b in given for image in train[tasks.held_out])
        for other in set(categories) - {tasks.held_out}:  # the comparison does find images
            assert all(any(contains(b, image) for b in given) for image in train[other])
