"""DifferNet: the flow's log-det against autograd's Jacobian (and against FrEIA when it is
installed), the shared augmentations and multi-scale features, detection properties, and the
plugin's parameter checks. The conformance suite runs on differnet from test_conformance.py
(it parametrises over every registered plugin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsad_bench.errors import FsadError
from fsad_bench.features.backbones import cached_feature_extractor
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.augment import (
    REGAD_VIEWS,
    ColorJitter,
    RandomRotation,
    grey,
    regad_views,
    rotate,
)
from fsad_methods.common.features import multiscale_pooled
from fsad_methods.common.flows import (
    CouplingFlow,
    FixedPermutation,
    SoftClampedCoupling,
    gaussian_nll,
    mlp_subnet,
    soft_clamp,
)
from fsad_methods.differnet.core import DifferNetModel, FlowSpec, Schedule, Transforms
from fsad_methods.differnet.plugin import DifferNet


def tiny_flow(dim: int = 6, blocks: int = 3, clamp: float = 2.0) -> CouplingFlow:
    torch.manual_seed(0)
    flow = CouplingFlow(dim, blocks, mlp_subnet(16), clamp).double()
    with torch.no_grad():  # larger weights than the default init: scales far from 1
        for p in flow.parameters():
            p.mul_(3.0)
    return flow


def test_log_det_matches_autograd_jacobian() -> None:
    flow = tiny_flow()
    x = torch.randn(4, 6, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        sign, logabs = torch.linalg.slogdet(jacobian)
        assert abs(float(sign)) == 1.0  # the permutations' parity sets the sign
        torch.testing.assert_close(log_det[i], logabs, rtol=1e-9, atol=1e-9)


def test_odd_dimension_and_single_coupling_log_det() -> None:
    coupling = SoftClampedCoupling(5, mlp_subnet(8), clamp=1.5).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    _, log_det = coupling(x)
    for i in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda v: coupling(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jacobian)[1])


def test_inverse_undoes_forward_and_negates_log_det() -> None:
    flow = tiny_flow(dim=7)
    x = torch.randn(5, 7, dtype=torch.float64)
    z, log_det = flow(x)
    torch.testing.assert_close(flow.inverse(z), x)
    coupling = flow.couplings[0]
    y, forward_det = coupling(x)
    back, reverse_det = coupling(y, reverse=True)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(reverse_det, -forward_det)


def test_soft_clamp_is_bounded_and_near_identity_at_zero() -> None:
    s = torch.tensor([-1e6, -3.0, -1e-3, 0.0, 1e-3, 3.0, 1e6])
    out = soft_clamp(s, 3.0)
    assert bool((out.abs() < 3.0).all())
    torch.testing.assert_close(out[2:5], 0.636 * s[2:5], rtol=1e-4, atol=1e-9)


def test_permutations_are_fixed_by_block_index() -> None:
    torch.manual_seed(5)
    a = CouplingFlow(10, 2, mlp_subnet(4))
    torch.manual_seed(6)
    b = CouplingFlow(10, 2, mlp_subnet(4))
    for pa, pb in zip(a.permutations, b.permutations, strict=True):
        assert torch.equal(pa.perm, pb.perm)
    assert sorted(FixedPermutation(10, 0).perm.tolist()) == list(range(10))
    assert not torch.equal(a.permutations[0].perm, a.permutations[1].perm)


def test_matches_freia_glow_coupling_with_differnet_clamp() -> None:
    """Independent implementation: FrEIA's GLOWCouplingBlock + PermuteRandom (DifferNet's
    source of the block), given DifferNet's clamp function and the same subnet weights."""
    ff = pytest.importorskip("FrEIA.framework")
    fm = pytest.importorskip("FrEIA.modules")
    dim, blocks, clamp = 7, 3, 3.0
    ours = tiny_flow(dim, blocks, clamp)
    inn = ff.SequenceINN(dim)
    numpy_state = np.random.get_state()  # PermuteRandom reseeds numpy's global generator
    for k in range(blocks):
        inn.append(fm.PermuteRandom, seed=k)
        inn.append(
            fm.GLOWCouplingBlock,
            subnet_constructor=mlp_subnet(16),
            clamp=clamp,
            clamp_activation=lambda u: 0.636 * torch.atan(u / clamp),
            split_len=dim // 2,
        )
    np.random.set_state(numpy_state)
    inn = inn.double()
    for k in range(blocks):
        block = inn.module_list[2 * k + 1]
        block.subnet1.load_state_dict(ours.couplings[k].subnet1.state_dict())
        block.subnet2.load_state_dict(ours.couplings[k].subnet2.state_dict())
    x = torch.randn(5, dim, dtype=torch.float64)
    z, log_det = ours(x)
    z_freia, log_det_freia = inn(x)
    torch.testing.assert_close(z, z_freia)
    torch.testing.assert_close(log_det, log_det_freia)


