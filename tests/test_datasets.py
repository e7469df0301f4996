"""Dataset readers and image decoding: layouts, bad input, colour modes, masks, splits, ELPV."""

from __future__ import annotations

import hashlib
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsad_bench.datasets import LAYOUTS, elpv, folder, get_layout, mvtec
from fsad_bench.datasets.base import GOOD
from fsad_bench.datasets.io import image_size_of, load_category_tensors, load_image, load_mask
from fsad_bench.errors import DatasetError

RNG = np.random.default_rng(0)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def rgb(h: int = 32, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def square_mask(h: int = 32, w: int = 32) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[8:16, 8:20] = 255
    return mask


def make_mvtec(root: Path, name: str = "widget") -> Path:
    """train/good 3 (one .PNG), test/good 2, test/scratch 2 and test/crack 1 with masks."""
    cat = root / name
    for stem in ("000", "001"):
        save(cat / "train" / GOOD / f"{stem}.png", rgb())
    save(cat / "train" / GOOD / "002.PNG", rgb())
    (cat / "train" / GOOD / ".DS_Store").write_bytes(b"junk")
    (cat / "train" / GOOD / "._000.png").write_bytes(b"macOS resource fork")
    (cat / "train" / GOOD / "readme.txt").write_text("not an image")
    for stem in ("000", "001"):
        save(cat / "test" / GOOD / f"{stem}.png", rgb())
    for defect, stems in (("scratch", ("000", "001")), ("crack", ("000",))):
        for stem in stems:
            save(cat / "test" / defect / f"{stem}.png", rgb())
            save(cat / "ground_truth" / defect / f"{stem}_mask.png", square_mask())
    return cat


def one_line_error(excinfo: pytest.ExceptionInfo, *needles: object) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- MVTec / MPDD layout


def test_mvtec_layout_lists_images_labels_and_masks_by_name(tmp_path: Path) -> None:
    cat_dir = make_mvtec(tmp_path)
    category = mvtec.load_category(tmp_path, "widget")
    assert category.has_masks and category.root == tmp_path
    assert [p.name for p in category.train_normal] == ["000.png", "001.png", "002.PNG"]
    assert len(category.test) == 5
    for item in category.test:
        assert item.path.parent.name == item.defect
        if item.defect == GOOD:
            assert item.label == 0 and item.mask is None
        else:
            assert item.label == 1
            assert (
                item.mask == cat_dir / "ground_truth" / item.defect / f"{item.path.stem}_mask.png"
            )
    assert sorted(item.defect for item in category.test) == [
        "crack",
        GOOD,
        GOOD,
        "scratch",
        "scratch",
    ]
    assert category.relpath(category.test[0].path) == "widget/test/crack/000.png"


def test_discover_categories_sorted_and_only_with_train_good(tmp_path: Path) -> None:
    make_mvtec(tmp_path, "zeta")
    make_mvtec(tmp_path, "alpha")
    (tmp_path / "notes").mkdir()
    (tmp_path / ".hidden" / "train" / GOOD).mkdir(parents=True)
    assert mvtec.discover_categories(tmp_path) == ["alpha", "zeta"]


def test_test_set_tensors_have_zero_masks_for_good_and_drawn_masks_for_defects(
    tmp_path: Path,
) -> None:
    make_mvtec(tmp_path)
    category = mvtec.load_category(tmp_path, "widget")
    calls: list[tuple[int, int]] = []
    test = load_category_tensors(
        category, 16, progress=lambda done, total: calls.append((done, total))
    )
    n = len(category.test)
    assert test.images.shape == (n, 3, 16, 16) and test.images.dtype == torch.float32
    assert test.labels.dtype == torch.int64
    assert test.labels.tolist() == [item.label for item in category.test]
    assert test.masks is not None and test.masks.shape == (n, 16, 16)
    assert test.masks.dtype == torch.bool
    expected = torch.from_numpy(square_mask()[1::2, 1::2] > 0)  # pixel centres at scale 2
    for item, mask in zip(category.test, test.masks, strict=True):
        assert torch.equal(mask, expected) if item.label else not mask.any()
    assert list(test.paths) == [category.relpath(item.path) for item in category.test]
    assert calls[-1] == (n, n) and len(calls) == n


@pytest.mark.parametrize(
    "breakage",
    ["missing_root", "missing_mask", "no_ground_truth", "empty_train", "empty_test", "unknown"],
)
def test_mvtec_bad_input_names_the_offending_path(tmp_path: Path, breakage: str) -> None:
    cat = make_mvtec(tmp_path)
    root, name = tmp_path, "widget"
    if breakage == "missing_root":
        root, needles = tmp_path / "nope", [tmp_path / "nope", "--data-root", "train/good"]
    elif breakage == "missing_mask":
        (cat / "ground_truth" / "scratch" / "001_mask.png").unlink()
        needles = [
            cat / "test" / "scratch" / "001.png",
            cat / "ground_truth" / "scratch" / "001_mask.png",
            "put its mask",
        ]
    elif breakage == "no_ground_truth":
        for mask in (cat / "ground_truth").rglob("*.png"):
            mask.unlink()
        for sub in sorted((cat / "ground_truth").iterdir()):
            sub.rmdir()
        (cat / "ground_truth").rmdir()
        needles = [cat / "ground_truth"]
    elif breakage == "empty_train":
        for image in (cat / "train" / GOOD).glob("*"):
            image.unlink()
        needles = [cat / "train" / GOOD]
    elif breakage == "empty_test":
        for image in (cat / "test").rglob("*.png"):
            image.unlink()
        needles = [cat / "test"]
    else:
        name, needles = "gadget", ["gadget", tmp_path, "widget"]
    with pytest.raises(DatasetError) as excinfo:
        mvtec.load_category(root, name)
    one_line_error(excinfo, *needles)


def test_unknown_layout_option_is_an_error(tmp_path: Path) -> None:
    make_mvtec(tmp_path)
    with pytest.raises(DatasetError) as excinfo:
        mvtec.load_category(tmp_path, "widget", normal_test_fraction=0.2)
    one_line_error(excinfo, "normal_test_fraction", "mvtec")


# ---------------------------------------------------------------- decoding


def _truncated(path: Path) -> None:
    save(path, rgb(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda p: p.write_bytes(b""),
        _truncated,
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png"),
    ],
    ids=["zero_byte", "truncated", "garbage"],
)
def test_undecodable_image_raises_one_line_error_naming_the_file(tmp_path: Path, corrupt) -> None:
    path = tmp_path / "bad.png"
    corrupt(path)
    with pytest.raises(DatasetError) as excinfo:
        load_image(path, 16)
    message = one_line_error(excinfo, path, "cannot decode image", "re-extract or delete this file")
    assert re.fullmatch(rf"{re.escape(str(path))}: cannot decode image \(.+\); .*", message)


def test_corrupt_test_image_fails_the_test_set_with_its_path(tmp_path: Path) -> None:
    cat = make_mvtec(tmp_path)
    _truncated(cat / "test" / "crack" / "000.png")
    category = mvtec.load_category(tmp_path, "widget")
    with pytest.raises(DatasetError) as excinfo:
        load_category_tensors(category, 16)
    one_line_error(excinfo, cat / "test" / "crack" / "000.png")


def test_missing_image_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as excinfo:
        load_image(tmp_path / "gone.png", 16)
    one_line_error(excinfo, tmp_path / "gone.png", "not found")


def test_image_size_reads_only_the_header(tmp_path: Path) -> None:
    path = save(tmp_path / "wide.png", rgb(20, 30))
    assert image_size_of(path) == (20, 30)
    _truncated(path)  # pixel data gone, header intact
    assert image_size_of(path) == (64, 64)
    with pytest.raises(DatasetError):
        load_image(path, 16)


def _native(path: Path) -> np.ndarray:
    """Decode at the stored size (no resize) as (H, W, 3)."""
    h, w = image_size_of(path)
    assert h == w
    return load_image(path, h).permute(1, 2, 0).numpy()


def test_grayscale_and_bilevel_images_repeat_over_three_channels(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    out = _native(save(tmp_path / "gray.png", gray))
    np.testing.assert_allclose(out, np.repeat(gray[..., None] / 255.0, 3, axis=2), atol=1e-6)
    bilevel = _native(save(tmp_path / "bw.png", gray, mode="1"))
    assert set(np.unique(bilevel)) <= {0.0, 1.0}


def test_sixteen_bit_png_uses_the_full_range(tmp_path: Path) -> None:
    deep = RNG.integers(0, 65536, (32, 32), dtype=np.uint16)
    path = save(tmp_path / "deep.png", deep)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    out = _native(path)
    np.testing.assert_allclose(out, np.repeat(deep[..., None] / 65535.0, 3, axis=2), atol=1e-6)
    assert out.max() > 0.9  # not clipped at 255/65535


def test_rgba_is_composited_onto_black(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    out = _native(save(tmp_path / "rgba.png", rgba))
    expected = rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_palette_image_goes_through_its_palette(tmp_path: Path) -> None:
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (32, 32), dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "pal.png")
    np.testing.assert_allclose(_native(tmp_path / "pal.png"), palette[index] / 255.0, atol=1e-6)


@pytest.mark.parametrize("size", [16, 24, 50])
def test_resize_agrees_with_pil_bilinear(tmp_path: Path, size: int) -> None:
    image = rgb(32, 32)
    ours = load_image(save(tmp_path / "x.png", image), size)
    assert ours.shape == (3, size, size) and ours.dtype == torch.float32
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
    pil = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), pil, atol=1.01 / 255)


