"""Checking records against the built-in protocol they claim: hash, supports, scores."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fsad_bench.identity import IMAGE_METRICS, METRICS
from fsad_bench.protocols.manifests import (
    hash_test_set,
    load_manifest,
    load_test_manifest,
    manifest_key,
    support_hash,
)
from fsad_bench.protocols.protocol import Protocol, list_protocol_files, load_protocol
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.results.submission.reading import (
    AUROC_TOLERANCE,
    MAP_FILE,
    PANEL_FILE,
    PNG_MAGIC,
    SHOWN_PROBLEMS,
    SIDECAR,
    Grid,
    SubmissionError,
    parse_json,
    read_json,
)
from fsad_bench.store import RECORDS, latest_by_key


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


def image_metrics_from_scores(payload: Any, names: Sequence[str], where: str) -> dict[str, float]:
    """The image-level metrics ``names`` recomputed from a score file's labels and scores;
    a SubmissionError naming ``where`` when the file cannot give them."""
    from fsad_bench.metrics import IMAGE_LEVEL

    if not isinstance(payload, dict) or not {"labels", "scores"} <= set(payload):
        raise SubmissionError(f"{where}: score file lacks 'labels' and 'scores'")
    labels, scores = payload["labels"], payload["scores"]
    if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
        raise SubmissionError(f"{where}: 'labels' and 'scores' must be lists of the same length")
    try:
        labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
        return {name: IMAGE_LEVEL[name](labels, scores) for name in names}
    except (ValueError, TypeError) as exc:
        raise SubmissionError(f"{where}: unusable scores ({exc})") from exc


def check_scores(record: EpisodeRecord, payload: Any) -> str | None:
    """Recompute every image-level metric the record holds from the per-image scores (the
    numbers a submission can prove); a problem message or None."""
    names = [name for name in IMAGE_METRICS if name in record.metrics]
    where = f"{record.scores_file} ({record.episode_key})"
    try:
        recomputed = image_metrics_from_scores(payload, names, where)
    except SubmissionError as exc:
        return str(exc)
    for name, value in recomputed.items():
        stored = record.metrics.get(name)
        if not _same(value, stored):
            return (
                f"{record.episode_key}: stored {name} {stored} differs from {value!r} "
                f"recomputed from {record.scores_file}"
            )
    return None


def _typing_problem(record: EpisodeRecord) -> str | None:
    """JSON gives any type anywhere; the views rely on these being what the schema says."""
    integers = all(type(v) is int for v in (record.k, record.seed))
    if not integers or not isinstance(record.category, str):
        return f"{record.result_key}: k and seed must be integers and category a string"
    unknown = set(record.metrics) - set(METRICS)
    values = record.metrics.values()
    if unknown or not all(v is None or type(v) in (int, float) for v in values):
        return f"{record.result_key}: metrics must be {list(METRICS)} with numbers or null"
    for kind, per_kind in record.by_defect.items():
        if not isinstance(per_kind, dict) or set(per_kind) - set(METRICS):
            return f"{record.result_key}: by_defect[{kind!r}] must map metric names to values"
        if not all(v is None or type(v) in (int, float) for v in per_kind.values()):
            return f"{record.result_key}: by_defect[{kind!r}] values must be numbers or null"
    return None


def _frozen_test_sets(protocol: Protocol) -> dict[str, str] | None:
    """Each category's test-set hash from the protocol's frozen test manifest, or None."""
    path = protocol.test_manifest_path()
    if path is None:
        return None
    return {name: hash_test_set(entries) for name, entries in load_test_manifest(path).items()}


def _test_set_problem(
    record: EpisodeRecord, tests: dict[str, str] | None, protocol: Protocol
) -> str | None:
    """Records since schema 2 name the test set they were scored on; it must be the
    protocol's (schema-1 records predate the hash and cannot say)."""
    if tests is None or record.schema_version < 2:
        return None
    expected = tests.get(record.category)
    if record.test_set_hash != expected:
        return (
            f"{record.episode_key}: scored on test set {record.test_set_hash}, not the frozen "
            f"test set {expected} of {protocol.ref}; rerun on an unmodified copy of the data"
        )
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
    tests = _frozen_test_sets(protocol)
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
        problem = _test_set_problem(record, tests, protocol)
        if problem:
            problems.append(problem)
        if not record.scores_file or not SIDECAR.match(record.scores_file):
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
        if path == RECORDS or SIDECAR.match(path):
            continue
        match = MAP_FILE.match(path)
        if not match:
            problems.append(f"{path}: not a file a submission may hold")
        elif match.group(1) not in folders:
            problems.append(f"{path}: maps of an episode that is not in the records")
        elif path.endswith(".png") and not data.startswith(PNG_MAGIC):
            problems.append(f"{path}: not a PNG image")
        elif path.endswith(".json"):
            try:
                problem = _index_problem(parse_json(data, path))
            except SubmissionError as exc:
                problem = str(exc)
            if problem:
                problems.append(f"{path}: {problem}" if not problem.startswith(path) else problem)
    return problems


_PANEL_KEYS = {"file": str, "path": str, "label": int, "score": (int, float)}


def _index_problem(index: Any) -> str | None:
    """A gallery index is {"panels": [{"file", "path", "label", "score"}, ...]} and names only
    panel files of its own folder: what the leaderboard reads, checked when it is loaded."""
    if not isinstance(index, dict) or not isinstance(index.get("panels"), list):
        return 'index must be {"panels": [...]}'
    for number, panel in enumerate(index["panels"]):
        if not isinstance(panel, dict) or set(panel) - set(_PANEL_KEYS):
            return f"panel {number} must be an object with keys {sorted(_PANEL_KEYS)}"
        for key, kind in _PANEL_KEYS.items():
            value = panel.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"panel {number}: {key} must be {getattr(kind, '__name__', 'a number')}"
        if not PANEL_FILE.match(panel["file"]) or panel["label"] not in (0, 1):
            return f"panel {number}: file {panel['file']!r} or label {panel['label']!r} invalid"
    return None


def raise_problems(where: Path, problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    hidden = len(problems) - SHOWN_PROBLEMS
    more = f" (and {hidden} more)" if hidden > 0 else ""
    raise SubmissionError(f"{where}: refused, {len(problems)} problem(s): {shown}{more}")
