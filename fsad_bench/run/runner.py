"""Plan and run a benchmark: check methods and data up front, skip finished episodes, fan out.

The parent process is the only writer of records: executors return outcomes, the parent
writes the score sidecar and then the record line, so a kill never leaves half a result.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fsad_bench.datasets.base import Category, listing_fingerprint
from fsad_bench.errors import DatasetError, FsadError, ProtocolError
from fsad_bench.execution import Limits, Work, create_executor
from fsad_bench.protocols.manifests import (
    SupportEntry,
    check_test_sets,
    manifest_key,
    plan_supports,
    support_hash,
    write_manifest,
)
from fsad_bench.protocols.protocol import load_categories
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.registry import list_methods
from fsad_bench.run import episode
from fsad_bench.run.config import RunConfig
from fsad_bench.run.environment import environment
from fsad_bench.run.lock import exclusive
from fsad_bench.run.methods import Prepared, prepare_methods
from fsad_bench.run.progress import Heartbeat, progress_line
from fsad_bench.run.resume import (
    SUPPORTS,
    check_resume,
    check_versions,
    run_identity,
    with_earlier,
    write_run_config,
)
from fsad_bench.run.tasks import EpisodeTask
from fsad_bench.store import RecordWriter, read_records, write_bytes_atomic, write_json_atomic


@dataclass
class RunSummary:
    out_dir: Path
    played: int
    skipped: int
    failed: list[EpisodeRecord]
    failed_earlier: int = 0  # skipped episodes whose record is a failure (--retry-failed)


def build_tasks(
    config: RunConfig,
    categories: dict[str, Category],
    supports: dict[str, list[SupportEntry]],
    run_id: str,
    env: dict[str, Any],
    test_hashes: dict[str, str] | None = None,
) -> list[EpisodeTask]:
    protocol = config.protocol
    tasks = []
    # episode-major: the methods of one episode run back to back and share cached features
    for ep in config.episodes():
        entries = supports[manifest_key(ep.category, ep.k, ep.seed)]
        others = tuple(c for c in categories if c != ep.category)
        for spec in config.methods:
            tasks.append(
                EpisodeTask(
                    run_id=run_id,
                    episode=ep,
                    method_spec=spec,
                    method_params=config.method_params.get(spec, {}),
                    protocol=protocol,
                    data_root=protocol.data_root,
                    support=tuple(entries),
                    support_hash=support_hash(entries),
                    meta_categories=others if protocol.meta_train == "leave_one_out" else (),
                    device=config.device,
                    env=env,
                    batch_size=config.batch_size,
                    cache_dir=str(config.out_dir / "meta_cache"),
                    threads=1 if config.workers > 1 else None,
                    save_maps=config.save_maps,
                    test_set_hash=(test_hashes or {}).get(ep.category),
                )
            )
    return tasks


def _playable(
    tasks: list[EpisodeTask], min_k: dict[str, int], log: Callable[[str], None]
) -> list[EpisodeTask]:
    """Episodes with fewer supports than a method accepts are not played (their fit is
    undefined, e.g. a covariance from one image); one line says which."""
    kept = [t for t in tasks if t.episode.k >= min_k.get(t.method_spec, 1)]
    for spec in sorted({t.method_spec for t in tasks if t not in kept}):
        low = sorted({t.episode.k for t in tasks if t.method_spec == spec and t not in kept})
        log(f"{spec}: K={low} below its minimum of {min_k[spec]} support images; not played")
    return kept


def _scores_missing(out_dir: Path, record: EpisodeRecord) -> bool:
    return bool(record.scores_file) and not (out_dir / record.scores_file).exists()


@contextlib.contextmanager
def output_errors(out_dir: Path) -> Iterator[None]:
    """A full disk or an unwritable --out becomes one line naming the file and the fix."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out_dir
        raise FsadError(
            f"{where}: cannot write the run's output ({exc.strerror or exc}); free disk space "
            "or pass another --out (finished episodes are kept; rerun to resume)"
        ) from exc


def episode_work() -> Work[EpisodeTask, Any]:
    """How executors play this harness's tasks (and fail them when a worker cannot report)."""
    return Work(episode.play, episode.failed_outcome, episode.prepare, list_methods())


