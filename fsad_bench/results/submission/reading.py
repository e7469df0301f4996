"""Reading files that come from other people: JSON only, size-limited, confined to a folder.

The types every part of the submission code shares (``Grid``, ``Submission``) live here."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsad_bench import store
from fsad_bench.errors import FsadError
from fsad_bench.protocols.manifests import manifest_key
from fsad_bench.records import EpisodeRecord

SUBMISSION_SCHEMA = "fsad-bench-submission/1"
MANIFEST = "manifest.json"
MAX_FILE_BYTES = 32 * 2**20
MAX_FILES = 20_000
AUROC_TOLERANCE = 1e-9
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
SIDECAR = re.compile(r"^scores/[0-9a-f]{20}\.json$")
PANEL_FILE = re.compile(r"^\d{2}-(?:defect|normal)\.png$")
MAP_FILE = re.compile(r"^maps/([0-9a-f]{20})/(\d{2}-(?:defect|normal)\.png|index\.json)$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHOWN_PROBLEMS = 6


class SubmissionError(FsadError, ValueError):
    """A run or submission that cannot be accepted; the message lists what is wrong."""


@dataclass(frozen=True)
class Grid:
    """The episodes a submission claims: protocol identity plus categories x shots x seeds."""

    protocol: str
    version: str
    protocol_hash: str
    categories: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]

    def keys(self) -> list[str]:
        return [
            manifest_key(c, k, s) for c in self.categories for k in self.shots for s in self.seeds
        ]


@dataclass(frozen=True)
class Submission:
    """A validated submission: its folder (None before it is written), manifest and records."""

    path: Path | None
    manifest: dict[str, Any]
    records: tuple[EpisodeRecord, ...]

    @property
    def label(self) -> str:
        return str(self.manifest["method"]["label"])

    @property
    def submission_id(self) -> str:
        return str(self.manifest["submission_id"])


def confined(root: Path, relative: str | Path) -> Path:
    """``root/relative`` resolved, refusing absolute paths, ``..`` and symlinks out of root."""
    root = Path(root).resolve()
    if Path(relative).is_absolute():
        raise SubmissionError(f"{relative}: absolute path in a submission; paths must be relative")
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise SubmissionError(f"{relative}: path escapes the folder {root}")
    return path


def read_bytes_limited(path: Path, limit: int | None = None) -> bytes:
    limit = MAX_FILE_BYTES if limit is None else limit
    if not path.is_file():
        raise SubmissionError(f"{path}: file is missing")
    size = path.stat().st_size
    if size > limit:
        raise SubmissionError(f"{path}: {size} bytes is over the {limit}-byte limit per file")
    return path.read_bytes()


def parse_json(data: bytes, where: Path | str) -> Any:
    """Plain JSON only (no NaN/Infinity), never pickle or eval."""
    try:
        return store.parse_json(data, where)
    except FsadError as exc:
        raise SubmissionError(str(exc)) from exc


def read_json(root: Path, relative: str | Path) -> Any:
    path = confined(root, relative)
    return parse_json(read_bytes_limited(path), path)


RUN_LINE_FIX = (
    "remove that line, run the same `fsad-bench run` command on this directory again to "
    "replay its episode, then submit"
)
SUBMISSION_LINE_FIX = "the submission is damaged; submit it again from its run directory"


def parse_records(data: bytes, where: Path, fix: str = RUN_LINE_FIX) -> list[EpisodeRecord]:
    """Every line a valid record; a torn last line means an interrupted run. A bad line is
    named as ``store.read_records`` names it (``file:line: malformed record``), then ``fix``."""
    try:
        records = store.parse_jsonl(data, where, EpisodeRecord.from_dict, fix, torn_tail="refuse")
    except FsadError as exc:
        raise SubmissionError(
            str(exc).replace("same command", "same command, then submit")
        ) from exc
    if not records:
        raise SubmissionError(f"{where}: no records")
    return records


def content_hashes(files: dict[str, bytes]) -> dict[str, Any]:
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}
    listing = "".join(f"{path}\t{digest}\n" for path, digest in digests.items())
    return {"files": digests, "content_hash": hashlib.sha256(listing.encode()).hexdigest()}
