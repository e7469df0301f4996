"""PaDiM core properties on tiny tensors, plus the plugin's parameter checks."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.features import concat_at_finest
from fsad_methods.common.gaussian import COVARIANCES, PositionGaussians
from fsad_methods.padim.core import PaDiMModel, random_channels
from fsad_methods.padim.plugin import Covariance, PaDiM


def pooled_pyramid(images: torch.Tensor) -> list[torch.Tensor]:
    """A backbone stand-in: raw pixels at strides 4 and 8 (6 channels in all)."""
    return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8)]


def test_concat_repeats_coarse_cells_like_padim_embedding_concat() -> None:
    fine, coarse = torch.randn(2, 3, 8, 6), torch.randn(2, 5, 4, 3)
    out = concat_at_finest([fine, coarse])
    # independent: every coarse cell covers a 2x2 block of fine positions
    blocks = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(out, torch.cat([fine, blocks], dim=1))


def test_channel_subset_is_fixed_by_channel_seed_not_global_rng() -> None:
    torch.manual_seed(1)
    a = random_channels(448, 100, seed=0)
    torch.manual_seed(2)
    b = random_channels(448, 100, seed=0)
    assert a is not None and torch.equal(a, b)
    assert len(a.unique()) == 100 and bool((a[1:] > a[:-1]).all())
    assert not torch.equal(a, random_channels(448, 100, seed=1))
    assert random_channels(176, None, 0) is None and random_channels(176, 176, 0) is None


def test_embedding_keeps_the_chosen_channels() -> None:
    images = torch.rand(2, 3, 32, 32)
    channels = torch.tensor([0, 4, 5])
    model = PaDiMModel(pooled_pyramid, channels=channels)
    full = concat_at_finest(pooled_pyramid(images))
    assert torch.equal(model.embed(images), full[:, channels])


def test_scores_are_map_max_and_maps_are_smoothed_distances() -> None:
    support = tiny_normals(5, 32)
    model = PaDiMModel(pooled_pyramid, sigma=0.0)
    model.fit(support)
    defect, _ = tiny_defect(32)
    scores, maps = model.score(defect)
    expected = PositionGaussians.fit(model.embed(support)).mahalanobis(model.embed(defect))
    upsampled = F.interpolate(expected[:, None], size=(32, 32), mode="bilinear")[:, 0]
    torch.testing.assert_close(maps, upsampled)
    assert maps.shape == (1, 32, 32) and torch.equal(scores, maps.flatten(1).max(1).values)


@pytest.mark.parametrize("covariance", ["eps", "ledoit_wolf"])
def test_defect_scores_above_support_and_k1_is_finite(covariance: str) -> None:
    support, (defect, mask) = tiny_normals(6, 64), tiny_defect(64)
    model = PaDiMModel(pooled_pyramid, covariance=covariance)
    model.fit(support)
    scores, maps = model.score(torch.cat([support, defect]))
    assert scores[-1] > scores[:-1].max()
    assert maps[-1][mask[0]].mean() > maps[-1][~mask[0]].mean()
    one = PaDiMModel(pooled_pyramid, covariance=covariance)
    one.fit(support[:1])
    assert torch.isfinite(one.score(defect)[0]).all()


def test_plugin_rejects_bad_params_with_the_fix() -> None:
    with pytest.raises(ParamError, match="covariance='shrunk'.*'eps' or 'ledoit_wolf'"):
        PaDiM(covariance="shrunk")
    with pytest.raises(ParamError, match="d=0: input should be greater than or equal to 1"):
        PaDiM(d=0)
    with pytest.raises(ParamError, match="eps=0: input should be greater than 0"):
        PaDiM(eps=0)
    with pytest.raises(ParamError, match="d=2.5"):
        PaDiM(d=2.5)


@pytest.mark.parametrize(("name", "value"), [("sigma", -1.0), ("channel_seed", -3), ("d", -1)])
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        PaDiM(**{name: value})
    message = str(error.value)
    assert message.startswith(f"padim: parameter {name}={value!r}:") and "\n" not in message


def test_covariance_choices_are_the_cores() -> None:
    assert get_args(Covariance) == COVARIANCES
    assert PaDiM(d=None).get_params()["d"] is None  # null still keeps every channel


def test_plugin_provenance_names_backbone_layers_and_channels() -> None:
    method = PaDiM(d=64)
    method.fit(tiny_normals(2, 64))
    provenance = method.provenance()
    assert provenance["strides"] == [4, 8, 16]
    assert provenance["channels"] == "64 of 176"
    assert "efficientnet_lite0" in provenance["weights"]
