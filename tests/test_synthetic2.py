"""Version 2 of the embedded dataset, its wiring, and the raw-pixel baseline's core."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.spatial.distance import cdist

from fsad_bench.datasets import get_layout, mvtec, synthetic2, synthetic_versions
from fsad_bench.datasets.synthetic2 import (
    CATEGORIES,
    DEFECTS,
    SYNTHETIC2_VERSION,
    generate_synthetic2,
    make_sample,
)
from fsad_bench.datasets.synthetic2_defects import MAX_AREA, MIN_AREA
from fsad_bench.datasets.synthetic_common import category_hash
from fsad_bench.errors import DatasetError
from fsad_bench.protocols.protocol import load_protocol
from fsad_bench.run.config import resolve_protocol
from fsad_methods.pixel_knn.core import PixelKNNModel, pixel_patches

SIZE = 64
SMALL = {"image_size": SIZE, "n_train": 2, "n_test_good": 2, "n_test_per_defect": 2}
TEXTURES = ("brick", "gravel", "fibre", "leather", "weave")
OBJECTS = tuple(name for name in CATEGORIES if name not in TEXTURES)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic2(tmp_path_factory.mktemp("synth2") / "data", seed=3, **SMALL)


# ---------------------------------------------------------------- determinism


def test_a_category_regenerates_byte_identical_with_the_protocols_hash(tmp_path: Path) -> None:
    """The protocol's recorded hash is what the generator writes today, file for file."""
    options = load_protocol("synthetic2_loo").layout_options
    assert options["generator"] == SYNTHETIC2_VERSION
    first = generate_synthetic2(tmp_path / "a", categories=["capsule"])
    second = generate_synthetic2(tmp_path / "b", categories=["capsule"])
    assert _files(first) == _files(second)
    recorded = options["content_sha256.capsule"]
    assert category_hash(first, "capsule") == recorded
    meta = json.loads((first / "SYNTHETIC.json").read_text())
    assert meta["content_sha256"] == {"capsule": recorded}


def test_protocol_records_a_hash_for_each_of_its_categories() -> None:
    protocol = load_protocol("synthetic2_loo")
    hashed = {k.split(".", 1)[1] for k in protocol.layout_options if k.startswith("content_")}
    assert hashed == set(protocol.categories) == set(CATEGORIES)
    assert set(protocol.metrics) == {"image_auroc", "pixel_auroc", "aupro"}
    assert protocol.dataset == SYNTHETIC2_VERSION and protocol.layout == "synthetic"
    quick = load_protocol("synthetic2_quick")
    assert quick.layout_options == protocol.layout_options
    assert quick.manifest_path() == protocol.manifest_path()
    assert set(quick.categories) < set(protocol.categories)


def test_other_seed_differs_and_test_images_do_not_depend_on_counts(tmp_path: Path) -> None:
    opts = {**SMALL, "categories": ("weave", "cable")}
    base = _files(generate_synthetic2(tmp_path / "a", seed=5, **opts))
    other = _files(generate_synthetic2(tmp_path / "b", seed=6, **opts))
    more = _files(generate_synthetic2(tmp_path / "c", seed=5, **{**opts, "n_train": 3}))
    pngs = [key for key in base if key.endswith(".png") and "ground_truth" not in key]
    assert all(base[key] != other[key] for key in pngs)
    assert all(more[key] == base[key] for key in pngs)


# ---------------------------------------------------------------- layout and masks


def test_layout_every_defect_kind_has_images_and_masks(small: Path) -> None:
    meta = json.loads((small / "SYNTHETIC.json").read_text())
    assert meta["generator"] == SYNTHETIC2_VERSION and "CC0" in meta["license"]
    assert mvtec.discover_categories(small) == sorted(CATEGORIES)
    assert len(CATEGORIES) >= 10 and len(OBJECTS) >= 4
    for name in CATEGORIES:
        folder = small / name
        kinds = sorted(DEFECTS[name])
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(["good", *kinds])
        assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == kinds
        assert len(list((folder / "train" / "good").glob("*.png"))) == 2
        for kind in DEFECTS[name]:
            for image_path in sorted((folder / "test" / kind).glob("*.png")):
                mask = _load(folder / "ground_truth" / kind / f"{image_path.stem}_mask.png")
                assert _load(image_path).shape == (SIZE, SIZE, 3)
                assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0, 255}
                assert MIN_AREA <= (mask > 0).mean() <= MAX_AREA, (name, kind)
        content = category_hash(small, name)
        assert meta["content_sha256"][name] == content
        # the harness's reader takes it, with the checks a protocol asks for
        options = {"generator": SYNTHETIC2_VERSION, f"content_sha256.{name}": content}
        category = get_layout("synthetic").load_category(small, name, **options)
        assert all((item.mask is None) == (item.label == 0) for item in category.test)


