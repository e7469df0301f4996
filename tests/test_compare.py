"""Paired comparisons, critical differences, seed spread and the report's PNG figures,
against hand-computed cases and scipy's own tests on the same pairs."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from test_results import make_record
from typer.testing import CliRunner

from fsad_bench.cli import app
from fsad_bench.records import MethodRef
from fsad_bench.results import compare
from fsad_bench.results.report import aggregate, records_frame
from fsad_bench.store import RecordWriter

# image AUROC of two methods on the same episodes: 3 categories x 3 seeds at K = 1
A = {("c1", 0): 0.90, ("c1", 1): 0.80, ("c1", 2): 0.70,
     ("c2", 0): 0.60, ("c2", 1): 0.65, ("c2", 2): 0.50,
     ("c3", 0): 0.95, ("c3", 1): 0.90, ("c3", 2): 0.85}  # fmt: skip
B = {("c1", 0): 0.85, ("c1", 1): 0.80, ("c1", 2): 0.60,
     ("c2", 0): 0.62, ("c2", 1): 0.55, ("c2", 2): 0.45,
     ("c3", 0): 0.80, ("c3", 1): 0.91, ("c3", 2): 0.75}  # fmt: skip


def method_records(name: str, values: dict, k: int = 1, metric: str = "image_auroc") -> list:
    ref = MethodRef(name, "1", None, {}, False)
    return [
        replace(make_record(c, k, s), method=ref, metrics={metric: v})
        for (c, s), v in values.items()
    ]


def write_run(run_dir: Path, *groups: list) -> Path:
    writer = RecordWriter(run_dir)
    for group in groups:
        for record in group:
            writer.append(record)
    return run_dir


def test_comparisons_csv_matches_a_hand_computed_case(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", method_records("a", A), method_records("b", B))
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(run / "comparisons.csv")
    assert list(table.columns) == ["method_a", "method_b", "k", "metric", "wins_a", "wins_b",
                                   "ties", "mean_diff", "ci_low", "ci_high", "p_value"]  # fmt: skip
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["method_a"], row["method_b"], row["k"], row["metric"]) == (
        "a",
        "b",
        1,
        "image_auroc",
    )
    # by hand: a - b = .05 0 .10 / -.02 .10 .05 / .15 -.01 .10 -> 6 wins, 2 losses, 1 tie
    diffs = [A[key] - B[key] for key in sorted(A)]
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (6, 2, 1)
    assert row["mean_diff"] == pytest.approx(0.52 / 9, abs=1e-6)
    assert row["p_value"] == pytest.approx(stats.wilcoxon(diffs).pvalue, rel=1e-5)
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"]
    # an independent percentile bootstrap agrees on the interval to within resampling noise
    rng = np.random.default_rng(123)
    means = rng.choice(diffs, size=(20000, len(diffs))).mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert row["ci_low"] == pytest.approx(low, abs=0.02)
    assert row["ci_high"] == pytest.approx(high, abs=0.02)


def test_the_interval_is_fixed_by_its_seed_and_collapses_without_spread() -> None:
    values = records_frame(method_records("a", A) + method_records("b", B))
    first, again = compare.paired(values), compare.paired(values)
    assert first.equals(again)
    same = {key: 0.7 for key in A}
    shifted = {key: 0.8 for key in A}
    table = compare.paired(records_frame(method_records("a", same) + method_records("b", shifted)))
    row = table.iloc[0]
    assert row["mean_diff"] == pytest.approx(-0.1)
    assert row["ci_low"] == pytest.approx(-0.1) and row["ci_high"] == pytest.approx(-0.1)


def test_all_zero_differences_are_ties_with_p_one() -> None:
    values = records_frame(method_records("a", A) + method_records("b", A))
    row = compare.paired(values).iloc[0]
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (0, 0, 9)
    assert row["mean_diff"] == 0 and row["p_value"] == 1.0
    assert row["ci_low"] == 0 and row["ci_high"] == 0


def test_only_shared_episodes_are_paired() -> None:
    partial = {key: value for key, value in B.items() if key[0] != "c3"}
    row = compare.paired(records_frame(method_records("a", A) + method_records("b", partial)))
    row = row.iloc[0]
    assert row["wins_a"] + row["wins_b"] + row["ties"] == 6
    shared = [A[key] - partial[key] for key in sorted(partial)]
    assert row["mean_diff"] == pytest.approx(statistics.mean(shared))
    assert row["p_value"] == pytest.approx(stats.wilcoxon(shared).pvalue)


# three methods on four categories, one seed: per-category ranks (1 = best) by hand
CD_VALUES = {
    "x": {"c1": 0.9, "c2": 0.8, "c3": 0.7, "c4": 0.9},
    "y": {"c1": 0.8, "c2": 0.9, "c3": 0.6, "c4": 0.9},
    "z": {"c1": 0.7, "c2": 0.7, "c3": 0.5, "c4": 0.6},
}


def cd_records() -> list:
    return [
        record
        for name, values in CD_VALUES.items()
        for record in method_records(name, {(c, 0): v for c, v in values.items()})
    ]


def test_critical_difference_uses_demsars_nemenyi_value() -> None:
    diagram = compare.critical_difference(records_frame(cd_records()), 1, "image_auroc")
    assert diagram is not None and diagram.n_categories == 4
    # ranks: c1 x1 y2 z3; c2 y1 x2 z3; c3 x1 y2 z3; c4 x1.5 y1.5 z3
    assert diagram.mean_ranks == pytest.approx({"x": 5.5 / 4, "y": 6.5 / 4, "z": 3.0})
    # Demšar (2006), Table 5: q_0.05 = 2.343 for three classifiers; CD = q sqrt(k(k+1)/6N)
    assert diagram.cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 4)), abs=1e-3)
    per_category = [[CD_VALUES[m][c] for c in ("c1", "c2", "c3", "c4")] for m in "xyz"]
    assert diagram.friedman_p == pytest.approx(stats.friedmanchisquare(*per_category).pvalue)
    # x and y are within one CD of each other; z is 1.625 from x, less than CD = 1.657
    assert diagram.tied_groups() == [("x", "y", "z")]


def test_no_diagram_for_two_methods() -> None:
    values = records_frame(method_records("a", A) + method_records("b", B))
    assert compare.critical_difference(values, 1, "image_auroc") is None


def test_seed_spread_is_the_mean_over_categories_of_the_std_over_seeds() -> None:
    long = aggregate(method_records("a", A))
    spread = compare.seed_spread(long)
    row = spread.iloc[0]
    stds = {c: statistics.stdev([A[(c, s)] for s in range(3)]) for c in ("c1", "c2", "c3")}
    assert row["mean_seed_std"] == pytest.approx(statistics.mean(stds.values()))
    assert row["max_seed_std"] == pytest.approx(max(stds.values()))
    assert row["worst_category"] == max(stds, key=stds.get) and row["n_categories"] == 3


def png_size(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        assert len(image.convert("L").getcolors(65536) or range(300)) > 20  # not blank
        return image.size


def test_report_writes_the_figures(tmp_path: Path) -> None:
    k4 = [replace(r, k=4, metrics={"image_auroc": min(1.0, r.metrics["image_auroc"] + 0.05)})
          for r in cd_records()]  # fmt: skip
    three = write_run(tmp_path / "three", cd_records(), k4)
    result = CliRunner().invoke(app, ["report", str(three), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    plots = tmp_path / "out" / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == [
        "critical_difference.png",
        "k_curve.png",
        "per_category.png",
    ]
    for name in ("critical_difference.png", "k_curve.png", "per_category.png"):
        width, height = png_size(plots / name)
        assert width >= 500 and height >= 200
    assert "plots/k_curve.png" in result.output
    two = write_run(tmp_path / "two", method_records("a", A), method_records("b", B))
    assert CliRunner().invoke(app, ["report", str(two)]).exit_code == 0
    assert sorted(p.name for p in (two / "plots").glob("*.png")) == [
        "k_curve.png",
        "per_category.png",
    ]  # no critical-difference diagram for two methods
