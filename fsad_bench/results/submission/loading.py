"""Loading a submission folder, re-validated: what the leaderboard and ``check`` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsad_bench.identity import KIND_REPRODUCED
from fsad_bench.protocols.manifests import manifest_key
from fsad_bench.results.report import method_label
from fsad_bench.results.submission.reading import (
    MANIFEST,
    MAX_FILES,
    SUBMISSION_LINE_FIX,
    SUBMISSION_SCHEMA,
    Grid,
    Submission,
    SubmissionError,
    confined,
    content_hashes,
    parse_records,
    read_bytes_limited,
    read_json,
)
from fsad_bench.results.submission.validation import (
    map_file_problems,
    raise_problems,
    validate_records,
)
from fsad_bench.store import RECORDS


def _listing(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise SubmissionError(f"{path}: symbolic links are not allowed in a submission")
        if path.is_file():
            found.append(path.relative_to(folder).as_posix())
        if len(found) > MAX_FILES:
            raise SubmissionError(f"{folder}: more than {MAX_FILES} files")
    return sorted(found)


def _grid_from_manifest(folder: Path, manifest: Any) -> Grid:
    try:
        if manifest.get("schema") != SUBMISSION_SCHEMA:
            raise ValueError(f"schema {manifest.get('schema')!r} is not {SUBMISSION_SCHEMA!r}")
        if manifest.get("kind") != KIND_REPRODUCED:
            raise ValueError(f"kind {manifest.get('kind')!r} is not {KIND_REPRODUCED!r}")
        if not isinstance(manifest["method"]["label"], str):
            raise ValueError("method.label must be a string")
        proto = manifest["protocol"]
        return Grid(
            protocol=str(proto["name"]),
            version=str(proto["version"]),
            protocol_hash=str(proto["definition_hash"]),
            categories=tuple(str(c) for c in proto["categories"]),
            shots=tuple(int(k) for k in proto["shots"]),
            seeds=tuple(int(s) for s in proto["seeds"]),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SubmissionError(f"{folder / MANIFEST}: invalid manifest ({exc})") from exc


def load_submission(folder: Path) -> Submission:
    """Read and re-validate a submission folder; raises SubmissionError saying what is wrong."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise SubmissionError(
            f"{folder}: no {MANIFEST}; pass a folder made by `fsad-bench submit` "
            "(submissions/<method>/<id>)"
        )
    manifest = read_json(folder, MANIFEST)
    grid = _grid_from_manifest(folder, manifest)
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise SubmissionError(f"{folder / MANIFEST}: no 'files' listing")
    present = [p for p in _listing(folder) if p != MANIFEST]
    problems = [f"{p}: not listed in manifest.json" for p in present if p not in listed]
    problems += [f"{p}: listed in manifest.json but missing" for p in listed if p not in present]
    raise_problems(folder, problems)
    files = {p: read_bytes_limited(confined(folder, p)) for p in present}
    content = content_hashes(files)
    edited = [p for p, digest in content["files"].items() if listed[p] != digest]
    problems = [f"{p}: content differs from its hash in manifest.json (edited?)" for p in edited]
    if not edited and content["content_hash"] != manifest.get("content_hash"):
        problems.append("content_hash in manifest.json does not match the files")
    raise_problems(folder, problems)
    records = parse_records(files.get(RECORDS, b""), folder / RECORDS, SUBMISSION_LINE_FIX)
    _, problems = validate_records(folder, records, grid)
    problems += map_file_problems(files, records)
    labels = {method_label(r) for r in records}
    if labels != {manifest["method"]["label"]}:
        problems.append(f"records are of {sorted(labels)}, manifest says {manifest['method']}")
    recorded = {manifest_key(r.category, r.k, r.seed): r.support_manifest_hash for r in records}
    if recorded != manifest.get("support_manifest_hashes"):
        problems.append("support_manifest_hashes in manifest.json differ from the records")
    raise_problems(folder, problems)
    return Submission(folder, manifest, tuple(records))


def find_submissions(root: Path) -> list[Path]:
    """Folders under root/<method>/<id>/ holding a manifest.json (reference/ is separate)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.parent
        for p in root.glob(f"*/*/{MANIFEST}")
        if p.parent.parent.name != "reference" and not p.parent.name.startswith(".")
    )
