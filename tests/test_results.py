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


def test_a_short_write_is_continued_and_a_failed_one_leaves_no_fragment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: writes return short, then fail. The record is written whole or not at
    all, and the file ends at a line boundary, so the next record is not spoiled."""
    import errno
    import os

    from fsad_bench import store

    writer = RecordWriter(tmp_path)
    writer.append(make_record("a"))
    real_write = os.write
    monkeypatch.setattr(store.os, "write", lambda fd, data: real_write(fd, data[:7]))
    writer.append(make_record("b"))  # 7 bytes at a time, continued to the end
    budget = {"left": 2}

    def failing(fd: int, data: bytes) -> int:
        budget["left"] -= 1
        if budget["left"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:20])

    monkeypatch.setattr(store.os, "write", failing)
    with pytest.raises(OSError):
        writer.append(make_record("c"))
    monkeypatch.setattr(store.os, "write", real_write)
    assert writer.path.read_bytes().endswith(b"\n")
    writer.append(make_record("d"))
    assert [r.category for r in read_records(tmp_path)] == ["a", "b", "d"]


def test_a_torn_middle_line_is_recovered_and_healed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fragment left in the middle (by a writer without the cut-back) followed by a whole
    record: readers keep every intact record and say so; the next writer heals the file."""
    lines = [make_record(c).to_json() for c in ("a", "b", "c")]
    (tmp_path / "records.jsonl").write_text(lines[0] + "\n" + lines[1][:50] + lines[2] + "\n")
    assert [r.category for r in read_records(tmp_path)] == ["a", "c"]
    assert "torn fragment" in capsys.readouterr().err
    notes: list[str] = []
    RecordWriter(tmp_path, log=notes.append)
    assert notes and "dropped 1 torn fragment" in notes[0]
    healed = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["category"] for line in healed] == ["a", "c"]


class _Trainee:
    """The meta-cache hooks of a meta-trained plugin, counting its trainings."""

    class info:  # noqa: N801 - stands in for MethodInfo
        name = "trainee"

    def __init__(self) -> None:
        self.trainings, self.state = 0, None

    def meta_fit(self, tasks: object) -> None:
        self.trainings += 1
        self.state = {"w": __import__("torch").ones(3)}

    def meta_state_dict(self) -> dict:
        return self.state

    def load_meta_state_dict(self, state: dict) -> None:
        self.state = state


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"])
def test_an_unreadable_meta_cache_file_is_retrained_and_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    from fsad_bench.run.meta_cache import meta_fit_cached

    (tmp_path / "trainee-key.pt").write_bytes(content)
    method = _Trainee()
    assert meta_fit_cached(method, "key", lambda: None, tmp_path) is False
    assert method.trainings == 1 and "trainee-key.pt is unreadable" in capsys.readouterr().err
    again = _Trainee()
    assert meta_fit_cached(again, "key", lambda: None, tmp_path) is True  # now a valid file
    assert again.trainings == 0 and again.state["w"].sum() == 3
