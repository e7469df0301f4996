from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
from test_results import make_record

from fsad_bench.records import MethodRef
from fsad_bench.results.report import aggregate, mean_gaps, wide_table, write_report
from fsad_bench.store import RecordWriter


def test_aggregate_matches_hand_computation() -> None:
    values = {("a", 0): 0.9, ("a", 1): 0.7, ("b", 0): 0.5, ("b", 1): 0.6}
    records = [make_record(c, 1, s, image_auroc=v) for (c, s), v in values.items()]
    long = aggregate(records)
    row = long[(long.category == "a") & (long.metric == "image_auroc")].iloc[0]
    assert math.isclose(row["mean"], 0.8) and math.isclose(row["std"], statistics.stdev([0.9, 0.7]))
    assert row["n_seeds"] == 2
    mean = long[(long.category == "mean") & (long.metric == "image_auroc")].iloc[0]
    per_seed = [(0.9 + 0.5) / 2, (0.7 + 0.6) / 2]
    assert math.isclose(mean["mean"], statistics.mean(per_seed))
    assert math.isclose(mean["std"], statistics.stdev(per_seed))


def test_not_applicable_metrics_stay_empty_not_zero(tmp_path: Path) -> None:
    no_maps = MethodRef("anograd", "1", None, {}, False)
    records = [
        replace(make_record("a", 1, s, pixel_auroc=None, aupro=None), method=no_maps)
        for s in (0, 1)
    ]
    writer = RecordWriter(tmp_path)
    for record in records:
        writer.append(record)
    long, text = write_report(tmp_path)
    csv = pd.read_csv(tmp_path / "report.csv")
    assert list(csv.columns) == ["method", "category", "k", "metric", "mean", "std", "n_seeds"]
    pixel = csv[csv.metric == "pixel_auroc"]
    assert pixel["mean"].isna().all() and (pixel["n_seeds"] == 0).all()
    assert "n/a" in wide_table(long, "pixel_auroc").to_string()
    assert (tmp_path / "report.md").read_text().count("|") > 0


def test_single_seed_has_no_std() -> None:
    long = aggregate([make_record("a", 1, 0)])
    assert long[long.category == "a"]["std"].isna().all()


def test_header_names_each_methods_backbone_init_and_weights() -> None:
    from fsad_bench.results.report import provenance_lines

    def with_(method: str, params: dict, provenance: dict, seed: int = 0):
        record = make_record("a", 1, seed)
        return replace(
            record, method=MethodRef(method, "1", None, params, True), provenance=provenance
        )

    weights = "efficientnet_lite0: weights from file /w.pth (sha256 abc)"
    records = [
        with_("padim", {"weights": "random"}, {"backbone": "efficientnet_lite0"}),
        with_("regad", {"weights": "pretrained"}, {"backbone": "x", "weights": weights}),
        with_("riad", {}, {}),
        with_("patchcore", {"weights": "pretrained"}, {"backbone": "b", "backbone_init": "random"}),
        with_("patchcore", {"weights": "pretrained"}, {"backbone": "b"}, seed=1),
    ]
    lines = provenance_lines(records)
    assert "  padim: backbone=efficientnet_lite0, random" in lines
    assert f"  regad: backbone=x, pretrained; {weights}" in lines
    assert "  riad: no pretrained backbone (trained from scratch)" in lines
    assert "  patchcore: backbone=b, mixed: pretrained, random" in lines


def gap_records() -> list:
    """Categories a and b, seeds 0 and 1, K = 1 and 2; b is the hard one."""
    return [
        make_record(c, k, s, image_auroc=0.9 if c == "a" else 0.6)
        for c in "ab"
        for k in (1, 2)
        for s in (0, 1)
    ]


def mean_row(long: pd.DataFrame, k: int, metric: str = "image_auroc") -> pd.Series:
    return long.query("category == 'mean' and k == @k and metric == @metric").iloc[0]


def test_mean_row_is_empty_when_an_episode_failed_or_was_not_played() -> None:
    failed = replace(make_record("b", 2, 0), status="failed", error="boom")
    records = [*gap_records(), failed]  # the later line wins: b K=2 seed 0 failed
    long = aggregate(records)
    assert math.isclose(mean_row(long, 1)["mean"], 0.75)
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        row = mean_row(long, 2, metric)
        assert pd.isna(row["mean"]) and pd.isna(row["std"]) and row["n_seeds"] == 0
    b2 = long.query("category == 'b' and k == 2 and metric == 'image_auroc'").iloc[0]
    assert math.isclose(b2["mean"], 0.6) and b2["n_seeds"] == 1  # per-category rows as before
    assert mean_gaps(records) == ["mean n/a for patchcore K=2: b seed 0 failed"]
    not_played = [r for r in gap_records() if (r.category, r.k, r.seed) != ("a", 1, 1)]
    assert pd.isna(mean_row(aggregate(not_played), 1)["mean"])
    assert mean_gaps(not_played) == ["mean n/a for patchcore K=1: a seed 1 not played"]


