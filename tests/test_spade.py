"""SPADE: kNN stages against a brute-force torch.cdist reference, detection properties, and
the plugin's parameter checks. The conformance suite runs on spade from test_conformance.py
(it parametrises over every registered plugin)."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from fsad_bench.errors import FsadError
from fsad_bench.params import ParamError
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_methods.common.features import concat_upsampled, global_average
from fsad_methods.common.maps import gaussian_smooth
from fsad_methods.spade.core import PIXEL_MATCHING, SPADEModel, nearest_distances
from fsad_methods.spade.plugin import SPADE, PixelMatching


def pixel_stages(images: torch.Tensor) -> list[torch.Tensor]:
    """A backbone stand-in: pixels and their squares averaged at strides 2, 4, 8 (pyramid) and
    16 (image level), so the kNN logic is tested on features anyone can recompute."""
    rich = torch.cat([images, images.square()], dim=1)
    return [F.avg_pool2d(rich, s) for s in (2, 4, 8, 16)]


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_distances_match_cdist(k: int) -> None:
    generator = torch.Generator().manual_seed(0)
    queries, gallery = (
        torch.randn(40, 7, generator=generator),
        torch.randn(25, 7, generator=generator),
    )
    expected = torch.cdist(queries, gallery).sort(dim=1).values[:, :k]
    torch.testing.assert_close(
        nearest_distances(queries, gallery, k), expected, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="gallery of 25"):
        nearest_distances(queries, gallery, 26)


def brute_force_spade(
    support: torch.Tensor, images: torch.Tensor, k_images: int, k_pixels: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPADE written out with torch.cdist and explicit sorting, one test image at a time."""
    sup, test = pixel_stages(support), pixel_stages(images)
    image_dist = torch.cdist(test[-1].mean((2, 3)), sup[-1].mean((2, 3)))
    k = min(k_images, len(support))
    order = image_dist.argsort(dim=1)[:, :k]
    scores = image_dist.gather(1, order).mean(dim=1)

    def pyramid(stages: list[torch.Tensor]) -> torch.Tensor:
        size = stages[0].shape[-2:]
        return torch.cat(
            [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in stages], 1
        )

    sup_pix, test_pix = pyramid(sup[:-1]), pyramid(test[:-1])
    maps = []
    for b in range(len(images)):
        gallery = sup_pix[order[b]].permute(0, 2, 3, 1).reshape(-1, sup_pix.shape[1])
        queries = test_pix[b].permute(1, 2, 0).reshape(-1, test_pix.shape[1])
        nearest = torch.cdist(queries, gallery).sort(dim=1).values[:, :k_pixels].mean(dim=1)
        grid = nearest.reshape(1, 1, *test_pix.shape[-2:])
        maps.append(F.interpolate(grid, size=images.shape[-2:], mode="bilinear")[0, 0])
    return scores, gaussian_smooth(torch.stack(maps), sigma)


@pytest.mark.parametrize(("k_images", "k_pixels"), [(50, 1), (2, 1), (2, 3), (1, 2)])
def test_scores_and_maps_match_the_brute_force_reference(k_images: int, k_pixels: int) -> None:
    generator = torch.Generator().manual_seed(1)
    support, images = torch.rand(5, 3, 32, 32, generator=generator), torch.rand(3, 3, 32, 32)
    model = SPADEModel(pixel_stages, k_images=k_images, k_pixels=k_pixels, sigma=2.0)
    model.fit(support)
    scores, maps = model.score(images)
    want_scores, want_maps = brute_force_spade(support, images, k_images, k_pixels, 2.0)
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps, want_maps, rtol=1e-3, atol=1e-4)


def test_gallery_is_the_nearest_support_images_only() -> None:
    """With k_images=1 a test image is matched against its nearest support image alone: a
    copy of a support image has zero pixel distances even when others are far away."""
    support = torch.cat([torch.zeros(1, 3, 32, 32), torch.rand(2, 3, 32, 32)])
    model = SPADEModel(pixel_stages, k_images=1, sigma=0.0)
    model.fit(support)
    distances, neighbours = model.nearest_supports(global_average(pixel_stages(support[1:2])[-1]))
    assert neighbours.tolist() == [[1]] and float(distances) == pytest.approx(0.0, abs=1e-5)
    scores, maps = model.score(support[1:2])
    assert float(scores) == pytest.approx(0.0, abs=1e-5)
    assert float(maps.abs().max()) < 1e-2


def test_concat_upsampled_interpolates_coarse_levels() -> None:
    fine, coarse = torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4)
    out = concat_upsampled([fine, coarse])
    assert out.shape == (1, 5, 8, 8) and torch.equal(out[:, :2], fine)
    torch.testing.assert_close(
        out[:, 2:], F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    )


@pytest.mark.parametrize("matching", ["concat", "per_layer"])
def test_defect_scores_above_supports_and_map_peaks_on_it(matching: str) -> None:
    support = tiny_normals(4, 64)
    defect, mask = tiny_defect(64)
    model = SPADEModel(pixel_stages, sigma=2.0, pixel_matching=matching)
    model.fit(support)
    support_scores, _ = model.score(support)
    defect_score, defect_map = model.score(defect)
    assert float(defect_score) > float(support_scores.max())
    peak = int(defect_map[0].flatten().argmax())
    near = F.max_pool2d(mask[None].float(), 9, stride=1, padding=4)[0, 0]  # mask + 4 px
    assert bool(near.flatten()[peak]), "the map's maximum is away from the pasted square"
    assert float(defect_map[0][mask[0]].mean()) > 3 * float(defect_map[0][~mask[0]].mean())


def test_plugin_rejects_bad_parameters() -> None:
    with pytest.raises(ParamError, match="pixel_matching='nearest'.*'concat' or 'per_layer'"):
        SPADE(pixel_matching="nearest")
    with pytest.raises(ParamError, match="k_images=0"):
        SPADE(k_images=0)
    with pytest.raises(ParamError, match=r"layers=\[3\]: tuple should have at least 2 items"):
        SPADE(layers=[3])
    with pytest.raises(ParamError, match="unknown parameter"):
        SPADE(k=5)
    assert SPADE(layers=[1, 2, 4]).get_params()["layers"] == [1, 2, 4]  # JSON: a list
    assert SPADE.presets["paper"]["backbone"] == "wide_resnet50_2"


@pytest.mark.parametrize(("name", "value"), [("k_images", 0), ("k_pixels", -1), ("sigma", -0.5)])
def test_out_of_range_value_is_one_line_naming_the_parameter(name: str, value: object) -> None:
    with pytest.raises(ParamError) as error:
        SPADE(**{name: value})
    message = str(error.value)
    assert message.startswith(f"spade: parameter {name}={value!r}:") and "\n" not in message


def test_pixel_matching_choices_are_the_cores() -> None:
    assert get_args(PixelMatching) == PIXEL_MATCHING


def test_preflight_names_layers_the_backbone_lacks() -> None:
    with pytest.raises(FsadError, match=r"layers \[1, 2, 9\] are not valid"):
        SPADE(layers=[1, 2, 9]).preflight()