def test_defect_kinds_cover_what_the_issue_asks() -> None:
    kinds = {kind for defects in DEFECTS.values() for kind in defects}
    asked = {"stain", "scratch", "missing", "colour", "wrong_colour", "misplaced", "foreign"}
    assert asked <= kinds
    assert all(len(set(defects)) == 4 for defects in DEFECTS.values())


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_mask_is_where_the_image_differs_from_its_clean_twin(name: str) -> None:
    """Both go through the same camera: outside the mask (plus blur reach) they agree."""
    for kind in DEFECTS[name]:
        sample = make_sample(name, kind, 0, seed=1, image_size=SIZE)
        inside = sample.mask > 0
        change = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max(axis=-1)
        reach = ndimage.binary_dilation(inside, iterations=3)
        assert not change[~reach].any(), (name, kind)
        assert (change[inside] >= 2).mean() > 0.8, (name, kind)


# ---------------------------------------------------------------- nuisance variation


def _best_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Highest normalised cross-correlation of two grey images over all shifts, and where."""
    a, b = (x.mean(axis=-1) for x in (a.astype(float), b.astype(float)))
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    corr = fftconvolve(a, b[::-1, ::-1], mode="same") / a.size
    peak = np.unravel_index(np.argmax(corr), corr.shape)
    return float(corr[peak]), (int(peak[0]) - a.shape[0] // 2, int(peak[1]) - a.shape[1] // 2)


@pytest.mark.parametrize("name", TEXTURES)
def test_texture_normals_are_new_material_not_shifted_copies(name: str) -> None:
    a, b = (make_sample(name, "good", i, image_size=128, train=True).image for i in range(2))
    assert _best_shift(a, a)[0] > 0.99  # the measure finds a copy...
    assert _best_shift(a, np.roll(a, (5, -7), axis=(0, 1)))[0] > 0.8  # ...and a shifted one
    assert _best_shift(a, b)[0] < 0.8


@pytest.mark.parametrize("name", OBJECTS)
def test_objects_move_between_normals_and_the_light_drifts(name: str) -> None:
    images = [make_sample(name, "good", i, image_size=128, train=True).image for i in range(4)]
    shifts = [_best_shift(images[0], other)[1] for other in images[1:]]
    assert any(shift != (0, 0) for shift in shifts), shifts
    floor = np.array([image[:6, :6].mean() for image in images])  # the corner shows the floor
    assert floor.std() / floor.mean() > 0.01


# ---------------------------------------------------------------- wiring


@pytest.fixture
def small_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The v2 cache points into tmp_path and its generation is small; returns its calls."""
    calls: list[Path] = []
    real = synthetic2.generate_synthetic2

    def generate(out_dir: Path, **kwargs: object) -> Path:
        calls.append(Path(out_dir))
        return real(out_dir, categories=("pcb",), **SMALL)

    monkeypatch.setenv("FSAD_BENCH_DATA_V2", str(tmp_path / "cache" / "v2"))
    monkeypatch.setattr(synthetic2, "generate_synthetic2", generate)
    return calls


def test_a_v2_protocol_generates_v2_once(small_default: list[Path], tmp_path: Path) -> None:
    protocol = resolve_protocol({"protocol": "synthetic2_quick"})
    assert Path(protocol.data_root) == tmp_path / "cache" / "v2"
    meta = json.loads((Path(protocol.data_root) / "SYNTHETIC.json").read_text())
    assert meta["generator"] == SYNTHETIC2_VERSION
    resolve_protocol({"protocol": "synthetic2_loo"})
    assert len(small_default) == 1


