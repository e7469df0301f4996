"""`fsad-bench rescore`: image AP and F1-max of older records from their score files, exactly
as a fresh run would compute them; pixel-level ones absent, never zero; submissions never
modified in place."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve
from test_submission import edit_lines, forge, make_run
from typer.testing import CliRunner

from fsad_bench.cli import app
from fsad_bench.identity import IMAGE_METRICS, PIXEL_METRICS
from fsad_bench.results.submission import SubmissionError, load_submission, submit
from fsad_bench.store import read_records, read_scores


def sklearn_f1_max(labels: list[int], scores: list[float]) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)  # fmt: skip
    return float(f1.max())


def test_a_run_gets_image_metrics_from_its_scores_and_pixel_ones_are_absent(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path / "run")
    before = read_records(run)
    assert all("image_ap" not in r.metrics for r in before)
    result = CliRunner().invoke(app, ["rescore", str(run)])
    assert result.exit_code == 0 and f"{len(before)} record(s)" in result.output
    for old, new in zip(before, read_records(run), strict=True):
        payload = read_scores(run, new)
        assert math.isclose(
            new.metrics["image_ap"],
            average_precision_score(payload["labels"], payload["scores"]),
            abs_tol=1e-12,
        )
        assert math.isclose(
            new.metrics["image_f1_max"],
            sklearn_f1_max(payload["labels"], payload["scores"]),
            abs_tol=1e-12,
        )
        assert new.metrics["image_auroc"] == old.metrics["image_auroc"]
        assert new.metrics["pixel_auroc"] == old.metrics["pixel_auroc"]
        for name in ("pixel_ap", "pixel_f1_max"):
            assert new.metrics[name] is None and "absent" in new.metric_notes[name]
        assert "rescored" in new.metrics_version and "was m" in new.metrics_version
    again = CliRunner().invoke(app, ["rescore", str(run)])
    assert "0 record(s)" in again.output  # nothing left to fill in


def test_a_run_without_maps_keeps_its_reason_for_the_pixel_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", produces_maps=False)
    for record in read_records(run):
        assert record.metric_notes == {}
    CliRunner().invoke(app, ["rescore", str(run)])
    record = read_records(run)[0]
    assert set(IMAGE_METRICS) <= set(record.metrics)
    assert all(record.metrics[m] is None for m in PIXEL_METRICS)


def test_a_submission_is_copied_not_modified_and_the_copy_validates(tmp_path: Path) -> None:
    folder = submit(make_run(tmp_path / "run"), tmp_path / "subs", command="made by a test")
    manifest_before = (folder / "manifest.json").read_bytes()
    refused = CliRunner().invoke(app, ["rescore", str(folder)])
    assert refused.exit_code == 2 and "never modified" in refused.output
    result = CliRunner().invoke(app, ["rescore", str(folder), "--out", str(tmp_path / "subs")])
    assert result.exit_code == 0, result.output
    assert (folder / "manifest.json").read_bytes() == manifest_before
    copy = Path(result.output.split("wrote ")[1].strip())
    assert copy != folder
    rescored = load_submission(copy)  # re-validates image AP/F1-max against the scores
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["rescored"]["from"] == load_submission(folder).submission_id
    assert all("image_ap" in r.metrics for r in rescored.records)


def test_a_forged_image_ap_is_refused_on_load(tmp_path: Path) -> None:
    """The image-level metrics a submission holds are recomputed from its scores on load."""
    folder = submit(make_run(tmp_path / "run"), tmp_path / "subs", command="made by a test")
    result = CliRunner().invoke(app, ["rescore", str(folder), "--out", str(tmp_path / "out")])
    copy = Path(result.output.split("wrote ")[1].strip())

    def inflate(rows: list[dict]) -> list[dict]:
        rows[0]["metrics"]["image_ap"] = 0.999
        return rows

    edit_lines(copy / "records.jsonl", inflate)
    forge(copy)
    with pytest.raises(SubmissionError, match="stored image_ap 0.999 differs"):
        load_submission(copy)
