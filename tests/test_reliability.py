"""Reliability promises not already proven elsewhere (see docs/reliability.md for the map):
stuck plugins, invalid outputs, undefined metrics, awkward file names, untrusted input and
bit-for-bit repeatable records."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_mvtec_category, write_png
from PIL import Image
from typer.testing import CliRunner

from fsad_bench.cli import app as cli_app
from fsad_bench.datasets import mvtec
from fsad_bench.datasets.io import load_category_tensors
from fsad_bench.errors import DatasetError, FsadError
from fsad_bench.execution import base as execution_base
from fsad_bench.execution.base import Watch
from fsad_bench.identity import METRICS
from fsad_bench.protocols.manifests import SupportEntry, check_entries
from fsad_bench.records import EpisodeRecord
from fsad_bench.results.submission import SubmissionError, parse_json
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records, read_scores

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("fake_methods")


def make_config(root: Path, out: Path, **options: Any) -> Any:
    settings = {"data_root": root, "layout": "mvtec", "methods": "meandist", "shots": "1",
                "seeds": "0", "out": out, "image_size": 32, **options}  # fmt: skip
    return build_run_config(settings)


def quiet_run(root: Path, out: Path, **options: Any) -> Any:
    return run(make_config(root, out, **options), log=lambda _: None)


# ---- a plugin that hangs --------------------------------------------------------------------


@pytest.mark.slow
def test_hanging_episode_is_killed_and_recorded_while_the_others_complete(
    mvtec_root: Path, tmp_path: Path
) -> None:
    config = make_config(mvtec_root, tmp_path / "run", methods="hangs", shots="1,2",
                         categories="alpha", workers=2)  # fmt: skip
    config = replace(config, episode_timeout_s=2.0)
    start = time.monotonic()
    summary = run(config, log=lambda _: None)
    elapsed = time.monotonic() - start
    records = {r.k: r for r in read_records(tmp_path / "run")}
    assert records.keys() == {1, 2}
    assert records[1].status == "ok" and records[1].metrics["image_auroc"] == 1.0
    assert records[2].status == "failed" and records[2].error == "timed out after 2 s"
    assert [r.k for r in summary.failed] == [2]
    assert elapsed < 60, "the stuck worker was waited for instead of killed"
    # the failed record resumes like any other failure: --retry-failed replays it
    assert run(config, log=lambda _: None).played == 0
    again = run(replace(config, retry_failed=True), log=lambda _: None)
    assert again.played == 1 and again.failed[0].error == "timed out after 2 s"


def test_isolated_workers_give_the_same_records_as_in_process(
    mvtec_root: Path, tmp_path: Path
) -> None:
    plain = quiet_run(mvtec_root, tmp_path / "plain", categories="alpha")
    config = make_config(mvtec_root, tmp_path / "iso", categories="alpha")
    isolated = run(replace(config, episode_timeout_s=120.0), log=lambda _: None)
    assert plain.played == isolated.played == 1
    a, b = read_records(tmp_path / "plain")[0], read_records(tmp_path / "iso")[0]
    assert (a.status, a.metrics, a.method) == (b.status, b.metrics, b.method)
    assert read_scores(tmp_path / "plain", a) == read_scores(tmp_path / "iso", b)


def test_the_episode_clock_tells_a_slow_start_from_a_timeout() -> None:
    """Before the worker's start marker only a start-up window counts, and only when the
    episode has a time limit; with a memory limit alone a slow start is never a failure."""
    memory_only = Watch(None, now=0.0, startup_s=1.0)
    assert memory_only.overdue(1e9) is None
    limited = Watch(5.0, now=0.0, startup_s=1.0)
    assert limited.overdue(0.5) is None
    assert "did not start within 1 s" in str(limited.overdue(2.0))
    limited.start(10.0)
    assert limited.overdue(14.0) is None and limited.overdue(16.0) == "timed out after 5 s"


def test_a_slow_start_under_a_memory_limit_still_plays(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker takes longer than the start-up window to report (here the window is
    shrunk to nothing); with only a memory limit set the episode must still be played."""
    monkeypatch.setattr(execution_base, "STARTUP_S", 0.0)
    config = make_config(mvtec_root, tmp_path / "run", categories="alpha")
    summary = run(replace(config, episode_memory_mb=4000.0), log=lambda _: None)
    assert summary.played == 1 and not summary.failed
    assert read_records(tmp_path / "run")[0].status == "ok"


# ---- a worker that dies, a plugin that leaks -------------------------------------------------


