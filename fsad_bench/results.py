"""Run directories on disk: append-only JSONL records, per-image score sidecars, environment.

A record line is written with one ``write`` on an O_APPEND descriptor and fsynced, and its
sidecar is in place (atomic rename) before the line is written: a record on disk always has
its scores, and a kill can at worst leave one torn last line, which readers drop.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from fsad_bench.errors import FsadError
from fsad_bench.records import EpisodeRecord

RECORDS = "records.jsonl"
RUN_CONFIG = "run.json"  # the run's identity (what a resume must match), protocol and env
SCORES_DIR = "scores"
_PACKAGES = (
    "fsad-bench", "torch", "torchvision", "timm", "kornia", "faiss-cpu", "faiss-gpu",
    "numpy", "scipy", "scikit-learn", "pillow",
)  # fmt: skip


class RecordWriter:
    """Appends whole lines only; one writer (the runner's parent process) per run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RECORDS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)

    def append(self, record: EpisodeRecord) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
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


def read_records(path: Path) -> list[EpisodeRecord]:
    """All whole records of a run (a torn last line is ignored, bad middle lines are errors)."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS
    if not path.exists():
        raise FsadError(f"{path}: no records here; pass the --out directory of a run")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if not raw.endswith(b"\n"):
        lines = lines[:-1]  # torn by a kill mid-write: the episode simply reruns
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(EpisodeRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise FsadError(
                f"{path}:{number}: malformed record ({exc}); remove that line to rerun it"
            ) from exc
    return records


def latest_by_key(records: Sequence[EpisodeRecord]) -> dict[str, EpisodeRecord]:
    """Later lines win, so a retried failure replaces the failure in reports."""
    return {record.result_key: record for record in records}


def scores_file_name(result_key: str) -> str:
    return f"{SCORES_DIR}/{hashlib.sha256(result_key.encode()).hexdigest()[:20]}.json"


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Whole or absent: written beside the target, synced, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any) -> None:
    write_bytes_atomic(path, json.dumps(payload, sort_keys=True, allow_nan=False).encode("utf-8"))


def read_scores(run_dir: Path, record: EpisodeRecord) -> dict[str, Any]:
    if not record.scores_file:
        raise FsadError(f"record {record.result_key} has no per-image scores")
    return json.loads((Path(run_dir) / record.scores_file).read_text(encoding="utf-8"))


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "git_sha": git_sha(),
    }