def test_unknown_generated_dataset_and_version_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="synthetic-v9.*synthetic-v1, synthetic-v2"):
        synthetic_versions.ensure_default_dataset("synthetic-v9")
    with pytest.raises(DatasetError, match="no synthetic dataset version 3; versions: 1, 2"):
        synthetic_versions.generate(3, tmp_path / "out")


def test_reader_refuses_data_the_protocol_does_not_record(small: Path, tmp_path: Path) -> None:
    load = get_layout("synthetic").load_category
    with pytest.raises(DatasetError, match="content hash .* the protocol records 0000"):
        load(small, "pcb", **{"content_sha256.pcb": "0000"})
    with pytest.raises(
        DatasetError, match="holds synthetic-v2 data, the protocol needs synthetic-v1"
    ):
        load(small, "pcb", generator="synthetic-v1")
    with pytest.raises(DatasetError, match="unknown layout_options \\['colour'\\]"):
        load(small, "pcb", colour="red")
    (tmp_path / "pcb" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="SYNTHETIC.json: cannot read"):
        load(tmp_path, "pcb", generator=SYNTHETIC2_VERSION)
    assert load(small, "pcb").name == "pcb"  # no options: the plain MVTec reader


# ---------------------------------------------------------------- pixel_knn's core


def _brute_force_map(support: np.ndarray, image: np.ndarray, patch: int) -> np.ndarray:
    """Distance of each (reflect-padded) patch of ``image`` to its nearest support patch."""

    def patches(x: np.ndarray) -> np.ndarray:  # (N, 3, H, W) -> (N*H*W, 3*p*p)
        pad = patch // 2
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(x, (patch, patch), axis=(2, 3))
        return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 3 * patch * patch)

    distances = cdist(patches(image[None]), patches(support)).min(axis=1)
    return distances.reshape(image.shape[1:])


def test_pixel_knn_agrees_with_brute_force_and_finds_a_pasted_defect() -> None:
    generator = torch.Generator().manual_seed(0)
    support = torch.rand(2, 3, 24, 24, generator=generator)
    model = PixelKNNModel(downsample=1, patch_size=3, stride=1, sigma=0.0)
    model.fit(support)
    scores, maps = model.score(support)
    assert maps.shape == (2, 24, 24)
    assert scores.abs().max() < 1e-3  # a support image is its own nearest neighbour

    test = support[:1].clone()
    test[:, :, 5:9, 14:18] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]  # a magenta square
    score, test_map = model.score(test)
    expected = _brute_force_map(support.numpy(), test[0].numpy(), 3)
    np.testing.assert_allclose(test_map[0].numpy(), expected, rtol=1e-4, atol=1e-3)
    peak = np.unravel_index(int(test_map[0].argmax()), (24, 24))
    assert 4 <= peak[0] <= 9 and 13 <= peak[1] <= 18
    assert score[0] > 0.5 and test_map[0, :, :10].max() < 1e-3  # far from it: nothing
    # stride 2 scores every second patch: the same distances there
    coarse = PixelKNNModel(downsample=1, patch_size=3, stride=2, sigma=0.0)
    coarse.fit(support)
    queries, h, w = pixel_patches(test, 1, 3, stride=2)
    assert (h, w) == (12, 12)
    distances = coarse.search.distances(queries, 1)[:, 0].reshape(12, 12).numpy()
    np.testing.assert_allclose(distances, expected[::2, ::2], rtol=1e-4, atol=1e-3)


def test_pixel_knn_downsamples_and_maps_at_input_size() -> None:
    support = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model = PixelKNNModel(downsample=4, patch_size=3, stride=2, sigma=4.0)
    model.fit(support)
    assert model.bank_size == 16 * 16  # every position of the support, whatever the stride
    scores, maps = model.score(torch.rand(3, 3, 64, 64))
    assert maps.shape == (3, 64, 64) and torch.equal(scores, maps.flatten(1).amax(1))
    with pytest.raises(ValueError, match="patch_size must be a positive odd number"):
        PixelKNNModel(patch_size=2)
    with pytest.raises(ValueError, match="stride must be 1..patch_size"):
        PixelKNNModel(patch_size=3, stride=4)
