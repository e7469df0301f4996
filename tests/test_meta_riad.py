"""Meta-RIAD: the torch.func MAML gradient, the meta-update, adaptation and BatchNorm handling."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from fsad_bench.method import MetaTrainSet
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_normals
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.reconstruction import random_pixel_masks
from fsad_methods.common.unet import UNet
from fsad_methods.meta_riad.core import (
    Task,
    adapt,
    batch_statistics,
    calibrate_batchnorm,
    maml_gradient,
    masked,
    parameters_of,
    sample_task,
)
from fsad_methods.meta_riad.plugin import MetaRIAD

LOSS = ReconstructionLoss()
TINY = {
    "input_size": 32,
    "width": 4,
    "meta_iterations": 1,
    "meta_batch": 1,
    "meta_shots": 1,
    "meta_queries": 1,
    "adapt_steps": 3,
    "bn_passes": 2,
    "test_repeats": 1,
}


def tiny_task(steps: int = 2, dtype: torch.dtype = torch.float32) -> Task:
    images = tiny_normals(4, 32, seed=3).to(dtype)
    return sample_task(images, 2, 2, steps, (0.2, 0.8), torch.Generator().manual_seed(0))


def unrolled_by_hand(net: UNet, params: dict, task: Task, lr: float) -> tuple[list, list]:
    """Independent MAML gradients: plain autograd, create_graph through the inner steps."""
    with batch_statistics(net):
        start = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        current = start
        for masks in task.support_masks:
            out = functional_call(net, current, (masked(task.support, masks),))
            grads = torch.autograd.grad(
                LOSS(task.support, out), list(current.values()), create_graph=True
            )
            current = {k: v - lr * g for (k, v), g in zip(current.items(), grads, strict=True)}
        out = functional_call(net, current, (masked(task.query, task.query_masks),))
        query = LOSS(task.query, out)
        second = torch.autograd.grad(query, list(start.values()), retain_graph=True)
        first = torch.autograd.grad(query, list(current.values()))
    return list(second), list(first)


def test_maml_gradients_match_plain_autograd() -> None:
    torch.manual_seed(0)
    net, task = UNet(2).double(), tiny_task(dtype=torch.float64)
    params = parameters_of(net)
    second_ref, first_ref = unrolled_by_hand(net, params, task, lr=0.05)
    _, second = maml_gradient(net, LOSS, params, task, 0.05, first_order=False)
    _, first = maml_gradient(net, LOSS, params, task, 0.05, first_order=True)
    for name, ref_2, ref_1 in zip(params, second_ref, first_ref, strict=True):
        torch.testing.assert_close(second[name], ref_2, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(first[name], ref_1, rtol=1e-7, atol=1e-9)
    gap = sum(float((second[n] - first[n]).norm()) for n in params)
    assert gap > 1e-3, "second-order gradient should differ from the first-order one"


def test_functional_passes_leave_batchnorm_buffers_alone() -> None:
    torch.manual_seed(0)
    net = UNet(2)
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    maml_gradient(net, LOSS, parameters_of(net), tiny_task(steps=1), 0.05)
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.track_running_stats for m in norms), "flags must be restored"


def query_loss_after_adaptation(net: UNet, task: Task, lr: float) -> float:
    with batch_statistics(net):
        adapted = adapt(net, LOSS, parameters_of(net), task.support, task.support_masks, lr)
        out = functional_call(net, adapted, (masked(task.query, task.query_masks),))
        return float(LOSS(task.query, out))


def test_meta_updates_reduce_the_query_loss() -> None:
    for first_order in (False, True):
        torch.manual_seed(0)
        net, task = UNet(2), tiny_task(steps=1)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        before = query_loss_after_adaptation(net, task, 0.05)
        for _ in range(5):
            _, grads = maml_gradient(net, LOSS, parameters_of(net), task, 0.05, first_order)
            for name, p in net.named_parameters():
                p.grad = grads[name]
            optimizer.step()
        after = query_loss_after_adaptation(net, task, 0.05)
        assert after < 0.9 * before, f"first_order={first_order}: {before:.4f} -> {after:.4f}"


def test_tasks_hold_disjoint_images_of_one_category() -> None:
    images = torch.arange(6.0)[:, None, None, None].expand(6, 3, 16, 16).contiguous()
    task = sample_task(images, 2, 3, 4, (0.2, 0.8), torch.Generator().manual_seed(0))
    support, query = set(task.support[:, 0, 0, 0].tolist()), set(task.query[:, 0, 0, 0].tolist())
    assert len(support) == 2 and len(query) == 3 and not support & query
    assert task.support_masks.shape == (4, 2, 16, 16)
    assert task.query_masks.shape == (3, 16, 16)


def test_calibration_sets_running_statistics_from_the_support_set() -> None:
    torch.manual_seed(0)
    net, support = UNet(2), tiny_normals(2, 32)
    calibrate_batchnorm(net, support, 1, (0.2, 0.8), torch.Generator().manual_seed(7))
    first_conv, first_norm = net.inc[0], net.inc[1]
    masks = random_pixel_masks(2, 32, 32, (0.2, 0.8), torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = first_conv(masked(support, masks)).mean(dim=(0, 2, 3))
    torch.testing.assert_close(first_norm.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert not net.training


def meta_set() -> MetaTrainSet:
    images = {"a": tiny_normals(4, 32, seed=1), "b": tiny_normals(4, 32, seed=2)}
    return MetaTrainSet(images=images, held_out="c", data_hash="x", seed=0)


def scores_after(steps: int, state: dict) -> torch.Tensor:
    method = MetaRIAD(**(TINY | {"adapt_steps": steps}))
    method.load_meta_state_dict(state)
    torch.manual_seed(1)
    method.fit(tiny_normals(2, 32, seed=4))
    with torch.inference_mode():
        return method.predict(tiny_normals(3, 32, seed=5)).scores


def test_adaptation_changes_the_scores() -> None:
    method = MetaRIAD(**TINY)
    torch.manual_seed(0)
    method.meta_fit(meta_set())
    state = method.meta_state_dict()
    unadapted, adapted = scores_after(0, state), scores_after(3, state)
    assert not torch.allclose(unadapted, adapted, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(scores_after(3, state), adapted)  # and deterministically so


@pytest.mark.parametrize(
    ("name", "value"),
    [("input_size", 40), ("meta_shots", 0), ("bn_passes", 0), ("density", [0.5, 0.2])],
)
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        MetaRIAD(**{name: value})
    message = str(error.value)
    assert message.startswith(f"meta_riad: parameter {name}={value!r}:") and "\n" not in message


def test_list_parameters_keep_their_json_form() -> None:
    params = MetaRIAD(density=[0.1, 0.9]).get_params()
    assert params["density"] == [0.1, 0.9] and params["test_cells"] == [1]
    assert MetaRIAD(**params).get_params() == params
