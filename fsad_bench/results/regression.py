"""Score-regression check: rerun a baseline submission's episodes and compare the means.

The baseline is re-validated first (a tampered baseline is refused, not compared). Only the
episodes (category, K, seed) that both the baseline and the rerun have are compared, each
side aggregated over those same episodes with ``report.aggregate``, so a quick subset of a
full baseline, or a run with other seeds or K, is a fair comparison; the table's notes say
how many episodes of either side were left out. A rerun episode that failed is still one
of the compared episodes: its values count as missing.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fsad_bench.errors import FsadError
from fsad_bench.records import EpisodeRecord
from fsad_bench.results.report import aggregate
from fsad_bench.results.submission import (
    Submission,
    build_submission,
    builtin_protocol,
    load_submission,
)
from fsad_bench.run.environment import cpu_model

COLUMNS = ["category", "k", "metric", "baseline", "current", "delta", "status"]
FAILING = ("DROP", "missing")
QUICK_CATEGORIES = 2


@dataclass(frozen=True)
class Comparison:
    """Per (category, k, metric) means of baseline and rerun; status says what changed.

    ``table.attrs["notes"]`` holds lines about episodes left out, which ``render`` prints.
    """

    table: pd.DataFrame
    tolerance: float

    @property
    def notes(self) -> list[str]:
        return list(self.table.attrs.get("notes", []))

    @property
    def failures(self) -> pd.DataFrame:
        failures = self.table[self.table["status"].isin(FAILING)].copy()
        failures.attrs = {}
        return failures

    @property
    def passed(self) -> bool:
        return self.failures.empty


def _status(baseline: float, current: float, tolerance: float) -> str:
    if math.isnan(baseline):
        return "n/a" if math.isnan(current) else "new"
    if math.isnan(current):
        return "missing"
    delta = current - baseline
    if delta < -tolerance:
        return "DROP"
    return "improved" if delta > tolerance else "ok"


def _means(records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    return aggregate(records)[["category", "k", "metric", "mean"]]


def _episode(record: EpisodeRecord) -> tuple[str, int, int]:
    return (record.category, record.k, record.seed)


def _same_test_sets(baseline: Sequence[EpisodeRecord], current: Sequence[EpisodeRecord]) -> None:
    """Records that name their test sets must name the same ones: a run on other data (a
    copy missing its hardest images) must not pass, or even 'improve', against a baseline."""
    theirs = {r.category: r.test_set_hash for r in baseline if r.test_set_hash}
    for record in current:
        expected = theirs.get(record.category)
        if expected and record.test_set_hash and record.test_set_hash != expected:
            raise FsadError(
                f"{record.category}: the run was scored on test set {record.test_set_hash}, the "
                f"baseline on {expected}; they do not compare (check --data-root)"
            )


def check_tolerance(tolerance: float) -> None:
    if not math.isfinite(tolerance) or tolerance < 0:
        raise FsadError(f"--tolerance must be a finite number >= 0, got {tolerance}")


def compare(
    baseline: Sequence[EpisodeRecord], current: Sequence[EpisodeRecord], tolerance: float
) -> Comparison:
    """Compare on the episodes (category, k, seed) both sides have.

    An episode the rerun attempted but failed is one of those: its values count as missing.
    Baseline episodes the rerun did not play, and rerun episodes the baseline lacks, are
    left out of both sides and counted in the notes.
    """
    check_tolerance(tolerance)
    played = {_episode(r) for r in current}
    if not played:
        raise FsadError("the rerun produced no records; nothing to compare")
    wanted = {_episode(r) for r in baseline}
    both = played & wanted
    if not both:
        raise FsadError("the rerun played none of the baseline's episodes; nothing to compare")
    base = [r for r in baseline if _episode(r) in both]
    ours = [r for r in current if _episode(r) in both]
    _same_test_sets(base, ours)
    notes = []
    if wanted - both:
        notes.append(
            f"note: {len(wanted - both)} of the baseline's {len(wanted)} episodes were not "
            f"played by the run; compared on the {len(both)} in both"
        )
    if played - both:
        notes.append(
            f"note: {len(played - both)} of the run's {len(played)} episodes are not in the "
            "baseline and were left out"
        )
    keys = ["category", "k", "metric"]
    table = _means(base).merge(_means(ours), on=keys, how="outer", suffixes=("_b", "_c"))
    table = table.rename(columns={"mean_b": "baseline", "mean_c": "current"})
    table["baseline"] = pd.to_numeric(table["baseline"], errors="coerce")
    table["current"] = pd.to_numeric(table["current"], errors="coerce")
    table["delta"] = table["current"] - table["baseline"]
    table["status"] = [
        _status(b, c, tolerance) for b, c in zip(table["baseline"], table["current"], strict=True)
    ]
    order = sorted(table.index, key=lambda i: (table.at[i, "category"] == "mean", i))
    table = table.loc[order, COLUMNS].reset_index(drop=True)
    table.attrs["notes"] = notes
    return Comparison(table, tolerance)


def render(table: pd.DataFrame) -> str:
    """The table as text, followed by its notes (``table.attrs["notes"]``), if any."""

    def number(value: float) -> str:
        return "n/a" if pd.isna(value) else f"{value:.4f}"

    shown = table.copy()
    for column in ("baseline", "current"):
        shown[column] = shown[column].map(number)
    shown["delta"] = table["delta"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
    return "\n".join([shown.to_string(index=False), *table.attrs.get("notes", [])])


def quick_selection(submission: Submission) -> dict[str, str]:
    """A small subset of the baseline's own episodes: first categories, min/max K, one seed."""
    proto = submission.manifest["protocol"]
    shots = sorted({min(proto["shots"]), max(proto["shots"])})
    return {
        "categories": ",".join(proto["categories"][:QUICK_CATEGORIES]),
        "shots": ",".join(str(k) for k in shots),
        "seeds": str(proto["seeds"][0]),
    }


