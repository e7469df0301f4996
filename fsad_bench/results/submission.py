"""Submissions: a validated, self-contained copy of one method's run; data, never code.

``submissions/<method>/<id>/`` holds ``records.jsonl``, the per-image score sidecars under
``scores/`` and ``manifest.json`` (what produced the numbers, and a content hash over every
other file). Submissions come from other people and the leaderboard shows them, so every
file is read with ``json`` only, size-limited and confined to its folder, and a submission
is re-validated (protocol hash, frozen supports, image AUROC from the scores) on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fsad_bench.errors import FsadError
from fsad_bench.protocols.manifests import load_manifest, manifest_key, support_hash
from fsad_bench.protocols.protocol import Protocol, list_protocol_files, load_protocol
from fsad_bench.records import METRIC_NAMES, STATUS_OK, EpisodeRecord
from fsad_bench.results.report import backbone_init, method_label
from fsad_bench.store import RECORDS, RUN_CONFIG, latest_by_key

SUBMISSION_SCHEMA = "fsad-bench-submission/1"
MANIFEST = "manifest.json"
KIND_REPRODUCED = "reproduced"
MAX_FILE_BYTES = 32 * 2**20
MAX_FILES = 20_000
AUROC_TOLERANCE = 1e-9
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_SIDECAR = re.compile(r"^scores/[0-9a-f]{20}\.json$")
_MAP_FILE = re.compile(r"^maps/([0-9a-f]{20})/(\d{2}-(?:defect|normal)\.png|index\.json)$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SHOWN_PROBLEMS = 6


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


# ---- safe reading ---------------------------------------------------------------------------


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


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(data: bytes, where: Path | str) -> Any:
    """Plain JSON only (no NaN/Infinity), never pickle or eval."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SubmissionError(f"{where}: not valid JSON ({exc})") from exc


def read_json(root: Path, relative: str | Path) -> Any:
    path = confined(root, relative)
    return parse_json(read_bytes_limited(path), path)


RUN_LINE_FIX = (
    "remove that line, run the same `fsad-bench run` command on this directory again to "
    "replay its episode, then submit"
)
SUBMISSION_LINE_FIX = "the submission is damaged; submit it again from its run directory"


def parse_records(data: bytes, where: Path, fix: str = RUN_LINE_FIX) -> list[EpisodeRecord]:
    """Every line a valid schema-v1 record; a torn last line means an interrupted run.

    A bad line is named as ``fsad_bench.results.read_records`` names it (``file:line:
    malformed record``), followed by ``fix``, what to do about it.
    """
    if data and not data.endswith(b"\n"):
        raise SubmissionError(
            f"{where}: the last line is torn (the run was interrupted); resume the run with "
            "the same command, then submit"
        )
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
            records.append(EpisodeRecord.from_dict(row))
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, RecursionError) as exc:
            raise SubmissionError(f"{where}:{number}: malformed record ({exc}); {fix}") from exc
    if not records:
        raise SubmissionError(f"{where}: no records")
    return records


# ---- validation -----------------------------------------------------------------------------


def builtin_protocol(name: str, version: str, recorded_hash: str) -> Protocol:
    """The built-in protocol a result claims, with the same definition hash as today's file."""
    candidates = []
    for path in list_protocol_files():
        protocol = load_protocol(str(path))
        if protocol.name == name and protocol.version == version:
            candidates.append(protocol)
    if not candidates:
        known = sorted({load_protocol(str(p)).ref for p in list_protocol_files()})
        raise SubmissionError(
            f"protocol {name}@{version} is not a built-in protocol; submissions must use one "
            f"of: {', '.join(known)}"
        )
    for protocol in candidates:
        if protocol.definition_hash() == recorded_hash:
            return protocol
    current = candidates[0].definition_hash()
    raise SubmissionError(
        f"protocol hash {recorded_hash} does not match the built-in {name}@{version} "
        f"(definition hash {current}); the results were made on a different protocol "
        "definition: rerun on the current one"
    )