def test_gaussian_nll_is_the_change_of_variables_density() -> None:
    flow = tiny_flow(dim=2, blocks=1)
    x = torch.randn(3, 2, dtype=torch.float64)
    z, log_det = flow(x)
    normal = torch.distributions.Normal(0.0, 1.0)
    log_px = normal.log_prob(z).sum(dim=1) + log_det
    torch.testing.assert_close(gaussian_nll(z, log_det), -log_px - math.log(2 * math.pi))


def test_regad_views_are_the_published_family() -> None:
    images = torch.rand(2, 3, 16, 16)
    views = regad_views(images).reshape(REGAD_VIEWS, 2, 3, 16, 16)
    assert REGAD_VIEWS == 22
    assert torch.equal(views[0], images)
    assert torch.equal(views[17], images.flip(-1))
    torch.testing.assert_close(views[18], grey(images))
    torch.testing.assert_close(views[20], images.rot90(2, dims=(-2, -1)), rtol=0, atol=1e-5)
    # a pi/4 rotation about the centre keeps the centre pixel region
    assert float((views[4][..., 7:9, 7:9] - images[..., 7:9, 7:9]).abs().max()) < 0.35
    assert all(not torch.equal(views[v], images) for v in range(1, REGAD_VIEWS))


def test_rotation_round_trip_and_jitter_ranges() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(3, 3, 33, 33)
    images[:, :, 10:23, 10:23] = 1.0  # a centred square survives any rotation
    angles = RandomRotation(180.0).angles(3, generator)
    assert bool((angles.abs() <= 180).all())
    back = rotate(rotate(images, angles), -angles)
    assert float((back - images)[..., 12:21, 12:21].abs().max()) < 1e-4
    jitter = ColorJitter(brightness=0.5)
    out = jitter(torch.full((64, 3, 4, 4), 0.5), generator)
    assert float(out.min()) >= 0.25 - 1e-6 and float(out.max()) <= 0.75 + 1e-6
    assert not ColorJitter().active and torch.equal(ColorJitter()(images, generator), images)
    with pytest.raises(ValueError, match="saturation=-1"):
        ColorJitter(saturation=-1)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    extractor, _ = cached_feature_extractor("efficientnet_lite0", "pretrained", (4,), "cpu")
    return extractor


def test_multiscale_pooled_concatenates_scales_and_passes_gradients(lite0) -> None:
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    features = multiscale_pooled(lite0, images, scales=3)
    assert features.shape == (2, 3 * 320)
    half = F.interpolate(images, size=(32, 32))
    torch.testing.assert_close(features[:, 320:640], lite0(half)[-1].mean(dim=(2, 3)))
    features.sum().backward()
    assert images.grad is not None and bool(images.grad.abs().sum() > 0)


@pytest.fixture(scope="module")
def fitted(lite0) -> DifferNetModel:
    model = DifferNetModel(
        lite0,
        input_size=128,
        scales=2,
        flow=FlowSpec(blocks=4, hidden=128),
        schedule=Schedule(epochs=60, batch_size=8, lr=1e-3, feature_pool=8),
        transforms=Transforms(support_views=False, test_copies=4),
    )
    model.fit(tiny_normals(4, 128), torch.Generator().manual_seed(0))
    return model