# ---------------------------------------------------------------- masks


def test_mask_binarised_at_half_the_range(tmp_path: Path) -> None:
    values = np.array([0, 1, 100, 127, 128, 129, 200, 255], np.uint8)
    mask8 = np.tile(values, (8, 1))
    out = load_mask(save(tmp_path / "aa.png", mask8), 8, (8, 8))
    assert out.dtype == torch.bool and out.shape == (8, 8)
    assert torch.equal(out, torch.from_numpy(mask8 >= 128))
    mask16 = np.tile(np.array([0, 32767, 32768, 65535], np.uint16), (4, 1))
    out16 = load_mask(save(tmp_path / "aa16.png", mask16), 4, (4, 4))
    assert out16[0].tolist() == [False, False, True, True]


def test_zero_one_label_mask_is_not_read_as_empty(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 3:6] = 1  # saved as 0/1 rather than 0/255
    out = load_mask(save(tmp_path / "labels.png", labels), 8, (8, 8))
    assert torch.equal(out, torch.from_numpy(labels > 0))


def test_colour_mask_counts_any_bright_channel(tmp_path: Path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[2:5, 3:6, 0] = 255  # luma of pure red is 76, below half: must not be lost
    out = load_mask(save(tmp_path / "red.png", red), 8, (8, 8))
    assert torch.equal(out, torch.from_numpy(red[..., 0] > 0))


def _with_orientation(path: Path, array: np.ndarray, orientation: int) -> Path:
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


def test_exif_rotation_applies_to_size_image_and_mask_alike(tmp_path: Path) -> None:
    # orientation 6: the stored pixels are shown rotated 90 degrees clockwise
    wide = _with_orientation(tmp_path / "wide.png", rgb(20, 30), 6)
    assert image_size_of(wide) == (30, 20)
    portrait_mask = save(tmp_path / "wide_mask.png", square_mask(30, 20))
    assert load_mask(portrait_mask, 10, image_size_of(wide)).any()
    stored = rgb(32, 32)
    shown = load_image(_with_orientation(tmp_path / "square.png", stored, 6), 32)
    expected = np.rot90(stored, k=-1) / 255.0
    np.testing.assert_allclose(shown.permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(("h", "w", "size"), [(32, 32, 24), (48, 32, 20), (32, 32, 50)])
def test_mask_resize_is_nearest_pixel_centre(tmp_path: Path, h: int, w: int, size: int) -> None:
    mask = (RNG.random((h, w)) > 0.5).astype(np.uint8) * 255
    out = load_mask(save(tmp_path / "m.png", mask), size, (h, w)).numpy()
    # source index of output pixel i is floor((i + 0.5) * n_in / n_out), in exact integers
    rows = (2 * np.arange(size) + 1) * h // (2 * size)
    cols = (2 * np.arange(size) + 1) * w // (2 * size)
    np.testing.assert_array_equal(out, mask[np.ix_(rows, cols)] > 0)


def test_mask_of_another_size_names_mask_sizes_and_fix(tmp_path: Path) -> None:
    path = save(tmp_path / "m.png", square_mask(24, 30))
    with pytest.raises(DatasetError) as excinfo:
        load_mask(path, 16, (32, 32))
    one_line_error(excinfo, path, "24x30", "32x32", "re-export")


def test_mvtec_mask_size_mismatch_surfaces_when_decoding(tmp_path: Path) -> None:
    cat = make_mvtec(tmp_path)
    bad = save(cat / "ground_truth" / "crack" / "000_mask.png", square_mask(16, 16))
    with pytest.raises(DatasetError) as excinfo:
        load_category_tensors(mvtec.load_category(tmp_path, "widget"), 16)
    one_line_error(excinfo, bad, "16x16", "32x32")


# ---------------------------------------------------------------- custom folders


def make_folder(root: Path, name: str = "part", normals: int = 10, masks: bool = True) -> Path:
    cat = root / name
    for i in range(normals):
        save(cat / "normal" / f"n{i:03d}.png", rgb())
    for i, suffix in enumerate(("", "_mask")):
        save(cat / "abnormal" / f"a{i}.png", rgb())
        if masks:
            save(cat / "mask" / f"a{i}{suffix}.png", square_mask())
    return cat


def test_folder_with_masks_matches_both_naming_conventions(tmp_path: Path) -> None:
    cat = make_folder(tmp_path)
    category = folder.load_category(tmp_path, "part")
    assert category.has_masks
    anomalies = [item for item in category.test if item.label == 1]
    assert [item.mask for item in anomalies] == [
        cat / "mask" / "a0.png",
        cat / "mask" / "a1_mask.png",
    ]
    normal_test = {item.path for item in category.test if item.label == 0}
    assert normal_test.isdisjoint(category.train_normal)
    assert normal_test | set(category.train_normal) == set((cat / "normal").glob("*.png"))
    test = load_category_tensors(category, 16)
    assert test.masks is not None and not test.masks[test.labels == 0].any()
    assert test.masks[test.labels == 1].any()


def test_folder_without_mask_dir_is_image_level(tmp_path: Path) -> None:
    make_folder(tmp_path, masks=False)
    category = folder.load_category(tmp_path, "part")
    assert not category.has_masks
    assert all(item.mask is None for item in category.test)
    test = load_category_tensors(category, 16)
    assert test.masks is None and set(test.labels.tolist()) == {0, 1}


def test_folder_mask_dir_with_a_missing_mask_names_the_image(tmp_path: Path) -> None:
    cat = make_folder(tmp_path)
    (cat / "mask" / "a1_mask.png").unlink()
    with pytest.raises(DatasetError) as excinfo:
        folder.load_category(tmp_path, "part")
    one_line_error(excinfo, cat / "abnormal" / "a1.png", cat / "mask")


@pytest.mark.parametrize("empty", ["normal", "abnormal"])
def test_folder_empty_parts_are_errors(tmp_path: Path, empty: str) -> None:
    cat = make_folder(tmp_path, masks=False)
    for image in (cat / empty).glob("*.png"):
        image.unlink()
    with pytest.raises(DatasetError) as excinfo:
        folder.load_category(tmp_path, "part")
    one_line_error(excinfo, cat / empty)


def test_folder_with_a_misnamed_normal_dir_is_an_error_not_a_dropped_category(
    tmp_path: Path,
) -> None:
    make_folder(tmp_path, "part")
    (tmp_path / "__MACOSX" / "part").mkdir(parents=True)  # unzip debris is ignored
    assert folder.discover_categories(tmp_path) == ["part"]
    plate = make_folder(tmp_path, "plate")
    (plate / "normal").rename(plate / "good")
    with pytest.raises(DatasetError) as excinfo:
        folder.discover_categories(tmp_path)
    one_line_error(excinfo, plate, "good/", "normal/")


def test_folder_explicit_split_is_used_as_given(tmp_path: Path) -> None:
    cat = tmp_path / "part"
    for i in range(3):
        save(cat / "train" / "normal" / f"t{i}.png", rgb())
    save(cat / "test" / "normal" / "v0.png", rgb())
    save(cat / "test" / "abnormal" / "a0.png", rgb())
    assert folder.discover_categories(tmp_path) == ["part"]
    category = folder.load_category(tmp_path, "part", normal_test_fraction=0.9)
    assert [p.name for p in category.train_normal] == ["t0.png", "t1.png", "t2.png"]
    assert [(i.path.name, i.label) for i in category.test] == [("v0.png", 0), ("a0.png", 1)]
    assert not category.has_masks


def _names(paths) -> list[str]:
    return [Path(p).name for p in paths]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.77])
