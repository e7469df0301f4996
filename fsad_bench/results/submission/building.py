"""A submission from a run directory: validated, then written all or nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from fsad_bench.errors import FsadError
from fsad_bench.identity import KIND_REPRODUCED
from fsad_bench.protocols.manifests import manifest_key
from fsad_bench.protocols.protocol import load_protocol
from fsad_bench.records import EpisodeRecord
from fsad_bench.results.report import backbone_init, method_label
from fsad_bench.results.submission.loading import load_submission
from fsad_bench.results.submission.reading import (
    MANIFEST,
    SAFE_NAME,
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
from fsad_bench.store import RECORDS, RUN_CONFIG, latest_by_key


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
    if not SAFE_NAME.match(method):
        raise SubmissionError(f"method label {method!r} is not a safe folder name")
    return method


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
    raise_problems(run_dir, problems)
    records = sorted(latest.values(), key=lambda r: (r.category, r.k, r.seed))
    files = {RECORDS: "".join(r.to_json() + "\n" for r in records).encode("utf-8")}
    for record in records:
        assert record.scores_file is not None  # checked by validate_records
        files[record.scores_file] = read_bytes_limited(confined(run_dir, record.scores_file))
    files.update(_saved_maps(run_dir, records))
    raise_problems(run_dir, map_file_problems(files, records))
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
    manifest.update(content_hashes(files))
    manifest["submission_id"] = f"{grid.protocol}-{manifest['content_hash'][:12]}"
    return Submission(None, manifest, tuple(records)), files


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