def _same(a: float | None, b: float | None) -> bool:
    """Equal within AUROC_TOLERANCE, or both undefined (None/NaN)."""
    a_undefined = a is None or math.isnan(a)
    b_undefined = b is None or math.isnan(b)
    if a_undefined or b_undefined:
        return a_undefined and b_undefined
    return abs(a - b) <= AUROC_TOLERANCE


def check_scores(record: EpisodeRecord, payload: Any) -> str | None:
    """Recompute image AUROC from the per-image scores; a problem message or None."""
    from fsad_bench.metrics import image_auroc

    where = f"{record.scores_file} ({record.episode_key})"
    if not isinstance(payload, dict) or not {"labels", "scores"} <= set(payload):
        return f"{where}: score file lacks 'labels' and 'scores'"
    labels, scores = payload["labels"], payload["scores"]
    if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
        return f"{where}: 'labels' and 'scores' must be lists of the same length"
    try:
        recomputed = image_auroc(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    except (ValueError, TypeError) as exc:
        return f"{where}: unusable scores ({exc})"
    stored = record.metrics.get("image_auroc")
    if not _same(recomputed, stored):
        return (
            f"{record.episode_key}: stored image_auroc {stored} differs from {recomputed!r} "
            f"recomputed from {record.scores_file}"
        )
    return None


def _typing_problem(record: EpisodeRecord) -> str | None:
    """JSON gives any type anywhere; the views rely on these being what the schema says."""
    integers = all(type(v) is int for v in (record.k, record.seed))
    if not integers or not isinstance(record.category, str):
        return f"{record.result_key}: k and seed must be integers and category a string"
    unknown = set(record.metrics) - set(METRIC_NAMES)
    values = record.metrics.values()
    if unknown or not all(v is None or type(v) in (int, float) for v in values):
        return f"{record.result_key}: metrics must be {list(METRIC_NAMES)} with numbers or null"
    return None


def _frozen_supports(protocol: Protocol) -> dict[str, str] | None:
    path = protocol.manifest_path()
    if path is None:
        return None
    return {key: support_hash(entries) for key, entries in load_manifest(path).items()}


def validate_records(
    root: Path, records: Sequence[EpisodeRecord], grid: Grid
) -> tuple[Protocol, list[str]]:
    """Check one method's records against the built-in protocol; (protocol, problems)."""
    protocol = builtin_protocol(grid.protocol, grid.version, grid.protocol_hash)
    problems: list[str] = []
    if protocol.categories and tuple(grid.categories) != tuple(protocol.categories):
        problems.append(
            f"categories {list(grid.categories)} differ from {protocol.ref}'s "
            f"{list(protocol.categories)}"
        )
    methods = {json.dumps(asdict(r.method), sort_keys=True) for r in records}
    if len(methods) > 1:
        problems.append(f"records mix {len(methods)} method versions/parameter sets")
    frozen = _frozen_supports(protocol)
    by_episode: dict[str, EpisodeRecord] = {}
    for record in latest_by_key(records).values():
        problem = _typing_problem(record)
        if problem:
            problems.append(problem)
            continue
        key = manifest_key(record.category, record.k, record.seed)
        by_episode[key] = record
        identity = (record.protocol, record.protocol_version, record.protocol_hash)
        if identity != (grid.protocol, grid.version, grid.protocol_hash):
            problems.append(
                f"{record.episode_key}: protocol {identity[0]}@{identity[1]} hash {identity[2]} "
                f"is not {grid.protocol}@{grid.version} hash {grid.protocol_hash}"
            )
        if record.dataset != protocol.dataset:
            problems.append(f"{key}: dataset {record.dataset!r} is not {protocol.dataset!r}")
        if record.status != STATUS_OK:
            problems.append(f"episode {key} failed ({record.error}); rerun with --retry-failed")
            continue
        if frozen is not None and frozen.get(key) != record.support_manifest_hash:
            why = "is not in" if key not in frozen else "differs from"
            problems.append(
                f"{key}: support manifest hash {record.support_manifest_hash} {why} the "
                f"frozen manifest of {protocol.ref}"
            )
        if not record.scores_file or not _SIDECAR.match(record.scores_file):
            problems.append(f"{key}: scores_file {record.scores_file!r} is not scores/<hash>.json")
            continue
        try:
            problem = check_scores(record, read_json(root, record.scores_file))
        except SubmissionError as exc:
            problem = str(exc)
        if problem:
            problems.append(problem)
    expected = grid.keys()
    missing = [key for key in expected if key not in by_episode]
    if missing:
        problems.append(
            f"{len(missing)} of {len(expected)} episodes missing: {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
        )
    extra = sorted(set(by_episode) - set(expected))
    if extra:
        problems.append(
            f"records outside the grid of shots {list(grid.shots)} x seeds {list(grid.seeds)}: "
            f"{', '.join(extra[:8])}; run `fsad-bench run` on this directory again with all "
            "the shots and seeds (done episodes are skipped) so that run.json lists them"
        )
    return protocol, problems


def map_file_problems(files: dict[str, bytes], records: Sequence[EpisodeRecord]) -> list[str]:
    """Saved anomaly maps (optional) must be PNG panels or index.json of this run's episodes;
    anything else under maps/, or any other stray file, is refused rather than shown."""
    from fsad_bench.run.gallery import maps_folder

    folders = {maps_folder(r.result_key).split("/")[1] for r in records}
    problems = []
    for path, data in files.items():
        if path == RECORDS or _SIDECAR.match(path):
            continue
        match = _MAP_FILE.match(path)
        if not match:
            problems.append(f"{path}: not a file a submission may hold")
        elif match.group(1) not in folders:
            problems.append(f"{path}: maps of an episode that is not in the records")
        elif path.endswith(".png") and not data.startswith(_PNG_MAGIC):
            problems.append(f"{path}: not a PNG image")
        elif path.endswith(".json"):
            try:
                parse_json(data, path)
            except SubmissionError as exc:
                problems.append(str(exc))
    return problems


def _saved_maps(run_dir: Path, records: Sequence[EpisodeRecord]) -> dict[str, bytes]:
    from fsad_bench.run.gallery import maps_folder

    files = {}
    for record in records:
        folder = confined(run_dir, maps_folder(record.result_key))
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                relative = path.relative_to(run_dir.resolve()).as_posix()
                files[relative] = read_bytes_limited(confined(run_dir, relative))
    return files


def _raise_problems(where: Path, problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    hidden = len(problems) - _SHOWN_PROBLEMS
    more = f" (and {hidden} more)" if hidden > 0 else ""
    raise SubmissionError(f"{where}: refused, {len(problems)} problem(s): {shown}{more}")


# ---- from a run directory -------------------------------------------------------------------


def _grid_from_run(run_dir: Path, config: Any) -> Grid:
    try:
        proto = config["protocol"]
        return Grid(
            protocol=str(proto["name"]),
            version=str(proto["version"]),
            protocol_hash=str(config["identity"]["protocol_hash"]),
            categories=tuple(str(c) for c in proto["categories"]),
            shots=tuple(int(k) for k in proto["shots"]),
            seeds=tuple(int(s) for s in proto["seeds"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SubmissionError(
            f"{run_dir / RUN_CONFIG}: lacks the protocol of the run ({exc})"
        ) from exc


def _select_method(run_dir: Path, records: Sequence[EpisodeRecord], method: str | None) -> str:
    labels = sorted({method_label(r) for r in records})
    if method is None:
        if len(labels) > 1:
            raise SubmissionError(
                f"{run_dir} holds {len(labels)} methods ({', '.join(labels)}); "
                "pick one with --method"
            )
        method = labels[0]
    if method not in labels:
        raise SubmissionError(f"{run_dir}: no records of {method!r}; it has {', '.join(labels)}")
    if not _SAFE_NAME.match(method):
        raise SubmissionError(f"method label {method!r} is not a safe folder name")
    return method


def record_sources(records: list[EpisodeRecord]) -> dict[str, list[str]]:
    """Code versions and thread counts the records were made with: a resumed run can mix
    them, and a reader should see that rather than one ``environment`` for all."""

    def values(key: str) -> list[str]:
        return sorted({str(r.env.get(key, "unrecorded")) for r in records})

    return {"git_sha": values("git_sha"), "torch_threads": values("torch_threads")}


def command_from_run(
    run_dir: Path, config: Any, grid: Grid, label: str, records: Sequence[EpisodeRecord]
) -> str:
    """The `fsad-bench run` command that this run's own run.json says reproduces it.

    Stored beside a submitter's ``--command`` (which is their word, not checked), with every
    explicit parameter, the image size when it differs from the protocol's, the data root of
    a user dataset, and the thread count the records were made with.
    """
    identity = config.get("identity", {})
    protocol = config.get("protocol", {})
    parts = []
    threads = record_sources(list(records))["torch_threads"]
    if len(threads) == 1 and threads[0] != "unrecorded":
        parts.append(f"OMP_NUM_THREADS={threads[0]}")
    parts += ["fsad-bench", "run", "--protocol", grid.protocol, "--method", label]
    if protocol.get("layout") not in _SELF_PROVIDED_LAYOUTS and protocol.get("data_root"):
        parts += ["--data-root", str(protocol["data_root"])]
    for key, value in sorted(identity.get("method_params", {}).get(label, {}).items()):
        parts += ["--param", f"{label}.{key}={_param_text(value)}"]
    size = identity.get("image_size")
    if size is not None and size != _declared_image_size(grid.protocol):
        parts += ["--image-size", str(size)]
    parts += ["--shots", ",".join(str(k) for k in grid.shots)]
    parts += ["--seeds", ",".join(str(s) for s in grid.seeds)]
    parts += ["--out", str(run_dir)]
    return " ".join(shlex.quote(p) for p in parts)


def _param_text(value: Any) -> str:
    """How --param spells a value so that its YAML reading gives the value back."""
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value, separators=(",", ":"))


# layouts whose data the package provides (generated or installed): no --data-root to give
_SELF_PROVIDED_LAYOUTS = ("synthetic", "elpv")


def _declared_image_size(protocol_name: str) -> int | None:
    try:
        return load_protocol(protocol_name).image_size
    except FsadError:  # a protocol file outside the repo: its run.json is the record
        return None


def build_submission(
    run_dir: Path, method: str | None = None, command: str | None = None
) -> tuple[Submission, dict[str, bytes]]:
    """Validate a run directory; the submission and its files (relative path -> bytes)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        raise SubmissionError(f"{run_dir}: no {RUN_CONFIG}; pass the --out folder of a run")
    config = read_json(run_dir, RUN_CONFIG)
    grid = _grid_from_run(run_dir, config)
    all_records = parse_records(read_bytes_limited(confined(run_dir, RECORDS)), run_dir / RECORDS)
    label = _select_method(run_dir, all_records, method)
    latest = latest_by_key([r for r in all_records if method_label(r) == label])
    protocol, problems = validate_records(run_dir, list(latest.values()), grid)
    _raise_problems(run_dir, problems)
    records = sorted(latest.values(), key=lambda r: (r.category, r.k, r.seed))
    files = {RECORDS: "".join(r.to_json() + "\n" for r in records).encode("utf-8")}
    for record in records:
        assert record.scores_file is not None  # checked by validate_records
        files[record.scores_file] = read_bytes_limited(confined(run_dir, record.scores_file))
    files.update(_saved_maps(run_dir, records))
    _raise_problems(run_dir, map_file_problems(files, records))
    first = records[0]
    from_run = command_from_run(run_dir, config, grid, label, records)
    manifest = {
        "schema": SUBMISSION_SCHEMA,
        "kind": KIND_REPRODUCED,
        "method": {
            "label": label,
            "name": first.method.name,
            "version": first.method.version,
            "preset": first.method.preset,
            "params": first.method.params,
            "produces_maps": first.method.produces_maps,
        },
        "backbone": first.provenance.get("backbone", first.method.params.get("backbone")),
        "backbone_init": backbone_init(records),
        "protocol": {
            "name": grid.protocol,
            "version": grid.version,
            "definition_hash": grid.protocol_hash,
            "dataset": protocol.dataset,
            "categories": list(grid.categories),
            "shots": list(grid.shots),
            "seeds": list(grid.seeds),
            "image_size": protocol.image_size,
            "supports": "frozen manifest" if protocol.manifest_path() else "sampled (not frozen)",
        },
        "support_manifest_hashes": {
            manifest_key(r.category, r.k, r.seed): r.support_manifest_hash for r in records
        },
        "metrics_version": first.metrics_version,
        "run_ids": sorted({r.run_id for r in records}),
        "environment": config.get("env", first.env),
        "record_sources": record_sources(records),
        "command": command or from_run,
        "command_from_run": from_run,
        "command_given": command is not None,
        "n_episodes": len(records),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest.update(_content(files))
    manifest["submission_id"] = f"{grid.protocol}-{manifest['content_hash'][:12]}"
    return Submission(None, manifest, tuple(records)), files


def _content(files: dict[str, bytes]) -> dict[str, Any]:
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in sorted(files.items())}
    listing = "".join(f"{path}\t{digest}\n" for path, digest in digests.items())
    return {"files": digests, "content_hash": hashlib.sha256(listing.encode()).hexdigest()}


def write_submission(submission: Submission, files: dict[str, bytes], out_root: Path) -> Path:
    """Write into a temporary folder beside the target, then rename: all or nothing."""
    parent = Path(out_root) / submission.label
    target = parent / submission.submission_id
    if target.exists():
        existing = load_submission(target)
        if existing.manifest["content_hash"] == submission.manifest["content_hash"]:
            return target
        raise SubmissionError(f"{target} exists with other content; remove it first")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        for relative, data in {**files, MANIFEST: _manifest_bytes(submission.manifest)}.items():
            path = confined(tmp, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def submit(
    run_dir: Path,
    out_root: Path = Path("submissions"),
    command: str | None = None,
    method: str | None = None,
) -> Path:
    """Validate a run and write its submission folder; the folder's path."""
    submission, files = build_submission(run_dir, method=method, command=command)
    return write_submission(submission, files, out_root)


# ---- loading a submission -------------------------------------------------------------------


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
    _raise_problems(folder, problems)
    files = {p: read_bytes_limited(confined(folder, p)) for p in present}
    content = _content(files)
    edited = [p for p, digest in content["files"].items() if listed[p] != digest]
    problems = [f"{p}: content differs from its hash in manifest.json (edited?)" for p in edited]
    if not edited and content["content_hash"] != manifest.get("content_hash"):
        problems.append("content_hash in manifest.json does not match the files")
    _raise_problems(folder, problems)
    records = parse_records(files.get(RECORDS, b""), folder / RECORDS, SUBMISSION_LINE_FIX)
    _, problems = validate_records(folder, records, grid)
    problems += map_file_problems(files, records)
    labels = {method_label(r) for r in records}
    if labels != {manifest["method"]["label"]}:
        problems.append(f"records are of {sorted(labels)}, manifest says {manifest['method']}")
    recorded = {manifest_key(r.category, r.k, r.seed): r.support_manifest_hash for r in records}
    if recorded != manifest.get("support_manifest_hashes"):
        problems.append("support_manifest_hashes in manifest.json differ from the records")
    _raise_problems(folder, problems)
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
