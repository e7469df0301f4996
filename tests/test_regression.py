"""`fsad-bench check`: PatchCore against its committed quick baseline, and the comparison rules.

The real rerun (4 PatchCore episodes of synthetic_quick) happens once per module; the
pass/fail tests then move the baseline's numbers up or down around that rerun.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_results import make_record
from test_submission import forge, make_run
from typer.testing import CliRunner

from fsad_bench.cli import app
from fsad_bench.errors import FsadError
from fsad_bench.records import EpisodeRecord, MethodRef
from fsad_bench.registry import load_class
from fsad_bench.results.regression import check, compare, quick_selection, render
from fsad_bench.results.report import aggregate
from fsad_bench.results.submission import SubmissionError, find_submissions, load_submission, submit
from fsad_bench.run.environment import cpu_model
from fsad_bench.store import RECORDS, read_records

ROOT = Path(__file__).resolve().parents[1]


def shipped(protocol: str) -> Path:
    for folder in find_submissions(ROOT / "submissions"):
        manifest = load_submission(folder).manifest
        if manifest["method"]["label"] == "patchcore" and manifest["protocol"]["name"] == protocol:
            return folder
    raise AssertionError(f"no shipped patchcore submission on {protocol}")


@pytest.fixture(scope="module")
def rerun(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[EpisodeRecord]]:
    """`fsad-bench check` of PatchCore against the committed synthetic_quick baseline."""
    out = tmp_path_factory.mktemp("check") / "run"
    baseline = shipped("synthetic_quick")
    result = CliRunner().invoke(app, ["check", "--baseline", str(baseline), "--out", str(out)])
    return result, read_records(out)


def test_patchcore_passes_against_its_baseline(rerun: tuple) -> None:
    result, _ = rerun
    assert result.exit_code == 0, result.output
    assert "no mean dropped by more than 0.01" in result.output
    assert "image_auroc" in result.output and "DROP" not in result.output


def test_rerun_plays_the_baseline_episodes(rerun: tuple) -> None:
    _, current = rerun
    baseline = load_submission(shipped("synthetic_quick"))
    assert {r.episode_key for r in current} == {r.episode_key for r in baseline.records}
    assert all(r.method.params == baseline.manifest["method"]["params"] for r in current)


def shifted(records: list[EpisodeRecord], delta: float) -> list[EpisodeRecord]:
    return [
        replace(r, metrics={**r.metrics, "image_auroc": r.metrics["image_auroc"] + delta})
        for r in records
    ]


def test_better_baseline_fails_and_worse_baseline_passes(rerun: tuple) -> None:
    _, current = rerun
    baseline = list(load_submission(shipped("synthetic_quick")).records)
    better = compare(shifted(baseline, 0.05), current, tolerance=0.01)
    assert not better.passed
    assert set(better.failures["metric"]) == {"image_auroc"}
    assert (better.failures["delta"] < -0.01).all()
    worse = compare(shifted(baseline, -0.05), current, tolerance=0.01)
    assert worse.passed
    assert set(worse.table.loc[worse.table["metric"] == "image_auroc", "status"]) == {"improved"}


def test_tampered_baseline_is_refused_before_any_rerun(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    shutil.copytree(shipped("synthetic_quick"), baseline)
    lines = (baseline / RECORDS).read_text().splitlines()
    row = json.loads(lines[0])
    row["metrics"]["image_auroc"] = 0.5
    lines[0] = json.dumps(row)
    (baseline / RECORDS).write_text("\n".join(lines) + "\n")
    with pytest.raises(SubmissionError, match="content differs"):
        check(baseline, out_dir=tmp_path / "never")
    forge(baseline)
    with pytest.raises(SubmissionError, match="recomputed from scores/"):
        check(baseline, out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_drop_within_tolerance_passes_and_beyond_fails() -> None:
    baseline = [make_record(c, 1, s, image_auroc=0.9) for c in "ab" for s in (0, 1)]
    slightly = [make_record(c, 1, s, image_auroc=0.895) for c in "ab" for s in (0, 1)]
    assert compare(baseline, slightly, tolerance=0.01).passed
    failed = compare(baseline, slightly, tolerance=0.001)
    assert not failed.passed
    assert set(failed.failures["category"]) == {"a", "b", "mean"}


def test_failed_episode_counts_as_missing() -> None:
    baseline = [make_record("a", 1, 0), make_record("b", 1, 0)]
    current = [make_record("a", 1, 0), replace(make_record("b", 1, 0), status="failed")]
    comparison = compare(baseline, current, tolerance=0.01)
    assert not comparison.passed
    missing = comparison.failures
    # the rerun has no mean over a and b either: its mean of a alone is not compared
    assert set(missing["status"]) == {"missing"} and set(missing["category"]) == {"b", "mean"}


def test_only_the_rerun_episodes_are_compared() -> None:
    values = {0: 0.9, 1: 0.7, 2: 0.5}
    baseline = [make_record("a", 1, s, image_auroc=v) for s, v in values.items()]
    current = [make_record("a", 1, 0, image_auroc=0.9)]
    comparison = compare(baseline, current, tolerance=0.0)
    assert comparison.passed  # baseline over all seeds would be 0.7, not the seed-0 value
    row = comparison.table.query("category == 'a' and metric == 'image_auroc'").iloc[0]
    expected = aggregate(baseline[:1]).query("category == 'a' and metric == 'image_auroc'")
    assert row["baseline"] == expected["mean"].iloc[0]


def test_quick_selection_is_a_subset_of_the_baseline() -> None:
    manifest = load_submission(shipped("synthetic_loo")).manifest["protocol"]
    chosen = quick_selection(load_submission(shipped("synthetic_loo")))
    categories = chosen["categories"].split(",")
    shots = [int(k) for k in chosen["shots"].split(",")]
    assert len(categories) == 2 and set(categories) <= set(manifest["categories"])
    assert shots == [min(manifest["shots"]), max(manifest["shots"])]
    assert int(chosen["seeds"]) in manifest["seeds"]


def test_negative_tolerance_is_an_error() -> None:
    with pytest.raises(FsadError, match="tolerance"):
        compare([make_record()], [make_record()], tolerance=-0.1)


def test_run_with_other_seeds_is_compared_on_the_common_episodes_only() -> None:
    values = {0: 0.9, 1: 0.7, 2: 0.5}
    baseline = [make_record(c, 1, s, image_auroc=values[s]) for c in "ab" for s in (0, 1)]
    current = [make_record(c, 1, s, image_auroc=values[s]) for c in "ab" for s in (1, 2)]
    comparison = compare(baseline, current, tolerance=0.0)
    assert comparison.passed, comparison.table  # seed 2 of the run is not compared
    image = comparison.table.query("metric == 'image_auroc'")
    assert (image["baseline"] == 0.7).all() and (image["current"] == 0.7).all()
    note = "note: 2 of the baseline's 4 episodes were not played by the run; compared on the 2"
    assert comparison.notes[0].startswith(note)
    assert note in render(comparison.table) and note not in render(comparison.failures)
    # a real drop on the common seed is still seen, whatever the run's other seeds score
    worse = [replace(r, metrics={**r.metrics, "image_auroc": 0.6}) if r.seed == 1 else r
             for r in current]  # fmt: skip
    assert set(compare(baseline, worse, 0.01).failures["category"]) == {"a", "b", "mean"}
    same = compare(baseline, baseline, 0.0)
    assert same.passed and same.notes == []


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf")])
def test_non_finite_tolerance_is_an_error(tolerance: float, tmp_path: Path) -> None:
    with pytest.raises(FsadError, match="tolerance must be a finite number"):
        compare([make_record()], [make_record()], tolerance=tolerance)
    with pytest.raises(FsadError, match="tolerance must be a finite number"):
        check(tmp_path / "no-baseline", tolerance=tolerance, run_dir=tmp_path)
    result = CliRunner().invoke(
        app, ["check", "--baseline", str(tmp_path), "--run", str(tmp_path), "--tolerance", "nan"]
    )
    assert result.exit_code == 2 and "tolerance must be a finite number" in result.output


def test_check_of_a_finished_run_passes_or_fails_on_its_numbers(tmp_path: Path) -> None:
    base_run = make_run(tmp_path / "base", shift=1.0)
    baseline = submit(base_run, tmp_path / "subs")
    same = check(baseline, run_dir=base_run)
    assert same.passed and (same.table["delta"].dropna() == 0).all()
    better = check(baseline, run_dir=make_run(tmp_path / "better", shift=2.0))
    assert better.passed and "improved" in set(better.table["status"])
    worse_run = make_run(tmp_path / "worse", shift=0.0)
    result = CliRunner().invoke(
        app, ["check", "--baseline", str(baseline), "--run", str(worse_run)]
    )
    assert result.exit_code == 1
    assert "dropped by more than 0.01" in result.output and "DROP" in result.output


def test_finished_run_with_other_params_is_refused(tmp_path: Path) -> None:
    baseline = submit(make_run(tmp_path / "base"), tmp_path / "subs")
    method = MethodRef("patchcore", "1.0", None, {"weights": "random"}, True)
    other = make_run(tmp_path / "other", method=method)
    with pytest.raises(FsadError, match="params"):
        check(baseline, run_dir=other)


def ci_baselines() -> list[Path]:
    """The committed quick baselines of the other methods, in their tiny ``ci`` presets."""
    found = []
    for folder in find_submissions(ROOT / "submissions"):
        manifest = load_submission(folder).manifest
        if manifest["method"]["label"].endswith(".ci"):
            found.append(folder)
    return found


def test_every_other_builtin_method_has_a_ci_baseline() -> None:
    labels = {load_submission(f).manifest["method"]["label"] for f in ci_baselines()}
    assert labels == {f"{m}.ci" for m in ("padim", "regad", "riad", "meta_riad", "anograd")}


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ci_baselines(), ids=lambda p: p.parent.name)
def test_other_methods_pass_against_their_ci_baselines(baseline: Path, tmp_path: Path) -> None:
    """Meta-training on a CPU follows its kernels' float rounding: on another CPU model the
    tiny ``ci`` networks end elsewhere (docs/reliability.md measures it), so a meta-trained
    method's baseline is compared on the CPU it was made on and skipped, saying why,
    elsewhere; methods without meta-training are compared everywhere."""
    manifest = load_submission(baseline).manifest
    made_on, here = manifest["environment"].get("cpu"), cpu_model()
    label = manifest["method"]["label"]
    if load_class(manifest["method"]["name"]).info.needs_meta_train and made_on != here:
        pytest.skip(
            f"{label}: baseline made on {made_on or 'an unrecorded CPU'}, this machine is "
            f"{here}; regenerate it here with the command in its manifest to compare"
        )
    result = CliRunner().invoke(
        app, ["check", "--baseline", str(baseline), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 0, result.output
    assert "no mean dropped by more than 0.01" in result.output