def test_training_lowers_the_likelihood_loss(fitted) -> None:
    first, last = fitted.losses[:5], fitted.losses[-5:]
    assert sum(last) / 5 < sum(first) / 5 - 0.5


def test_defect_scores_above_supports_and_gradient_map_peaks_on_it(fitted) -> None:
    defect, mask = tiny_defect(128)
    support_scores, _ = fitted.score(tiny_normals(4, 128))
    with torch.inference_mode():  # as the runner calls predict
        defect_score, defect_map = fitted.score(defect)
    assert float(defect_score) > float(support_scores.max())
    # a gradient map is strongest along the square's edges: allow the blur's reach (3 sigma)
    near = F.max_pool2d(mask[None].float(), 19, stride=1, padding=9)[0, 0]
    assert bool(near.flatten()[int(defect_map[0].flatten().argmax())])
    assert float(defect_map[0][mask[0]].mean()) > 3 * float(defect_map[0][~mask[0]].mean())


def test_test_angles_cover_the_training_rotations() -> None:
    assert Transforms(test_copies=4).test_angles().tolist() == [0.0, 90.0, 180.0, 270.0]
    limited = Transforms(rotation=RandomRotation(10.0), test_copies=3).test_angles()
    assert limited.tolist() == [-10.0, 0.0, 10.0]
    assert Transforms(rotation=RandomRotation(0.0), test_copies=8).test_angles().tolist() == [0]


def test_schedule_counts_feature_copies() -> None:
    assert Schedule().copies_per_image() == 192 * 4  # the paper: fresh copies every epoch
    assert Schedule(epochs=24, feature_pool=2).copies_per_image() == 2
    # fresh copies every epoch; a pool is cycled through; a small pool is used once an epoch
    assert Schedule(epochs=3).epoch_copies(1).tolist() == [4, 5, 6, 7]
    assert Schedule(epochs=10, feature_pool=6).epoch_copies(1).tolist() == [4, 5, 0, 1]
    assert Schedule(epochs=24, feature_pool=2).epoch_copies(5).tolist() == [0, 1]


def test_plugin_rejects_bad_parameters() -> None:
    with pytest.raises(ParamError, match="support_views='all'.*'regad' or 'none'"):
        DifferNet(support_views="all")
    with pytest.raises(ParamError, match="feature_pool=0"):
        DifferNet(feature_pool=0)
    with pytest.raises(ParamError, match="input_size=16 is too small for 3 scales"):
        DifferNet(input_size=16)
    DifferNet(input_size=16, scales=2)  # 8 px at the smallest scale is enough
    with pytest.raises(ParamError, match="rotation=270"):
        DifferNet(rotation=270.0)
    with pytest.raises(ParamError, match="layer=\\[3, 4\\]"):
        DifferNet(layer=[3, 4])
    with pytest.raises(ParamError, match="layer=True"):  # a stage index, not a flag
        DifferNet(layer=True)
    with pytest.raises(ParamError, match="brightness=-0.5"):
        DifferNet(brightness=-0.5)
    with pytest.raises(ParamError, match="unknown parameter"):
        DifferNet(angle=90)
    paper = DifferNet.presets["paper"]
    assert (paper["epochs"], paper["hidden"], paper["test_copies"]) == (192, 2048, 64)


@pytest.mark.parametrize(
    ("name", "value"), [("scales", 0), ("clamp", 0.0), ("test_copies", 0), ("saturation", -1.0)]
)
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        DifferNet(**{name: value})
    message = str(error.value)
    assert message.startswith(f"differnet: parameter {name}={value!r}:") and "\n" not in message


def test_preflight_names_a_stage_the_backbone_lacks() -> None:
    with pytest.raises(FsadError, match=r"layers \[9\] are not valid"):
        DifferNet(layer=9).preflight()
