from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
from test_results import make_record

from fsad_bench.records import MethodRef
from fsad_bench.report import aggregate, wide_table, write_report
from fsad_bench.results import RecordWriter


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
    from fsad_bench.report import provenance_lines

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