def rerun(
    submission: Submission,
    out_dir: Path,
    quick: bool = False,
    workers: int = 1,
    data_root: Path | None = None,
) -> list[EpisodeRecord]:
    """Play the baseline's episodes again with the same method parameters."""
    from fsad_bench.run.config import build_run_config
    from fsad_bench.run.runner import run
    from fsad_bench.store import read_records

    if (Path(out_dir) / "records.jsonl").exists():
        raise FsadError(f"{out_dir} already holds records; the check needs a new --out directory")
    manifest = submission.manifest
    proto, method = manifest["protocol"], manifest["method"]
    protocol = builtin_protocol(proto["name"], proto["version"], proto["definition_hash"])
    options = {
        "protocol": protocol.source,
        "methods": [method["label"]],
        "params": {method["label"]: method["params"]},
        "shots": ",".join(str(k) for k in proto["shots"]),
        "seeds": ",".join(str(s) for s in proto["seeds"]),
        "out": str(out_dir),
        "workers": workers,
        "data_root": str(data_root) if data_root else None,
    }
    if quick:
        options.update(quick_selection(submission))
    config = build_run_config({k: v for k, v in options.items() if v is not None})
    run(config)
    return read_records(out_dir)


def played_run(submission: Submission, run_dir: Path) -> list[EpisodeRecord]:
    """Records of a run made beforehand (e.g. a CI step), validated like a submission."""
    current, _ = build_submission(run_dir, method=submission.label)
    for key in ("name", "version", "definition_hash"):
        if current.manifest["protocol"][key] != submission.manifest["protocol"][key]:
            raise FsadError(
                f"{run_dir}: protocol {key} {current.manifest['protocol'][key]!r} is not the "
                f"baseline's {submission.manifest['protocol'][key]!r}"
            )
    if current.manifest["method"]["params"] != submission.manifest["method"]["params"]:
        raise FsadError(
            f"{run_dir}: {submission.label} ran with params {current.manifest['method']['params']}"
            f", the baseline with {submission.manifest['method']['params']}; rerun with those"
        )
    return list(current.records)


def check(
    baseline_dir: Path,
    tolerance: float = 0.01,
    quick: bool = False,
    out_dir: Path | None = None,
    workers: int = 1,
    data_root: Path | None = None,
    run_dir: Path | None = None,
) -> Comparison:
    """Validate the baseline, rerun its method on its protocol (or take run_dir), compare."""
    check_tolerance(tolerance)
    baseline = load_submission(baseline_dir)
    if run_dir is not None:
        current = played_run(baseline, run_dir)
    elif out_dir is not None:
        current = rerun(baseline, out_dir, quick, workers, data_root)
    else:
        with tempfile.TemporaryDirectory(prefix="fsad-check-") as tmp:
            current = rerun(baseline, Path(tmp) / "run", quick, workers, data_root)
    comparison = compare(baseline.records, current, tolerance)
    made_on = baseline.manifest.get("environment", {}).get("cpu")
    here = cpu_model()
    if made_on != here:
        comparison.table.attrs.setdefault("notes", []).append(
            f"note: the baseline was made on {made_on or 'an unrecorded CPU'}, this machine is "
            f"{here}; kernels round floats differently across CPUs, which can move meta-trained "
            "methods by more than the tolerance (docs/reliability.md)"
        )
    return comparison