@pytest.mark.slow
def test_a_dying_pool_worker_fails_only_its_own_episodes(mvtec_root: Path, tmp_path: Path) -> None:
    summary = quiet_run(mvtec_root, tmp_path / "run", methods="dies", shots="1,2", workers=2)
    records = {(r.category, r.k): r for r in read_records(tmp_path / "run")}
    assert len(records) == 6
    assert all(records[c, 1].status == "ok" for c in ("alpha", "beta", "gamma"))
    for category in ("alpha", "beta", "gamma"):
        assert records[category, 2].status == "failed"
        assert records[category, 2].error == "worker process died (exit code 3)"
    assert len(summary.failed) == 3


@pytest.mark.slow
def test_a_leaking_episode_is_killed_at_the_memory_limit(mvtec_root: Path, tmp_path: Path) -> None:
    config = make_config(mvtec_root, tmp_path / "run", methods="leaks", shots="1,2",
                         categories="alpha,beta")  # fmt: skip
    summary = run(replace(config, episode_memory_mb=400.0), log=lambda _: None)
    records = {(r.category, r.k): r for r in read_records(tmp_path / "run")}
    assert {key: r.status for key, r in records.items()} == {
        ("alpha", 1): "ok", ("beta", 1): "ok", ("alpha", 2): "failed", ("beta", 2): "failed",
    }  # fmt: skip
    assert records["alpha", 2].error.startswith("memory limit exceeded: grew ")
    assert "(limit 400 MB; raise --episode-memory-mb)" in records["alpha", 2].error
    assert len(summary.failed) == 2


def test_a_plugin_writing_into_its_inputs_cannot_change_later_episodes(
    mvtec_root: Path, tmp_path: Path
) -> None:
    quiet_run(mvtec_root, tmp_path / "alone", categories="alpha")
    quiet_run(mvtec_root, tmp_path / "after", methods="scribbles,meandist", categories="alpha")
    alone = read_records(tmp_path / "alone")
    after = [r for r in read_records(tmp_path / "after") if r.method.name == "meandist"]
    assert len(alone) == len(after) == 1
    assert after[0].metrics == alone[0].metrics
    assert read_scores(tmp_path / "after", after[0]) == read_scores(tmp_path / "alone", alone[0])


# ---- invalid plugin output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("wrongmaps", r"InvalidOutput: maps have shape \(6, 16, 16\), expected \(6, 32, 32\)"),
        ("infscores", "InvalidOutput: scores contain NaN or inf"),
    ],
)
def test_invalid_output_is_a_failed_record_with_its_reason(
    method: str, reason: str, mvtec_root: Path, tmp_path: Path
) -> None:
    summary = quiet_run(mvtec_root, tmp_path / "run", methods=f"{method},meandist")
    records = read_records(tmp_path / "run")
    bad = [r for r in records if r.method.name == method]
    good = [r for r in records if r.method.name == "meandist"]
    assert len(bad) == len(good) == 3 and len(summary.failed) == 3
    for record in bad:
        assert record.status == "failed" and record.scores_file is None
        assert record.metrics == dict.fromkeys(METRICS)
        assert record.error is not None
        assert re.search(reason, record.error), record.error
    assert all(r.status == "ok" for r in good)


