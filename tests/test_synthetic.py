"""The synthetic default dataset: layout, exact masks, determinism, atomic caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsad_bench.datasets import mvtec, synthetic
from fsad_bench.datasets.synthetic import (
    DEFAULT_CATEGORIES,
    DEFECTS,
    SYNTHETIC_VERSION,
    default_dataset_dir,
    ensure_default_dataset,
    generate_synthetic,
    make_sample,
)
from fsad_bench.datasets.synthetic_defects import MAX_AREA, MIN_AREA
from fsad_bench.errors import DatasetError

SIZE = 64
SMALL = {"image_size": SIZE, "n_train": 2, "n_test_good": 2, "n_test_per_defect": 2}
TEXTURES = ("brick", "grass", "gravel")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "data", seed=3, **SMALL)


def test_categories_mix_textures_and_objects_with_several_defects() -> None:
    assert len(DEFAULT_CATEGORIES) >= 6
    assert set(TEXTURES) < set(DEFAULT_CATEGORIES)
    assert len(set(DEFAULT_CATEGORIES) - set(TEXTURES)) >= 3
    assert all(len(set(DEFECTS[name])) >= 3 for name in DEFAULT_CATEGORIES)


def test_layout_counts_and_manifest(dataset: Path) -> None:
    meta = json.loads((dataset / "SYNTHETIC.json").read_text())
    assert meta["generator"] == SYNTHETIC_VERSION
    assert (meta["seed"], meta["image_size"]) == (3, SIZE)
    assert "CC0" in meta["license"]
    assert mvtec.discover_categories(dataset) == sorted(DEFAULT_CATEGORIES)
    for name in DEFAULT_CATEGORIES:
        folder = dataset / name
        assert len(list((folder / "train" / "good").glob("*.png"))) == 2
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(
            ["good", *DEFECTS[name]]
        )
        assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(DEFECTS[name])
        expected = {"good": 2} | {kind: 2 for kind in DEFECTS[name]}
        assert meta["counts"][name] == {"train": {"good": 2}, "test": expected}
        for kind, count in expected.items():
            assert len(list((folder / "test" / kind).glob("*.png"))) == count
        # The project's own reader accepts it: every defect image finds its mask.
        category = mvtec.load_category(dataset, name)
        assert len(category.test) == sum(expected.values())
        assert all((item.mask is None) == (item.label == 0) for item in category.test)


def test_images_rgb_and_masks_binary_same_size_and_bounded(dataset: Path) -> None:
    for image_path in dataset.rglob("test/*/*.png"):
        image = _load(image_path)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        kind = image_path.parent.name
        mask_path = image_path.parents[2] / "ground_truth" / kind / f"{image_path.stem}_mask.png"
        if kind == "good":
            assert not mask_path.exists()
            continue
        mask = _load(mask_path)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert MIN_AREA <= (mask > 0).mean() <= MAX_AREA


@pytest.mark.parametrize("name", DEFAULT_CATEGORIES)
def test_mask_is_exactly_the_altered_pixels(name: str) -> None:
    for kind in DEFECTS[name]:
        for index in range(2):
            sample = make_sample(name, kind, index, seed=1, image_size=SIZE)
            inside = sample.mask > 0
            change = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max(axis=-1)
            assert np.array_equal(sample.image[~inside], sample.clean[~inside]), (name, kind)
            # Committed changes exceed 0.02 (about 5 grey levels) before quantisation.
            assert (change[inside] >= 4).mean() > 0.99, (name, kind)


def test_good_samples_have_no_mask_and_no_defect() -> None:
    for name in DEFAULT_CATEGORIES:
        sample = make_sample(name, "good", 0, image_size=SIZE)
        assert sample.mask is None
        assert sample.image is sample.clean


def test_written_files_match_make_sample(dataset: Path) -> None:
    sample = make_sample("pcb", "missing", 1, seed=3, image_size=SIZE)
    assert np.array_equal(_load(dataset / "pcb/test/missing/001.png"), sample.image)
    assert np.array_equal(_load(dataset / "pcb/ground_truth/missing/001_mask.png"), sample.mask)
    train = make_sample("brick", "good", 1, seed=3, image_size=SIZE, train=True)
    assert np.array_equal(_load(dataset / "brick/train/good/001.png"), train.image)


def test_no_image_repeats_across_splits_or_kinds(dataset: Path) -> None:
    """Each (split, kind, index) has its own random stream: test images never copy train ones."""
    for name in DEFAULT_CATEGORIES:
        images = [_load(p).tobytes() for p in (dataset / name).glob("t*/*/*.png")]
        assert len(set(images)) == len(images), name


def test_normals_of_a_category_look_alike() -> None:
    """Each normal's mean colour is nearest to its own category's mean colour."""
    means = {
        name: np.array(
            [
                make_sample(name, "good", i, image_size=SIZE, train=True).image.mean((0, 1))
                for i in range(6)
            ]
        )
        for name in DEFAULT_CATEGORIES
    }
    centroids = {name: m.mean(axis=0) for name, m in means.items()}
    for name, rows in means.items():
        for row in rows:
            nearest = min(centroids, key=lambda other: np.linalg.norm(row - centroids[other]))
            assert nearest == name
        # ...and they are not all the same image.
        assert len({row.tobytes() for row in rows}) == len(rows)


def test_same_seed_is_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    opts = {**SMALL, "categories": ("gravel", "washer")}
    first = _files(generate_synthetic(tmp_path / "a", seed=5, **opts))
    second = _files(generate_synthetic(tmp_path / "b", seed=5, **opts))
    other = _files(generate_synthetic(tmp_path / "c", seed=6, **opts))
    assert first == second
    assert first.keys() == other.keys()
    pngs = [key for key in first if key.endswith(".png") and "ground_truth" not in key]
    assert all(first[key] != other[key] for key in pngs)


def test_test_images_do_not_depend_on_train_count(tmp_path: Path) -> None:
    opts = {**SMALL, "categories": ("pill",)}
    few = _files(generate_synthetic(tmp_path / "few", **{**opts, "n_train": 1}))
    many = _files(generate_synthetic(tmp_path / "many", **{**opts, "n_train": 3}))
    for key, data in few.items():
        if key.startswith("pill/") and "/train/" not in key:
            assert many[key] == data, key
    assert few["pill/train/good/000.png"] == many["pill/train/good/000.png"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"categories": ["marble"]}, "unknown synthetic category 'marble'"),
        ({"image_size": 8}, "too small"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"n_test_per_defect": 0}, "counts must all be >= 1"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        generate_synthetic(tmp_path / "out", **kwargs)


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="already exists"):
        generate_synthetic(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


# ---------------------------------------------------------------- the cached default


@pytest.fixture
def small_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The cache points into tmp_path and the default generation is small; returns its calls."""
    calls: list[Path] = []
    real = synthetic.generate_synthetic

    def small(out_dir: Path, **kwargs: object) -> Path:
        calls.append(Path(out_dir))
        return real(out_dir, categories=("washer",), **SMALL)

    monkeypatch.setenv("FSAD_BENCH_DATA", str(tmp_path / "cache" / "synthetic"))
    monkeypatch.setattr(synthetic, "generate_synthetic", small)
    return calls