def test_report_of_an_interrupted_run_has_no_mean_of_the_finished_category(
    tmp_path: Path,
) -> None:
    writer = RecordWriter(tmp_path)
    for record in gap_records():
        if record.category == "a":
            writer.append(record)
    (tmp_path / "run.json").write_text(json.dumps({"protocol": {"categories": ["a", "b"]}}))
    long, text = write_report(tmp_path)
    assert pd.isna(mean_row(long, 1)["mean"]) and pd.isna(mean_row(long, 2)["mean"])
    assert "mean n/a for patchcore K=1: b seeds 0, 1 not played" in text
    assert "mean n/a for patchcore K=2: b seeds 0, 1 not played" in text
    assert "mean n/a for patchcore K=2" in (tmp_path / "report.md").read_text()
    csv = pd.read_csv(tmp_path / "report.csv")
    assert list(csv.columns) == ["method", "category", "k", "metric", "mean", "std", "n_seeds"]
    assert csv.query("category == 'mean'")["mean"].isna().all()
    assert (csv.query("category == 'a' and metric == 'image_auroc'")["mean"] == 0.9).all()


def test_complete_run_without_maps_has_no_gap_notes(tmp_path: Path) -> None:
    no_maps = MethodRef("anograd", "1", None, {}, False)
    writer = RecordWriter(tmp_path)
    for record in gap_records():
        writer.append(replace(record, method=no_maps, metrics={"image_auroc": 0.8}))
    long, text = write_report(tmp_path)
    assert math.isclose(mean_row(long, 1)["mean"], 0.8)
    assert "pixel_auroc" not in set(long["metric"])  # records without it: no row, no gap
    assert "mean n/a" not in text


def defect_run(run_dir: Path) -> None:
    """Two seeds of one episode whose score files hold two defect kinds (no by_defect in the
    records: the breakdown comes from the per-image scores, as for older runs)."""
    writer = RecordWriter(run_dir)
    paths = ["c/test/good/0.png", "c/test/good/1.png", "c/test/dent/0.png",
             "c/test/dent/1.png", "c/test/stain/0.png", "c/test/stain/1.png"]  # fmt: skip
    per_seed = {0: [0.1, 0.5, 0.6, 0.2, 0.9, 0.8], 1: [0.1, 0.5, 0.6, 0.7, 0.3, 0.8]}
    for seed, scores in per_seed.items():
        record = replace(make_record("c", 1, seed), scores_file=f"scores/{seed}.json")
        payload = {"paths": paths, "labels": [0, 0, 1, 1, 1, 1], "scores": scores}
        (run_dir / "scores").mkdir(parents=True, exist_ok=True)
        (run_dir / record.scores_file).write_text(json.dumps(payload))
        writer.append(record)


def test_by_defect_report_matches_a_hand_computed_case(tmp_path: Path) -> None:
    from fsad_bench.results.by_defect import by_defect
    from fsad_bench.store import read_records

    defect_run(tmp_path)
    table = by_defect(tmp_path, read_records(tmp_path))
    auroc = table[table.metric == "image_auroc"].set_index("defect")
    # seed 0: dent {0.6, 0.2} vs good {0.1, 0.5}: 3 of 4 pairs ordered; stain {0.9, 0.8}: 4/4
    # seed 1: dent {0.6, 0.7}: 4/4; stain {0.3, 0.8}: 3/4
    assert math.isclose(auroc.loc["dent", "mean"], (0.75 + 1.0) / 2)
    assert math.isclose(auroc.loc["stain", "mean"], (1.0 + 0.75) / 2)
    assert math.isclose(auroc.loc["dent", "std"], statistics.stdev([0.75, 1.0]))
    assert (auroc["n_seeds"] == 2).all()
    pixel = table[table.metric == "pixel_auroc"]
    assert pixel["mean"].isna().all() and (pixel["n_seeds"] == 0).all()  # maps not kept
    assert list(table.columns) == ["method", "category", "defect", "k", "metric", "mean",
                                   "std", "n_seeds"]  # fmt: skip


def test_by_defect_from_the_cli_writes_the_csv_and_a_dataset_without_kinds_says_so(
    tmp_path: Path,
) -> None:
    from test_submission import make_run
    from typer.testing import CliRunner

    from fsad_bench.cli import app

    defect_run(tmp_path / "kinds")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "kinds"), "--by-defect"])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(tmp_path / "kinds" / "report_by_defect.csv")
    assert set(csv["defect"]) == {"dent", "stain"}
    one_kind = make_run(tmp_path / "one")  # every anomalous image is of kind "x"
    result = CliRunner().invoke(app, ["report", str(one_kind), "--by-defect"])
    assert result.exit_code == 2 and "has no defect kinds" in result.output


