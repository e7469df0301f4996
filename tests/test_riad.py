"""RIAD: pretraining then fine-tuning from the pretrained state, fixed test masks."""

from __future__ import annotations

import pytest
import torch

from fsad_bench.method import MetaTrainSet
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_normals
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.unet import UNet
from fsad_methods.riad.core import train_inpainting
from fsad_methods.riad.plugin import RIAD

TINY = {"input_size": 32, "width": 4, "cells": [2, 4, 8], "pretrain_steps": 2, "fit_steps": 2}


def meta_set() -> MetaTrainSet:
    images = {"a": tiny_normals(4, 32, seed=1), "b": tiny_normals(4, 32, seed=2)}
    return MetaTrainSet(images=images, held_out="c", data_hash="x", seed=0)


def pretrained(**params: object) -> RIAD:
    method = RIAD(**(TINY | params))
    torch.manual_seed(0)
    method.meta_fit(meta_set())
    return method


def test_training_reduces_the_inpainting_loss() -> None:
    torch.manual_seed(0)
    net, images = UNet(4), tiny_normals(2, 32)
    losses = train_inpainting(
        net,
        images,
        steps=40,
        lr=1e-2,
        batch_size=2,
        cells=[2, 4],
        n_masks=3,
        loss_fn=ReconstructionLoss(),
        generator=torch.Generator().manual_seed(0),
    )
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not net.training, "training must leave the net in eval mode"


def test_fit_starts_from_the_pretrained_state_and_leaves_it_unchanged() -> None:
    method = pretrained(fit_steps=0)
    before = method.meta_state_dict()
    method.fit(tiny_normals(2, 64, seed=5))
    fitted = method._model.net.state_dict()
    assert all(torch.equal(fitted[k], v) for k, v in before.items())
    tuned = RIAD(**(TINY | {"fit_steps": 3}))
    tuned.load_meta_state_dict(before)
    tuned.fit(tiny_normals(2, 64, seed=5))
    assert all(torch.equal(tuned.meta_state_dict()[k], v) for k, v in before.items())
    weights = tuned._model.net.state_dict()
    assert not all(torch.equal(weights[k], v) for k, v in before.items())


def test_test_masks_come_from_the_episode_seed() -> None:
    method = pretrained()
    masks = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        method.fit(tiny_normals(1, 64))
        masks.append(method._model.test_masks)
    assert len(masks[0]) == len(TINY["cells"])
    assert all(torch.equal(a, b) for a, b in zip(masks[0], masks[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(masks[0], masks[2], strict=True))


def test_every_cell_size_is_a_partition_at_the_internal_size() -> None:
    method = pretrained()
    method.fit(tiny_normals(1, 64))
    for mask_set in method._model.test_masks:
        assert mask_set.shape == (3, 32, 32)
        assert torch.equal(mask_set.sum(dim=0), torch.ones(32, 32, dtype=torch.long))


def test_maps_are_at_input_size_and_scores_are_their_max() -> None:
    method = pretrained()
    method.fit(tiny_normals(2, 48))
    with torch.inference_mode():
        pred = method.predict(tiny_normals(3, 48, seed=9))
    assert pred.maps.shape == (3, 48, 48)
    assert torch.equal(pred.scores, pred.maps.flatten(1).amax(dim=1))


def test_bad_input_size_is_rejected_with_the_parameter_name() -> None:
    with pytest.raises(ParamError, match="input_size=40: input should be a multiple of 16"):
        RIAD(input_size=40)
    with pytest.raises(ParamError, match="cells"):
        RIAD(cells=[])
    with pytest.raises(ParamError, match="cells.1=0"):
        RIAD(cells=[2, 0])


@pytest.mark.parametrize(("name", "value"), [("input_size", 0), ("fit_lr", 0.0), ("n_masks", 0)])
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        RIAD(**{name: value})
    message = str(error.value)
    assert message.startswith(f"riad: parameter {name}={value!r}:") and "\n" not in message


def test_cells_keep_their_json_form() -> None:
    assert RIAD().get_params()["cells"] == [2, 4, 8, 16]
    assert RIAD(**TINY).get_params()["cells"] == TINY["cells"]