def test_cli_exit_code_is_1_when_an_episode_failed(mvtec_root: Path, tmp_path: Path) -> None:
    from fsad_bench.cli import app

    args = ["run", "--data-root", str(mvtec_root), "--layout", "mvtec", "--shots", "1",
            "--seeds", "0", "--image-size", "32", "--categories", "alpha"]  # fmt: skip
    ok = CliRunner().invoke(app, [*args, "--method", "meandist", "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*args, "--method", "nanscores", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1, bad.output
    assert "1 episode(s) failed" in bad.output


# ---- data faults ----------------------------------------------------------------------------


def test_category_without_defects_records_undefined_metrics_as_null(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_mvtec_category(root, "alpha")
    make_mvtec_category(root, "clean", n_bad=0, seed=1)
    quiet_run(root, tmp_path / "run")
    record = next(r for r in read_records(tmp_path / "run") if r.category == "clean")
    assert record.status == "ok"
    for name in ("image_auroc", "pixel_auroc", "aupro"):
        assert record.metrics[name] is None, name  # never 0.5 or 0 in its place
        assert record.metric_notes[name].startswith("undefined"), record.metric_notes
    line = (tmp_path / "run" / "records.jsonl").read_text()
    assert "NaN" not in line and '"image_auroc": null' in line


def _rename_tree(category: Path, defect: str, stem: str) -> None:
    """Give the defect folder and its files non-ASCII names (images and masks alike)."""
    for part in ("test", "ground_truth"):
        (category / part / "blob").rename(category / part / defect)
    for path in sorted((category / "test" / defect).iterdir()):
        path.rename(path.with_name(f"{stem}{path.name}"))
    for path in sorted((category / "ground_truth" / defect).iterdir()):
        path.rename(path.with_name(f"{stem}{path.name}"))


def test_non_ascii_names_and_a_symlinked_root_run_end_to_end(tmp_path: Path) -> None:
    real = tmp_path / "données réelles"
    make_mvtec_category(real, "alpha")
    make_mvtec_category(real, "ñandú_检测", seed=1)
    _rename_tree(real / "ñandú_检测", "rayure-щ", "défaut_")
    link = tmp_path / "link"
    os.symlink(real, link, target_is_directory=True)
    summary = quiet_run(link, tmp_path / "run")
    assert summary.played == 2 and not summary.failed
    record = next(r for r in read_records(tmp_path / "run") if r.category == "ñandú_检测")
    assert record.metrics["image_auroc"] == 1.0 and record.metrics["pixel_auroc"] is not None
    paths = read_scores(tmp_path / "run", record)["paths"]
    assert "ñandú_检测/test/rayure-щ/défaut_000.png" in paths
    assert all(not p.startswith(("/", "..")) for p in paths)  # relative to the root, not resolved


def test_same_file_name_in_two_defect_folders_keeps_items_and_masks_apart(
    tmp_path: Path,
) -> None:
    category = make_mvtec_category(tmp_path, "widget", n_bad=1)  # test/blob/000.png
    image = np.full((32, 32, 3), 90, np.uint8)
    other = np.zeros((32, 32), np.uint8)
    other[:4, :] = 255  # a stripe: a different region from blob's square
    write_png(category / "test" / "scratch" / "000.png", image)
    write_png(category / "ground_truth" / "scratch" / "000_mask.png", other)
    listed = mvtec.load_category(tmp_path, "widget")
    test = load_category_tensors(listed, 32)
    assert len(set(test.paths)) == len(test.paths)
    index = {path: i for i, path in enumerate(test.paths)}
    blob = np.asarray(Image.open(category / "ground_truth" / "blob" / "000_mask.png")) > 127
    assert test.masks is not None
    assert np.array_equal(test.masks[index["widget/test/scratch/000.png"]].numpy(), other > 127)
    assert np.array_equal(test.masks[index["widget/test/blob/000.png"]].numpy(), blob)
    assert not np.array_equal(blob, other > 127)


# ---- untrusted input ------------------------------------------------------------------------

_UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("dill", "load"),
                 ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load")}  # fmt: skip


def _unsafe_calls(tree: ast.AST) -> list[str]:
    """Calls that can run code hidden in data: pickle & co, eval/exec, torch.load without
    weights_only=True, numpy loads that allow pickles."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, keywords = node.func, {k.arg: k.value for k in node.keywords}
        if isinstance(func, ast.Name) and func.id in {"eval", "exec", "__import__"}:
            found.append(f"{func.id}() line {node.lineno}")
        if not isinstance(func, ast.Attribute):
            continue
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        if (owner, func.attr) in _UNSAFE_CALLS:
            found.append(f"{owner}.{func.attr} line {node.lineno}")
        safe = keywords.get("weights_only")
        weights_only = isinstance(safe, ast.Constant) and safe.value is True
        if (owner, func.attr) == ("torch", "load") and not weights_only:
            found.append(f"torch.load without weights_only=True line {node.lineno}")
        pickles = keywords.get("allow_pickle")
        if isinstance(pickles, ast.Constant) and pickles.value is True:
            found.append(f"allow_pickle=True line {node.lineno}")
    return found


def test_detector_sees_the_unsafe_calls_it_looks_for() -> None:
    code = ("import pickle, torch, yaml\npickle.load(f)\neval(s)\ntorch.load(p)\n"
            "torch.load(p, weights_only=False)\nyaml.load(s)\nnp.load(p, allow_pickle=True)\n"
            "model.eval()\ntorch.load(p, weights_only=True)\nyaml.safe_load(s)\n")  # fmt: skip
    assert len(_unsafe_calls(ast.parse(code))) == 6


def test_library_and_leaderboard_never_deserialise_code() -> None:
    files = [p for d in ("fsad_bench", "leaderboard", "methods") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    problems = {
        str(path.relative_to(REPO)): calls
        for path in files
        if (calls := _unsafe_calls(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert problems == {}


def test_deeply_nested_json_is_refused_with_a_submission_error() -> None:
    with pytest.raises(SubmissionError, match="not valid JSON"):
        parse_json(b"[" * 200_000, "records.jsonl:1")


@pytest.mark.parametrize("escape", ["../outside.png", "cat/../../outside.png", "/abs.png"])
def test_manifest_paths_escaping_the_data_root_are_refused(escape: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_mvtec_category(root, "cat")
    outside = write_png(tmp_path / "outside.png", np.zeros((8, 8), np.uint8))
    entry = SupportEntry(str(outside) if escape == "/abs.png" else escape)
    with pytest.raises(DatasetError, match="data root"):
        check_entries(root, [entry], tmp_path / "manifest.json")


# ---- determinism ----------------------------------------------------------------------------

_VARYING = ("run_id", "timing", "env")  # wall-clock, a fresh id, and the machine's state


def _comparable(record: EpisodeRecord) -> dict[str, Any]:
    data = asdict(record)
    for key in _VARYING:
        data.pop(key)
    return data


def test_two_runs_write_identical_records_and_score_files(mvtec_root: Path, tmp_path: Path) -> None:
    options = {"methods": "patchcore", "categories": "alpha", "image_size": 64}
    quiet_run(mvtec_root, tmp_path / "a", **options)
    quiet_run(mvtec_root, tmp_path / "b", **options)
    a, b = read_records(tmp_path / "a"), read_records(tmp_path / "b")
    assert len(a) == len(b) == 1 and a[0].status == "ok"
    assert [_comparable(r) for r in a] == [_comparable(r) for r in b]
    assert a[0].run_id != b[0].run_id  # the excluded fields really vary, so nothing is hidden
    for ra, rb in zip(a, b, strict=True):
        assert ra.scores_file is not None and ra.scores_file == rb.scores_file
        bytes_a = (tmp_path / "a" / ra.scores_file).read_bytes()
        assert bytes_a == (tmp_path / "b" / rb.scores_file).read_bytes()
        assert len(json.loads(bytes_a)["scores"]) == 6
    manifests = [(tmp_path / d / "support_manifest.json").read_bytes() for d in "ab"]
    assert manifests[0] == manifests[1]


@pytest.mark.slow
def test_quick_benchmark_twice_gives_identical_records_for_every_method(tmp_path: Path) -> None:
    """Every built-in method, as in its conformance settings, on the default data's quick
    protocol, in two fresh processes: identical records and score files."""
    import subprocess
    import sys

    import yaml

    from fsad_bench.registry import list_methods, resolve

    builtin = [
        name
        for name, target in list_methods().items()
        if target.startswith("fsad_") and resolve(name).cls.info.deterministic
    ]
    assert {"patchcore", "padim", "regad", "riad", "meta_riad", "anograd"} <= set(builtin)
    params = {m: dict(getattr(resolve(m).cls, "conformance_params", {})) for m in builtin}
    config = tmp_path / "quick.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "protocol": "synthetic_quick",
                "categories": "brick",
                "shots": "1",
                "methods": builtin,
                "params": params,
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for out in ("a", "b"):
        subprocess.run(
            [sys.executable, "-c", "from fsad_bench.cli import app; app()", "run",
             "--config", str(config), "--out", str(tmp_path / out)],
            check=True, capture_output=True, env=env, timeout=900,
        )  # fmt: skip
    a, b = read_records(tmp_path / "a"), read_records(tmp_path / "b")
    assert sorted(r.method.name for r in a) == sorted(builtin)
    assert all(r.status == "ok" for r in a), [r.error for r in a]
    assert [_comparable(r) for r in a] == [_comparable(r) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert (tmp_path / "a" / ra.scores_file).read_bytes() == (
            tmp_path / "b" / rb.scores_file
        ).read_bytes()


def test_unwritable_output_is_one_line_naming_the_file(mvtec_root: Path, tmp_path: Path) -> None:
    """A full disk or a broken --out: a one-line FsadError with the path and the fix; the
    records written before stay whole (root ignores permissions, so a file stands where the
    score folder must go)."""
    out = tmp_path / "run"
    quiet_run(mvtec_root, out, categories="alpha")
    shutil.rmtree(out / "scores")
    (out / "scores").write_text("not a folder")
    with pytest.raises(FsadError, match=r"cannot write the run's output .*pass another --out"):
        quiet_run(mvtec_root, out, shots="1,2", categories="alpha")
    records = read_records(out)
    assert [r.k for r in records] == [1] and records[0].status == "ok"
    result = CliRunner().invoke(
        cli_app, ["run", "--data-root", str(mvtec_root), "--layout", "mvtec", "--method",
                  "meandist", "--shots", "1,2", "--seeds", "0", "--categories", "alpha",
                  "--image-size", "32", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "cannot write the run's output" in lines[-1]


# ---- data that is awkward but valid --------------------------------------------------------


def test_every_format_pillow_decodes_counts_and_other_files_are_named_once(
    mvtec_root: Path, tmp_path: Path
) -> None:
    """A .webp defect image is a test image like a .png; a stray text file is listed in one
    note with its count, not silently dropped and not an error."""
    blob = mvtec_root / "alpha" / "test" / "blob"
    Image.open(blob / "000.png").save(blob / "000.webp", lossless=True)
    (blob / "000.png").unlink()
    (blob / "README.txt").write_text("notes from the camera operator")
    category = mvtec.load_category(mvtec_root, "alpha")
    assert any(item.path.suffix == ".webp" for item in category.test)
    assert len([i for i in category.test if i.label == 1]) == 3
    assert category.notes == (f"ignored 1 file(s) that are neither images nor masks (e.g. "
                              f"{blob / 'README.txt'})",)  # fmt: skip
    lines: list[str] = []
    run(make_config(mvtec_root, tmp_path / "run", categories="alpha"), log=lines.append)
    assert any("alpha: ignored 1 file(s)" in line for line in lines)


def test_categories_and_images_symlinked_from_outside_the_root_are_keyed_under_it(
    tmp_path: Path,
) -> None:
    """DVC, git-annex and shared stores link data in from elsewhere: files are keyed by
    where they sit under --data-root, and the run plays."""
    store, root = tmp_path / "store", tmp_path / "root"
    for name in ("alpha", "beta"):
        make_mvtec_category(store, name, seed=len(name))
    root.mkdir()
    (root / "alpha").symlink_to(store / "alpha", target_is_directory=True)
    make_mvtec_category(root, "beta", seed=7)
    image = root / "beta" / "train" / "good" / "000.png"
    image.unlink()
    image.symlink_to(store / "beta" / "train" / "good" / "000.png")
    summary = quiet_run(root, tmp_path / "run")
    assert summary.played == 2 and not summary.failed
    supports = [p for r in read_records(tmp_path / "run") for p in r.provenance["support"]]
    assert all(p.split("/")[0] in ("alpha", "beta") for p in supports)


def test_a_file_name_that_is_not_utf8_does_not_break_the_run(
    mvtec_root: Path, tmp_path: Path
) -> None:
    good = mvtec_root / "alpha" / "train" / "good"
    odd = os.fsdecode(bytes(good / "000.png").replace(b"000.png", b"\xff\xfe.png"))
    (good / "000.png").rename(odd)
    summary = quiet_run(mvtec_root, tmp_path / "run", categories="alpha")
    assert summary.played == 1 and not summary.failed


def test_output_errors_outside_episodes_are_one_line_and_leave_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while writing a report or a submission: exit 2, one line, no torn or
    empty file left behind (the writes are atomic)."""
    import errno

    from test_submission import make_run

    from fsad_bench import store
    from fsad_bench.results.submission import building

    run_dir = make_run(tmp_path / "run")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(store, "write_bytes_atomic", full_disk)
    monkeypatch.setattr("fsad_bench.results.report.write_bytes_atomic", full_disk)
    result = CliRunner().invoke(cli_app, ["report", str(run_dir)])
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert result.exit_code == 2 and len(lines) == 1 and "No space left" in lines[0]
    assert not (run_dir / "report.md").exists() and not (run_dir / "report.csv").exists()

    real_open = open

    def failing_open(path: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "w" in mode and "subs" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(building, "open", failing_open, raising=False)
    result = CliRunner().invoke(cli_app, ["submit", str(run_dir), "--out", str(tmp_path / "subs")])
    lines = [line for line in result.output.splitlines() if line.startswith("error")]
    assert result.exit_code == 2 and len(lines) == 1 and "nothing was written" in lines[0]
    leftovers = [p for p in (tmp_path / "subs").rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_second_run_on_a_locked_directory_stops_naming_the_holder(
    mvtec_root: Path, tmp_path: Path
) -> None:
    """Two runs on one --out: the second stops with one line naming the first's PID before
    it writes anything, whatever its settings; the first plays to the end undisturbed."""
    import threading

    out = tmp_path / "run"
    first_config = make_config(mvtec_root, out, methods="naps", categories="alpha",
                               shots="1,2")  # fmt: skip
    done: dict[str, Any] = {}

    def play_first() -> None:
        done["summary"] = run(first_config, log=lambda _: None)

    first = threading.Thread(target=play_first)
    first.start()
    deadline = time.monotonic() + 60
    while not (out / ".lock").exists() or not (out / ".lock").read_text():  # the barrier
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    records = out / "records.jsonl"
    records_before = records.read_bytes() if records.exists() else b""
    with pytest.raises(FsadError, match=f"another fsad-bench run \\(PID {os.getpid()}\\)"):
        quiet_run(mvtec_root, out, categories="alpha", seeds="3")  # other settings
    with pytest.raises(FsadError, match="another fsad-bench run"):
        run(first_config, log=lambda _: None)  # identical settings: not played twice
    first.join()
    assert done["summary"].played == 2
    assert len(read_records(out)) == 2
    assert records.read_bytes().startswith(records_before)
    assert quiet_run(mvtec_root, out, methods="naps", categories="alpha").played == 0  # lock freed


# ---- the test set is part of the protocol ---------------------------------------------------


def frozen_protocol(root: Path, tmp_path: Path) -> Path:
    """A protocol over ``root`` whose test listing is frozen, as the built-in ones are."""
    from fsad_bench.protocols.manifests import freeze_test_manifest
    from fsad_bench.protocols.protocol import load_protocol

    path = tmp_path / "frozen.yaml"
    path.write_text(
        f"name: frozen\nversion: '1'\ndataset: tiny\nlayout: mvtec\ndata_root: {root}\n"
        "categories: [alpha, beta]\nshots: [1]\nseeds: [0]\nimage_size: 32\n"
        "test_manifest: frozen_tests.json\n"
    )
    freeze_test_manifest(load_protocol(str(path)))
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda c: (c / "test" / "blob" / "000.png").unlink(),
         "1 missing (e.g. alpha/test/blob/000.png)"),
        (lambda c: shutil.copy(c / "test" / "good" / "000.png", c / "test" / "good" / "009.png"),
         "1 extra (e.g. alpha/test/good/009.png)"),
        (lambda c: write_png(c / "test" / "good" / "000.png", np.zeros((32, 32, 3), np.uint8)),
         "1 changed (e.g. alpha/test/good/000.png)"),
    ],
)  # fmt: skip
def test_a_test_set_that_differs_from_the_protocols_stops_the_run(
    mvtec_root: Path, tmp_path: Path, change: Any, needle: str
) -> None:
    protocol = frozen_protocol(mvtec_root, tmp_path)
    change(mvtec_root / "alpha")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli_app, ["run", "--protocol", str(protocol), "--method",
                                          "patchcore", "--out", str(out)])  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert needle in lines[0] and "differs from the protocol's frozen listing" in lines[0]
    assert not (out / "records.jsonl").exists()


def test_records_name_their_test_set_and_a_check_against_other_data_refuses(
    mvtec_root: Path, tmp_path: Path
) -> None:
    from fsad_bench.results.regression import compare

    quiet_run(mvtec_root, tmp_path / "a", categories="alpha")
    (mvtec_root / "alpha" / "test" / "blob" / "000.png").unlink()  # a copy without one image
    quiet_run(mvtec_root, tmp_path / "b", categories="alpha")
    a, b = read_records(tmp_path / "a"), read_records(tmp_path / "b")
    assert a[0].test_set_hash and b[0].test_set_hash and a[0].test_set_hash != b[0].test_set_hash
    with pytest.raises(FsadError, match="they do not compare"):
        compare(a, b, 0.01)


def test_submit_refuses_records_scored_on_another_test_set(tmp_path: Path) -> None:
    from test_submission import edit_lines, make_run

    from fsad_bench.results.submission import submit

    run_dir = make_run(tmp_path / "run")

    def other_test_set(rows: list[dict]) -> list[dict]:
        rows[0]["test_set_hash"] = "0123456789abcdef"
        return rows

    edit_lines(run_dir / "records.jsonl", other_test_set)
    with pytest.raises(SubmissionError, match="not the frozen test set"):
        submit(run_dir, tmp_path / "subs")
