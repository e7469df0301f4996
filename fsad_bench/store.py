"""Files of a run directory: append-only JSONL records, per-image score sidecars, atomic writes.

A record line is written with one ``write`` on an O_APPEND descriptor and fsynced, and its
sidecar is in place (atomic rename) before the line is written: a record on disk always has
its scores, and a kill can at worst leave one torn last line, which readers drop. This is the
one home of the atomic write and of the JSONL reader; every other module uses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fsad_bench.errors import FsadError
from fsad_bench.records import EpisodeRecord

RECORDS = "records.jsonl"
RUN_CONFIG = "run.json"  # the run's identity (what a resume must match), protocol and env
SCORES_DIR = "scores"
RERUN_FIX = "remove that line to rerun it"

Row = TypeVar("Row")


class RecordWriter:
    """Appends whole lines only; one writer (the runner's parent process) per run.

    A record is written whole or not at all: short writes (a full disk) are continued, and
    a write that fails is cut back to the last complete line, so the file always ends at a
    line boundary and the next record never lands behind a fragment.
    """

    def __init__(self, run_dir: Path, log: Callable[[str], None] | None = None) -> None:
        self.path = Path(run_dir) / RECORDS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)
        heal(self.path, log)

    def append(self, record: EpisodeRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, start)  # back to the last complete line
                raise
        finally:
            os.close(fd)


def drop_torn_tail(path: Path) -> bool:
    """Cut a last line that a kill left without its newline; True if something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    with open(path, "r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)
    return True


def heal(path: Path, log: Callable[[str], None] | None = None) -> int:
    """Rewrite a records file whose middle holds a torn line (an append that failed half-way
    before this writer cut back, then more appends): keep every intact record, drop the
    fragments, say so. Returns the number of fragments dropped."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    fragments: list[str] = []
    rows = parse_jsonl(data, path, EpisodeRecord.from_dict, on_fragment=fragments.append)
    if fragments:
        text = "".join(row.to_json() + "\n" for row in rows).encode("utf-8")
        write_bytes_atomic(path, text)
        (log or _stderr)(
            f"note: {path}: dropped {len(fragments)} torn fragment(s) ({fragments[0]}); the "
            "intact records were kept and the torn episodes will be played again"
        )
    return len(fragments)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _split_torn(line: bytes) -> tuple[bytes, list[bytes]]:
    """A line holding a torn record followed by whole ones: (the fragment, the records)."""
    for start in range(1, len(line)):
        if line[start : start + 2] == b'{"':
            try:
                json.loads(line[start:])
            except ValueError:
                continue
            return line[:start], [line[start:]]
    return line, []


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: bytes | str, where: Path | str) -> Any:
    """Plain JSON only (no NaN/Infinity), never pickle or eval; errors name ``where``."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FsadError(f"{where}: not valid JSON ({exc})") from exc


def parse_jsonl(
    data: bytes,
    where: Path | str,
    parse: Callable[[Any], Row],
    fix: str = RERUN_FIX,
    torn_tail: str = "drop",
    on_fragment: Callable[[str], None] | None = None,
) -> list[Row]:
    """Every whole line of a JSONL file through ``parse``; a bad line names itself and
    ``fix``. A last line without its newline (a kill mid-write) is dropped, or refused with
    ``torn_tail="refuse"`` where a complete file is expected (a submission). With
    ``on_fragment``, a line that is a torn record followed by whole ones gives up the whole
    ones and reports the fragment instead of failing."""
    lines = data.split(b"\n")
    if data and not data.endswith(b"\n"):
        if torn_tail == "refuse":
            raise FsadError(
                f"{where}: the last line is torn (the run was interrupted); resume the run with "
                "the same command"
            )
        lines = lines[:-1]
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse(parse_json(line, where)))
        except (FsadError, ValueError, TypeError, KeyError, RecursionError) as exc:
            fragment, intact = _split_torn(line) if on_fragment else (line, [])
            if not intact:
                reason = str(exc).removeprefix(f"{where}: ")
                raise FsadError(f"{where}:{number}: malformed record ({reason}); {fix}") from exc
            on_fragment(f"line {number}: {fragment[:60]!r}")  # type: ignore[misc]
            rows += [parse(parse_json(part, where)) for part in intact]
    return rows


def read_records(path: Path) -> list[EpisodeRecord]:
    """All whole records of a run (a torn last line is ignored, bad middle lines are errors)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS
    if not path.exists():
        raise FsadError(f"{path}: no records here; pass the --out directory of a run")
    fragments: list[str] = []
    rows = parse_jsonl(
        path.read_bytes(), path, EpisodeRecord.from_dict, on_fragment=fragments.append
    )
    if fragments:
        _stderr(
            f"note: {path}: skipped {len(fragments)} torn fragment(s) ({fragments[0]}); "
            "the next run in this directory removes them and plays those episodes again"
        )
    return rows


def latest_by_key(records: Sequence[EpisodeRecord]) -> dict[str, EpisodeRecord]:
    """Later lines win, so a retried failure replaces the failure in reports."""
    return {record.result_key: record for record in records}


def scores_file_name(result_key: str) -> str:
    return f"{SCORES_DIR}/{hashlib.sha256(result_key.encode()).hexdigest()[:20]}.json"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Whole or absent: written beside the target, synced, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any, indent: int | None = None) -> None:
    text = json.dumps(payload, sort_keys=True, allow_nan=False, indent=indent)
    write_bytes_atomic(path, (text + ("\n" if indent is not None else "")).encode("utf-8"))


def read_scores(run_dir: Path, record: EpisodeRecord) -> dict[str, Any]:
    if not record.scores_file:
        raise FsadError(f"record {record.result_key} has no per-image scores")
    return json.loads((Path(run_dir) / record.scores_file).read_text(encoding="utf-8"))
