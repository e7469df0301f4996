from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fsad_bench.errors import FsadError
from fsad_bench.records import SCHEMA_VERSION, EpisodeRecord, MethodRef
from fsad_bench.store import RecordWriter, drop_torn_tail, latest_by_key, read_records


def make_record(
    category: str = "a", k: int = 1, seed: int = 0, **metrics: float | None
) -> EpisodeRecord:
    values = {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": 0.7, **metrics}
    return EpisodeRecord(
        run_id="r",
        method=MethodRef("patchcore", "1.0", None, {"coreset_ratio": 0.1}, True),
        protocol="p", protocol_version="1", protocol_hash="h", dataset="d",
        category=category, k=k, seed=seed, support_manifest_hash="s", status="ok",
        metrics=values, metric_notes={}, metrics_version="m", timing={"fit_s": 1.0},
        env={"python": "3"},
    )  # fmt: skip


def test_record_json_roundtrip() -> None:
    record = make_record(pixel_auroc=None)
    data = json.loads(record.to_json())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["metrics"]["pixel_auroc"] is None
    assert EpisodeRecord.from_dict(data) == record


def test_nan_cannot_be_written() -> None:
    with pytest.raises(ValueError):
        make_record(image_auroc=float("nan")).to_json()


def test_unknown_schema_or_field_is_refused() -> None:
    data = json.loads(make_record().to_json())
    with pytest.raises(ValueError, match="schema_version"):
        EpisodeRecord.from_dict({**data, "schema_version": 99})
    with pytest.raises(ValueError, match="unknown fields"):
        EpisodeRecord.from_dict({**data, "surprise": 1})


def test_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path)
    writer.append(make_record("a"))
    writer.append(make_record("b"))
    whole = writer.path.read_bytes()
    writer.path.write_bytes(whole + make_record("c").to_json().encode()[:40])  # a kill mid-line
    assert [r.category for r in read_records(tmp_path)] == ["a", "b"]
    assert drop_torn_tail(writer.path)
    assert writer.path.read_bytes() == whole
    RecordWriter(tmp_path).append(make_record("c"))
    assert [r.category for r in read_records(tmp_path)] == ["a", "b", "c"]


def test_malformed_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(make_record().to_json() + "\n{oops\n" + make_record().to_json() + "\n")
    with pytest.raises(FsadError, match=r"records.jsonl:2"):
        read_records(tmp_path)


def test_latest_record_wins() -> None:
    failed = replace(make_record(), status="failed", error="boom")
    assert latest_by_key([failed, make_record()])[make_record().result_key].status == "ok"