def run(config: RunConfig, log: Callable[[str], None] | None = None) -> RunSummary:
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    prepared = prepare_methods(config)  # every bad --param or missing weights file: one line
    methods = prepared.identity
    categories = load_categories(config.protocol)
    for name, category in categories.items():
        for note in category.notes:
            log(f"{name}: {note}")
    config = replace(config, protocol=config.protocol.with_overrides(categories=tuple(categories)))
    protocol = config.protocol
    unknown = set(config.only_categories or ()) - set(categories)
    if unknown:
        raise ProtocolError(
            f"--categories {sorted(unknown)} not in {protocol.ref}; known: {', '.join(categories)}"
        )
    supports = plan_supports(protocol, categories, config.episodes())
    test_hashes = check_test_sets(protocol, categories, {e.category for e in config.episodes()})
    identity = run_identity(config, listing_fingerprint(categories.values()), methods)
    limits = Limits(config.episode_timeout_s, config.episode_memory_mb)
    executor = create_executor(
        config.executor, episode_work(), config.workers, limits, config.address
    )  # before anything is written: an executor that refuses the settings leaves no trace
    with output_errors(config.out_dir):
        config.out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(config.out_dir):  # one writer: a second run here stops with one line
        return _play(config, identity, prepared, categories, supports, test_hashes, executor, log)


def _play(
    config: RunConfig,
    identity: dict[str, Any],
    prepared: Prepared,
    categories: dict[str, Category],
    supports: dict[str, list[SupportEntry]],
    test_hashes: dict[str, str],
    executor: Any,
    log: Callable[[str], None],
) -> RunSummary:
    """Everything after the run directory is locked: resume checks, bookkeeping, episodes."""
    protocol = config.protocol
    check_resume(config, identity)
    writer = RecordWriter(config.out_dir, log)
    previous = read_records(writer.path) if writer.path.exists() else []
    check_versions(writer.path, previous, prepared.identity)
    lost = {r.result_key for r in previous if _scores_missing(config.out_dir, r)}
    if lost:
        log(f"note: {len(lost)} finished episode(s) in {config.out_dir} lost their score file; "
            "playing them again")  # fmt: skip
    done = {
        r.result_key
        for r in previous
        if (r.status == STATUS_OK or not config.retry_failed) and r.result_key not in lost
    }
    env = environment(config.device)
    with output_errors(config.out_dir):
        write_run_config(config, identity, env)
        write_manifest(config.out_dir / SUPPORTS, protocol, with_earlier(config.out_dir, supports))
    tasks = build_tasks(config, categories, supports, uuid.uuid4().hex[:12], env, test_hashes)
    tasks = _playable(tasks, prepared.min_k, log)
    pending = [t for t in tasks if t.result_key not in done]
    skipped = len(tasks) - len(pending)
    latest = {r.result_key: r for r in previous}
    failed_earlier = sum(
        1 for t in tasks if t.result_key in done and latest[t.result_key].status != STATUS_OK
    )
    log(
        f"{protocol.ref}: {len({t.episode.category for t in tasks})} categories x "
        f"K={list(protocol.shots)} x "
        f"seeds={list(protocol.seeds)} x {len(config.methods)} method(s) = {len(tasks)} episodes"
        + (f"; {skipped} already done in {config.out_dir}, skipped" if skipped else "")
    )
    failed: list[EpisodeRecord] = []
    start = time.perf_counter()
    stream = executor.run(pending)
    sequential = config.workers <= 1 and config.executor == "local"
    with Heartbeat(log, pending, sequential) as heartbeat:
        try:
            for index, outcome in enumerate(stream, start=1):
                if outcome.data_error:
                    raise DatasetError(outcome.data_error)
                record = outcome.record
                with output_errors(config.out_dir):
                    if outcome.scores is not None and record.scores_file:
                        write_json_atomic(config.out_dir / record.scores_file, outcome.scores)
                    for relative, data in outcome.files.items():  # before the record
                        write_bytes_atomic(config.out_dir / relative, data)
                    writer.append(record)
                if record.status != STATUS_OK:
                    failed.append(record)
                heartbeat.finished(index)
                log(progress_line(index, len(pending), record, time.perf_counter() - start))
        finally:  # stop the executor's workers at once when writing fails or Ctrl-C arrives
            getattr(stream, "close", lambda: None)()
    return RunSummary(config.out_dir, len(pending), skipped, failed, failed_earlier)