def test_stable_split_is_exact_and_order_independent(fraction: float) -> None:
    paths = [Path(f"/data/img_{i:04d}.png") for i in range(57)]
    train, test = folder.split_by_name_hash(paths, fraction)
    assert abs(len(test) - fraction * len(paths)) <= 0.5
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(paths)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    assert folder.split_by_name_hash(shuffled, fraction) == (train, test)
    moved = [Path("/elsewhere") / p.name for p in shuffled]
    assert _names(folder.split_by_name_hash(moved, fraction)[1]) == _names(test)
    # the rule itself (so every machine agrees): lowest SHA-256 of the file name goes to test
    by_hash = sorted(paths, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    assert set(test) == set(by_hash[: len(test)])


def test_folder_split_same_on_rerun_and_for_other_creation_order(tmp_path: Path) -> None:
    stems = [f"n{i:03d}" for i in range(20)]
    for root, order in ((tmp_path / "a", stems), (tmp_path / "b", stems[::-1])):
        for stem in order:
            save(root / "part" / "normal" / f"{stem}.png", rgb(8, 8))
        save(root / "part" / "abnormal" / "x.png", rgb(8, 8))
    first = folder.load_category(tmp_path / "a", "part")
    again = folder.load_category(tmp_path / "a", "part")
    other = folder.load_category(tmp_path / "b", "part")
    assert first == again
    assert _names(first.train_normal) == _names(other.train_normal)
    assert len(first.train_normal) == 14  # 20 - round(0.3 * 20)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_fraction_out_of_range_is_an_error(tmp_path: Path, fraction: float) -> None:
    make_folder(tmp_path, masks=False)
    with pytest.raises(DatasetError) as excinfo:
        folder.load_category(tmp_path, "part", normal_test_fraction=fraction)
    one_line_error(excinfo, "normal_test_fraction", fraction)


# ---------------------------------------------------------------- layouts


def test_layout_registry() -> None:
    assert set(LAYOUTS) == {"mvtec", "mpdd", "folder", "elpv", "synthetic"}
    for name in ("mpdd",):
        assert get_layout(name).load_category is mvtec.load_category
    with pytest.raises(DatasetError) as excinfo:
        get_layout("imagenet")
    one_line_error(excinfo, "imagenet", *sorted(LAYOUTS))


# ---------------------------------------------------------------- ELPV (installed package)


def _elpv_labels() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels file parsed the way the package itself parses it."""
    labels = elpv.package_image_dir().parent / "labels.csv"
    data = np.genfromtxt(
        labels, dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"]
    )
    return np.char.decode(data["path"]), data["probability"], np.char.decode(data["type"])


@pytest.mark.parametrize("kind", ["mono", "poly"])
def test_elpv_categories_match_the_package_labels(kind: str) -> None:
    paths, probs, types = _elpv_labels()
    assert elpv.discover_categories(None) == ["mono", "poly"]
    category = elpv.load_category(None, kind)
    mine = types == kind
    normal = int((mine & (probs == 0)).sum())
    defective = int((mine & (probs == 1)).sum())
    excluded = int(mine.sum()) - normal - defective
    assert excluded > 0 and normal > 0 and defective > 0
    assert any(f"excluded {excluded} " in note for note in category.notes)
    labels = [item.label for item in category.test]
    assert set(labels) == {0, 1} and labels.count(1) == defective
    assert len(category.train_normal) + labels.count(0) == normal
    assert not category.has_masks and all(item.mask is None for item in category.test)
    expected = {Path(p).name for p in paths[mine & ((probs == 0) | (probs == 1))]}
    used = [category.relpath(p) for p in category.train_normal] + [
        category.relpath(item.path) for item in category.test
    ]
    assert sorted(used) == sorted(expected)  # relative to the image folder, each once
    assert abs(labels.count(0) - 0.5 * normal) <= 0.5
    image = load_image(category.train_normal[0], 64)  # grayscale cells decode to RGB
    assert image.shape == (3, 64, 64) and torch.equal(image[0], image[2])


def test_elpv_shares_the_folder_split() -> None:
    assert elpv.split_by_name_hash is folder.split_by_name_hash


def test_elpv_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    with pytest.raises(DatasetError) as excinfo:
        elpv.load_category(None, "mono")
    one_line_error(excinfo, "pip install 'fsad-bench[elpv]'")


def test_elpv_unknown_category_lists_types() -> None:
    with pytest.raises(DatasetError) as excinfo:
        elpv.load_category(None, "thin-film")
    one_line_error(excinfo, "thin-film", "mono", "poly")