def test_default_dir_follows_env_then_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FSAD_BENCH_DATA", str(tmp_path / "here"))
    assert default_dataset_dir() == tmp_path / "here"
    monkeypatch.delenv("FSAD_BENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dataset_dir() == tmp_path / "xdg" / "fsad-bench" / f"{SYNTHETIC_VERSION}-seed0"


def test_ensure_generates_once_then_reuses(small_default: list[Path]) -> None:
    path = ensure_default_dataset()
    assert path == default_dataset_dir()
    assert (path / "SYNTHETIC.json").is_file() and (path / "washer/train/good/000.png").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial folder left
    before = _files(path)
    assert ensure_default_dataset() == path
    assert len(small_default) == 1
    assert _files(path) == before


def test_interrupted_generation_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, small_default: list[Path]
) -> None:
    def interrupted(out_dir: Path, **kwargs: object) -> Path:
        (Path(out_dir) / "washer").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate_synthetic", interrupted)
    target = default_dataset_dir()
    with pytest.raises(KeyboardInterrupt):
        ensure_default_dataset()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_concurrent_winner_is_kept(
    monkeypatch: pytest.MonkeyPatch, small_default: list[Path]
) -> None:
    """Another process renames its copy into place first: ours is dropped, theirs is used."""
    target = default_dataset_dir()

    def loses_race(out_dir: Path, **kwargs: object) -> Path:
        generate_synthetic(target, categories=("washer",), **SMALL)
        (target / "winner").write_text("theirs")
        return generate_synthetic(out_dir, categories=("washer",), **SMALL)

    monkeypatch.setattr(synthetic, "generate_synthetic", loses_race)
    assert ensure_default_dataset() == target
    assert (target / "winner").read_text() == "theirs"
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_ensure_rejects_foreign_or_stale_folders(small_default: list[Path]) -> None:
    target = default_dataset_dir()
    target.mkdir(parents=True)
    (target / "photo.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="has no SYNTHETIC.json"):
        ensure_default_dataset()
    (target / "SYNTHETIC.json").write_text(json.dumps({"generator": "synthetic-v0"}))
    with pytest.raises(DatasetError, match="synthetic-v0"):
        ensure_default_dataset()
    assert small_default == []


def test_ensure_fills_an_empty_existing_folder(small_default: list[Path]) -> None:
    target = default_dataset_dir()
    target.mkdir(parents=True)
    assert ensure_default_dataset() == target
    assert (target / "SYNTHETIC.json").is_file()