def test_report_never_modifies_a_submission(tmp_path: Path) -> None:
    from test_submission import make_run
    from typer.testing import CliRunner

    from fsad_bench.cli import app
    from fsad_bench.results.submission import load_submission, submit

    folder = submit(make_run(tmp_path / "run"), tmp_path / "subs", command="a test")
    before = sorted(p.name for p in folder.rglob("*"))
    result = CliRunner().invoke(app, ["report", str(folder)])
    assert result.exit_code == 0 and "never modifies" in result.output
    assert sorted(p.name for p in folder.rglob("*")) == before
    load_submission(folder)  # still valid
    written = CliRunner().invoke(app, ["report", str(folder), "--out", str(tmp_path / "rep")])
    assert written.exit_code == 0 and (tmp_path / "rep" / "report.csv").is_file()


def test_a_category_named_mean_keeps_every_row_unambiguous(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path)
    for category, value in (("mean", 0.6), ("other", 0.8)):
        for seed in (0, 1):
            writer.append(make_record(category, 1, seed, image_auroc=value))
    long, text = write_report(tmp_path)
    auroc = long[(long.metric == "image_auroc")].set_index("category")["mean"]
    assert not auroc.index.duplicated().any()
    assert math.isclose(auroc["mean (category)"], 0.6) and math.isclose(auroc["other"], 0.8)
    assert math.isclose(auroc["mean"], 0.7)  # the average over both categories
    csv = pd.read_csv(tmp_path / "report.csv")
    assert not csv.duplicated(["method", "category", "k", "metric"]).any()


def timed_run(run_dir: Path) -> Path:
    """A run (run.json included) whose records carry feature-cache counts: the K = 4
    episodes hit the cache and predicted much faster; pill K=4 seed 0 failed."""
    from test_submission import edit_lines, make_run

    make_run(run_dir)

    def timings(rows: list[dict]) -> list[dict]:
        for row in rows:
            cold = row["k"] == 1
            row["timing"]["feature_cache_hits"] = 0 if cold else 2
            brick = row["category"] == "brick"
            row["timing"]["predict_ms_per_image"] = (31.0 if brick else 33.0) if cold else 4.0
            row["env"].update(cpu="Test CPU (AVX2)", device="cpu", torch_threads=1)
            row["settings"] = {"batch_size": 16}
            row["provenance"]["plugin_package"] = "my-plugins==2.3"
        failed = dict(rows[-1], status="failed", error="RuntimeError: **boom** `x`")
        return [*rows, failed]

    edit_lines(run_dir / "records.jsonl", timings)
    return run_dir


def test_report_md_says_how_the_run_was_made(tmp_path: Path) -> None:
    import shlex

    from fsad_bench.store import read_records

    run = timed_run(tmp_path / "run")
    write_report(run)
    md = (run / "report.md").read_text()
    records = read_records(run)
    # the command rebuilt from run.json names the protocol, method, grid and folder
    command = next(line for line in md.splitlines() if line.startswith("fsad-bench run"))
    args = shlex.split(command)
    assert args[args.index("--protocol") + 1] == records[0].protocol
    assert args[args.index("--method") + 1] == "patchcore"
    assert args[args.index("--shots") + 1] == "1,4" and args[args.index("--out") + 1] == str(run)
    # settings: version, the plugin's package, batch size, machine
    assert "patchcore: version 1.0 (my-plugins==2.3), batch size 16" in md
    assert "machine: Test CPU (AVX2), cpu, 1 thread(s)" in md
    # timing: only the cold (K = 1) episodes (31 and 33 ms), rounded to their spread (1.4)
    row = next(line for line in md.splitlines() if line.startswith("| patchcore |   1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "32" and cells[6] == "2"  # mean, and the number of cold episodes
    row4 = next(line for line in md.splitlines() if line.startswith("| patchcore |   4 |"))
    assert [c.strip() for c in row4.strip("|").split("|")][4] == "n/a"  # all hit the cache
    # the failure reason, verbatim inside a code block (never rendered as Markdown)
    failures = md[md.index("### Failures") :]
    assert "RuntimeError: **boom** 'x'" in failures and failures.count("```") == 2


def test_round_to_noise_keeps_the_digits_the_spread_allows() -> None:
    from fsad_bench.results.report import round_to_noise

    assert round_to_noise(12.73, 1.4) == 13
    assert round_to_noise(12.73, 0.3) == 12.7
    assert round_to_noise(220.8, 35.0) == 220
    assert round_to_noise(0.01234, 0.0021) == 0.012
    assert round_to_noise(12.73, float("nan")) == 13  # one timing: two significant digits
    assert math.isnan(round_to_noise(float("nan"), 1.0))
