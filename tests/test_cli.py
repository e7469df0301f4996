"""The command line as a user meets it: one-line errors, light `list`, report files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsad_bench.cli import app

runner = CliRunner()


def test_list_imports_no_method_code() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom fsad_bench.cli import app\n"
        "out = CliRunner().invoke(app, ['list'])\nassert out.exit_code == 0, out.output\n"
        "assert 'patchcore' in out.output and 'mvtec_ad_loo' in out.output\n"
        "heavy = ('torch', 'fsad_methods.patchcore.plugin', 'timm')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_data_root_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--data-root", str(tmp_path / "nope"), "--layout", "mvtec"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0]


def test_unknown_method_lists_known_ones(mvtec_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 "--method", "nosuch", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2
    assert "unknown method 'nosuch'" in result.output and "patchcore" in result.output


@pytest.mark.parametrize(
    ("param", "needles"),
    [
        ("patchcroe.sigma=2", ["patchcroe", "METHOD.KEY=VALUE"]),  # a method not in the run
        ("patchcore.sigmaa=2", ["['sigmaa']", "valid parameters are ['backbone'"]),  # a typo
        ("patchcore.coreset_ratio=abc", ["coreset_ratio='abc'", "valid number"]),
        ("patchcore.coreset_ratio=2", ["coreset_ratio=2", "less than or equal to 1"]),
        ("patchcore.coreset_ratio=0", ["coreset_ratio=0", "greater than 0"]),
        ("patchcore.coreset_ratio=-1", ["coreset_ratio=-1", "greater than 0"]),
        ("patchcore.weights=/no/such.pth", ["weights='/no/such.pth'", "no file /no/such.pth"]),
        ("patchcore.num_neighbours=0", ["num_neighbours=0", "greater than or equal to 1"]),
    ],
)
def test_bad_param_stops_before_any_episode(
    mvtec_root: Path, tmp_path: Path, param: str, needles: list[str]
) -> None:
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 "--method", "patchcore", "--param", param,
                                 "--out", str(out)])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert not (out / "records.jsonl").exists() and not (out / "run.json").exists()


def test_weights_option_naming_a_missing_file_stops_before_any_episode(
    mvtec_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 "--method", "patchcore", "--weights", "/no/such.pth",
                                 "--out", str(out)])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "/no/such.pth" in lines[0] and not out.exists()


def test_check_plugin_with_an_unknown_name_is_one_line() -> None:
    result = runner.invoke(app, ["check-plugin", "nosuch"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "unknown method 'nosuch'" in lines[0] and "patchcore" in lines[0]


def test_bad_shots_value(mvtec_root: Path) -> None:
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 "--shots", "one"])  # fmt: skip
    assert result.exit_code == 2 and "--shots" in result.output


def test_run_and_report_with_patchcore(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--data-root", str(mvtec_root), "--layout", "mvtec", "--method", "patchcore",
            "--shots", "1", "--seeds", "0,1", "--image-size", "64", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "image AUROC" in result.output and "alpha" in result.output
    assert "were not rerun" not in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "note: 6 of this run's 6 episodes were already in" in " ".join(again.output.split())
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0
    assert (out / "report.csv").read_text().startswith("method,category,k,metric,mean,std,n_seeds")
    assert (out / "report.md").exists()
    import json
    import shlex
    from importlib.metadata import version

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    record = records[0]
    assert "efficientnet_lite0" in record["provenance"]["weights"]
    assert record["provenance"]["weights"].lower().count("random") == 0
    # the plugin's package and version, and whether prediction hit the feature cache
    assert record["provenance"]["plugin_package"] == f"fsad-bench=={version('fsad-bench')}"
    batches = {(r["timing"]["feature_cache_hits"], r["timing"]["feature_cache_misses"])
               for r in records}  # fmt: skip
    assert all(hits + misses >= 1 for hits, misses in batches)  # every test batch counted
    assert any(misses for _, misses in batches)  # someone computed the features first
    assert record["protocol"] == "mvtec_loo"  # the folder's name, not "mvtec_folder_loo"
    # report.md's command, run again, names the same run: every episode is already there
    md = (out / "report.md").read_text()
    command = next(line for line in md.splitlines() if line.startswith("fsad-bench run"))
    rerun = runner.invoke(app, shlex.split(command)[1:])
    assert rerun.exit_code == 0, rerun.output
    assert "6 of this run's 6 episodes were already in" in " ".join(rerun.output.split())


def test_config_file_and_cli_build_the_same_run(mvtec_root: Path, tmp_path: Path) -> None:
    from fsad_bench.run.config import build_run_config, load_options_file

    path = tmp_path / "run.yaml"
    path.write_text(
        f"data_root: {mvtec_root}\nlayout: mvtec\nshots: [1, 2]\nseeds: 0,1\n"
        f"params: {{patchcore: {{coreset_ratio: 0.5}}}}\nout: {tmp_path / 'o'}\n"
    )
    from_file = build_run_config(load_options_file(path))
    from_cli = build_run_config({"data_root": str(mvtec_root), "layout": "mvtec", "shots": "1,2",
                                 "seeds": "0,1", "params": ["patchcore.coreset_ratio=0.5"],
                                 "out": str(tmp_path / "o")})  # fmt: skip
    assert from_file == from_cli


def test_python_dash_m_runs_the_command_line() -> None:
    out = subprocess.run([sys.executable, "-m", "fsad_bench", "list"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert "patchcore" in out.stdout and "synthetic_loo" in out.stdout


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--image-size", "8"], "--image-size must be a whole number of pixels >= 32"),
        (["--image-size", "0"], "got 0"),
        (["--device", "gpu"], "--device 'gpu' is not a device"),
    ],
)
def test_bad_run_options_are_one_line_before_any_episode(
    mvtec_root: Path, tmp_path: Path, flags: list[str], needle: str
) -> None:
    out = tmp_path / "r"
    args = ["run", "--data-root", str(mvtec_root), "--layout", "mvtec", "--out", str(out)]
    result = runner.invoke(app, [*args, *flags])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert needle in lines[0], lines[0]
    assert not (out / "records.jsonl").exists()


def test_cuda_without_a_gpu_is_one_line(mvtec_root: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 "--device", "cuda", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2 and "no CUDA GPU is visible here" in result.output


@pytest.mark.usefixtures("fake_methods")
def test_rerun_of_a_failed_run_still_fails_and_names_the_fix(
    mvtec_root: Path, tmp_path: Path
) -> None:
    args = ["run", "--data-root", str(mvtec_root), "--layout", "mvtec", "--method", "raises",
            "--shots", "2", "--seeds", "0", "--categories", "alpha", "--image-size", "32",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 1
    again = runner.invoke(app, args)
    assert again.exit_code == 1, again.output
    assert "failed in an earlier run here" in again.output and "--retry-failed" in again.output


def test_param_values_are_yaml_scalars_and_exponents_are_numbers() -> None:
    from fsad_bench.run.config import parse_params

    parsed = parse_params(["riad.fit_lr=1e-4", "riad.cells=[2, 4]", "patchcore.weights=v2.pth"])
    assert parsed == {"riad": {"fit_lr": 1e-4, "cells": [2, 4]}, "patchcore": {"weights": "v2.pth"}}


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("params: {patchcore: 5}", "params.patchcore must be a mapping"),
        ("params: 7", "params must be a mapping"),
        ("workers: two", "workers must be a whole number, got 'two'"),
        ("episode_timeout: abc", "episode_timeout must be a number of seconds"),
        ("retry_failed: 3", "retry_failed must be true or false"),
        ("method: [patchcore]", "unknown key 'method'; did you mean 'methods'?"),
        ("- just a list", "must be a YAML mapping"),
    ],
)
def test_a_config_file_with_a_wrong_type_is_one_line(
    tmp_path: Path, yaml_text: str, needle: str
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text + "\n")
    result = runner.invoke(app, ["run", "--config", str(config), "--out", str(tmp_path / "r")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert needle in lines[0] and str(config) in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--episode-timeout", "-5", "--episode-timeout must be a number of s > 0"),
        ("--episode-timeout", "0", "--episode-timeout must be a number of s > 0"),
        ("--episode-timeout", "nan", "--episode-timeout must be a number of s > 0"),
        ("--episode-memory-mb", "0", "--episode-memory-mb must be a number of MB > 0"),
        ("--workers", "0", "--workers must be at least 1"),
    ],
)
def test_run_values_are_checked_before_any_episode(
    mvtec_root: Path, tmp_path: Path, option: str, value: str, needle: str
) -> None:
    out = tmp_path / "r"
    result = runner.invoke(app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec",
                                 option, value, "--out", str(out)])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert needle in lines[0] and not out.exists()


def test_leaderboard_help_keeps_its_defaults() -> None:
    result = runner.invoke(app, ["leaderboard", "--help"], terminal_width=200)
    text = " ".join(result.output.replace("│", " ").split())  # rich wraps it in a box
    assert result.exit_code == 0
    for needle in ("--address", "[default: 127.0.0.1]", "--port", "[default: 8501]",
                   "./submissions, else the clone's"):  # fmt: skip
        assert needle in text, needle


def test_leaderboard_binds_to_localhost_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    started: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _, argv: started.append(argv))
    (tmp_path / "subs").mkdir()
    assert (
        runner.invoke(app, ["leaderboard", "--submissions", str(tmp_path / "subs")]).exit_code == 0
    )
    assert "--server.address=127.0.0.1" in started[-1] and "--server.port=8501" in started[-1]
    args = ["leaderboard", "--submissions", str(tmp_path / "subs"), "--address", "0.0.0.0",
            "--port", "8600"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    assert "--server.address=0.0.0.0" in started[-1] and "--server.port=8600" in started[-1]


@pytest.mark.parametrize("make", [False, True])
def test_leaderboard_checks_runs_before_starting(tmp_path: Path, make: bool) -> None:
    run = tmp_path / "run"
    if make:
        run.mkdir()  # a folder, but not a run
    result = runner.invoke(app, ["leaderboard", "--runs", str(run)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(run) in lines[0] and ("records.jsonl" in lines[0] if make else "no such" in lines[0])


def test_list_points_to_presets_and_lists_them_when_asked() -> None:
    plain = runner.invoke(app, ["list"])
    assert plain.exit_code == 0 and "fsad-bench list --presets" in plain.output
    assert "presets: patchcore." not in plain.output
    full = runner.invoke(app, ["list", "--presets"])
    assert full.exit_code == 0
    from fsad_bench.registry import available_presets, load_class

    expected = ", ".join(
        f"patchcore.{t}" for t in sorted(available_presets(load_class("patchcore")))
    )
    assert f"presets: {expected}" in full.output


def test_protocol_show_prints_yaml_lists_and_the_file_asked_for() -> None:
    import yaml

    result = runner.invoke(app, ["protocol", "show", "mvtec_ad_thesis"])
    assert result.exit_code == 0, result.output
    assert "(" not in result.output.split("shots:")[1].splitlines()[0]  # no Python tuple
    assert result.output.startswith("# mvtec_ad_thesis (")
    assert "includes mvtec_ad_loo.yaml" in result.output and "mvtec_ad_loo@1" in result.output
    settings = yaml.safe_load(result.output)  # the body is YAML (comments are skipped)
    assert settings["shots"] == [1, 5, 10] and settings["seeds"] == [0, 1, 2, 3, 4]
    assert settings["name"] == "mvtec_ad_loo" and len(settings["categories"]) == 15


def test_a_folder_protocol_is_named_after_its_folder(tmp_path: Path) -> None:
    from fsad_bench.protocols.protocol import adhoc_protocol, list_protocol_files

    assert adhoc_protocol("folder", tmp_path / "My Parts", ["a"]).name == "my_parts_loo"
    assert adhoc_protocol("mvtec", tmp_path / "screws-v2", ["a"]).name == "screws_v2_loo"
    builtin = {p.stem for p in list_protocol_files()}
    clash = adhoc_protocol("mvtec", tmp_path / "mvtec_ad", ["a"]).name  # mvtec_ad_loo exists
    assert clash not in builtin and clash == "mvtec_ad_folder_loo"
