"""Plan and run a benchmark: validate data up front, skip finished episodes, fan out.

The parent process is the only writer of records: workers return outcomes, the parent
writes the score sidecar and then the record line, so a kill never leaves half a result.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsad_bench.datasets import get_layout
from fsad_bench.datasets.base import Category, listing_fingerprint
from fsad_bench.errors import DatasetError, FsadError, PluginError, ProtocolError
from fsad_bench.executors import Limits, execute
from fsad_bench.method import unknown_params_problem
from fsad_bench.protocol import (
    Protocol,
    SupportEntry,
    check_entries,
    load_manifest,
    manifest_key,
    sample_support,
    support_hash,
    write_manifest,
)
from fsad_bench.records import STATUS_OK, Episode, EpisodeRecord
from fsad_bench.registry import resolve
from fsad_bench.results import (
    RUN_CONFIG,
    RecordWriter,
    environment,
    read_records,
    write_bytes_atomic,
    write_json_atomic,
)


@dataclass(frozen=True)
class RunConfig:
    """The one run configuration, built the same way from CLI options and from a file."""

    protocol: Protocol
    methods: tuple[str, ...]
    out_dir: Path
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1
    device: str = "cpu"
    batch_size: int = 16
    retry_failed: bool = False
    only_categories: tuple[str, ...] | None = None
    episode_timeout_s: float | None = None  # set: every episode in its own killable process
    episode_memory_mb: float | None = None  # likewise; growth beyond it kills the episode
    executor: str = "local"  # or "ray" (fsad_bench.executor_ray)
    address: str | None = None  # Ray cluster address; None starts a local Ray
    save_maps: int = 0  # anomaly-map panels saved per episode under maps/ (0: none)

    def episodes(self) -> list[Episode]:
        """The protocol's episodes, optionally restricted to some held-out categories."""
        only = self.only_categories
        return [e for e in self.protocol.episodes() if not only or e.category in only]

    def identity(self) -> dict[str, Any]:
        """What must not change when a run directory is resumed."""
        return {
            "protocol": self.protocol.ref,
            "protocol_hash": self.protocol.definition_hash(),
            "image_size": self.protocol.image_size,
            "method_params": {m: self.method_params.get(m, {}) for m in self.methods},
        }


@dataclass
class RunSummary:
    out_dir: Path
    played: int
    skipped: int
    failed: list[EpisodeRecord]
    failed_earlier: int = 0  # skipped episodes whose record is a failure (--retry-failed)


def load_categories(protocol: Protocol) -> dict[str, Category]:
    """List (not decode) every category first: bad layouts fail before any work starts."""
    layout = get_layout(protocol.layout)
    root = Path(protocol.data_root) if protocol.data_root else None
    names = protocol.categories or tuple(layout.discover_categories(root))
    if not names:
        raise ProtocolError(f"no categories found under {root}; check --data-root and --layout")
    return {name: layout.load_category(root, name, **protocol.layout_options) for name in names}


def plan_supports(
    protocol: Protocol, categories: dict[str, Category], episodes: Iterable[Episode]
) -> dict[str, list[SupportEntry]]:
    """Support sets from the frozen manifest where it has them, sampled (seeded) otherwise."""
    manifest_path = protocol.manifest_path()
    frozen = load_manifest(manifest_path) if manifest_path and manifest_path.exists() else {}
    supports: dict[str, list[SupportEntry]] = {}
    for episode in episodes:
        category = categories[episode.category]
        key = manifest_key(episode.category, episode.k, episode.seed)
        if key in frozen:
            entries = frozen[key]
            check_entries(category.root, entries, manifest_path)
        else:
            pool = [category.relpath(p) for p in category.train_normal]
            paths = sample_support(protocol, episode.category, episode.k, episode.seed, pool)
            entries = [SupportEntry(p) for p in paths]
        supports[key] = entries
    return supports


def resolved_methods(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Each method's version and full parameters (defaults, preset, --param): what its
    records will say, so that a resumed run after a plugin upgrade is caught up front."""
    resolved = {}
    for spec in config.methods:
        method = resolve(spec, config.method_params.get(spec))
        params = {**getattr(method.cls, "defaults", {}), **method.params}
        resolved[spec] = {"version": method.cls.info.version, "params": params}
    return json.loads(json.dumps(resolved, default=str))


def _identity(config: RunConfig, data: str) -> dict[str, Any]:
    return {**config.identity(), "data": data, "methods": resolved_methods(config)}


def _check_resume(config: RunConfig, data: str) -> None:
    path = config.out_dir / RUN_CONFIG
    if not path.exists():
        return
    previous = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
    current = json.loads(json.dumps(_identity(config, data)))
    for name, params in current["method_params"].items():
        old = previous.get("method_params", {}).get(name)
        if old is not None and old != params:
            raise FsadError(
                f"{path}: {name} ran here with params {old}, now {params}; use a new --out"
            )
    for name, now in current["methods"].items():
        old = previous.get("methods", {}).get(name)
        if old is not None and old != now:
            changed = "version" if old["version"] != now["version"] else "parameters"
            raise FsadError(
                f"{path}: {name} ran here as version {old['version']} with {old['params']}; "
                f"the installed plugin's {changed} differ ({now['version']}, {now['params']}), "
                "so its records would not compare; use a new --out"
            )
    if previous.get("data") not in (None, data):
        raise FsadError(
            f"{path}: this run directory was played on other data (file listing "
            f"{previous['data']}, now {data} under {config.protocol.data_root}); point "
            "--data-root at the same copy or use a new --out"
        )
    for key in ("protocol", "protocol_hash", "image_size"):
        if previous.get(key) != current[key]:
            raise FsadError(
                f"{path}: this run directory holds {key}={previous.get(key)!r}, not "
                f"{current[key]!r}; use a new --out directory"
            )


def _check_versions(
    path: Path, records: Sequence[EpisodeRecord], methods: dict[str, dict[str, Any]]
) -> None:
    """Records are the last word on what ran (a run.json from before it named the versions
    cannot say): a plugin upgraded since must not add episodes beside them."""
    for record in records:
        now = methods.get(record.method.label)
        if now is not None and now["version"] != record.method.version:
            raise FsadError(
                f"{path}: {record.method.label} ran here as version {record.method.version}, "
                f"the installed plugin is {now['version']}, so its records would not compare; "
                "use a new --out"
            )


def _write_run_config(config: RunConfig, env: dict[str, Any], data: str) -> None:
    path = config.out_dir / RUN_CONFIG
    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    old = previous.get("identity", {})
    identity = _identity(config, data)
    identity["method_params"] = {**old.get("method_params", {}), **identity["method_params"]}
    identity["methods"] = {**old.get("methods", {}), **identity["methods"]}
    protocol = {**config.protocol.to_dict(), "source": None}
    for grid in ("shots", "seeds"):  # the directory holds every call's episodes, not the last's
        protocol[grid] = sorted(
            set(previous.get("protocol", {}).get(grid, [])) | set(protocol[grid])
        )
    payload = {
        "identity": identity,
        "protocol": protocol,
        "methods": sorted(set(previous.get("methods", [])) | set(config.methods)),
        "env": env,
    }
    write_json_atomic(path, json.loads(json.dumps(payload, default=str)))


SUPPORTS = "support_manifest.json"


def _with_earlier(
    out_dir: Path, supports: dict[str, list[SupportEntry]]
) -> dict[str, list[SupportEntry]]:
    """This call's supports plus those an earlier call in the same directory recorded."""
    path = out_dir / SUPPORTS
    try:
        earlier = load_manifest(path) if path.exists() else {}
    except ProtocolError:  # a copy for the record, rebuilt from the protocol on every call
        earlier = {}
    return {**earlier, **supports}


def build_tasks(
    config: RunConfig,
    categories: dict[str, Category],
    supports: dict[str, list[SupportEntry]],
    run_id: str,
    env: dict[str, Any],
) -> Iterator[Any]:
    from fsad_bench.episode import EpisodeTask

    protocol = config.protocol
    # episode-major: the methods of one episode run back to back and share cached features
    for episode in config.episodes():
        for spec in config.methods:
            entries = supports[manifest_key(episode.category, episode.k, episode.seed)]
            others = tuple(c for c in categories if c != episode.category)
            yield EpisodeTask(
                run_id=run_id,
                episode=episode,
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
            )


def _scores_missing(out_dir: Path, record: EpisodeRecord) -> bool:
    return bool(record.scores_file) and not (out_dir / record.scores_file).exists()


def _result_key(task: Any) -> str:
    name, _, preset = task.method_spec.partition(".")
    return f"{name}:{preset}:{task.episode.key}"


HEARTBEAT_S = 60.0


class Heartbeat:
    """Says the run is alive when no episode has finished for a while: meta-training, or a
    large test set, can keep one episode busy for minutes without a progress line."""

    def __init__(self, log: Callable[[str], None], tasks: list[Any], sequential: bool) -> None:
        self.log, self.tasks, self.sequential = log, tasks, sequential
        self.done, self.last = 0, time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def finished(self, done: int) -> None:
        self.done, self.last = done, time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            quiet = time.monotonic() - self.last
            if quiet < HEARTBEAT_S or self.done >= len(self.tasks):
                continue
            line = f"... still working: {self.done}/{len(self.tasks)} episodes done, "
            line += f"{quiet:.0f} s since the last one finished"
            if self.sequential:  # one at a time, in order: the running one is known
                task = self.tasks[self.done]
                episode = task.episode
                line += f"; playing {task.method_spec} {episode.category} k={episode.k} "
                line += f"seed={episode.seed}"
            self.log(line)


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


def run(config: RunConfig, log: Callable[[str], None] | None = None) -> RunSummary:
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    stray = sorted(set(config.method_params) - set(config.methods))
    if stray:
        raise PluginError(
            f"--param given for {', '.join(stray)}, which this run does not play (methods: "
            f"{', '.join(config.methods)}); write it as METHOD.KEY=VALUE with METHOD exactly "
            "as given to --method"
        )
    for spec in config.methods:
        resolved = resolve(spec, config.method_params.get(spec))
        problem = unknown_params_problem(resolved.cls, resolved.params)
        if problem:
            raise PluginError(f"{problem}; fix the --param or the preset")
        if resolved.cls.info.needs_meta_train and config.protocol.meta_train == "none":
            raise ProtocolError(f"{spec} needs meta-training but the protocol has meta_train: none")
    categories = load_categories(config.protocol)
    protocol = config.protocol.with_overrides(categories=tuple(categories))
    config = RunConfig(**{**config.__dict__, "protocol": protocol})
    unknown = set(config.only_categories or ()) - set(categories)
    if unknown:
        raise ProtocolError(
            f"--categories {sorted(unknown)} not in {protocol.ref}; known: {', '.join(categories)}"
        )
    supports = plan_supports(protocol, categories, config.episodes())
    data = listing_fingerprint(categories.values())
    with output_errors(config.out_dir):
        config.out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(config, data)
    writer = RecordWriter(config.out_dir)
    previous = read_records(writer.path) if writer.path.exists() else []
    _check_versions(writer.path, previous, resolved_methods(config))
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
        _write_run_config(config, env, data)
        write_manifest(config.out_dir / SUPPORTS, protocol, _with_earlier(config.out_dir, supports))
    run_id = uuid.uuid4().hex[:12]
    tasks = [t for t in build_tasks(config, categories, supports, run_id, env)]
    pending = [t for t in tasks if _result_key(t) not in done]
    skipped = len(tasks) - len(pending)
    latest = {r.result_key: r for r in previous}
    failed_earlier = sum(
        1 for t in tasks if _result_key(t) in done and latest[_result_key(t)].status != STATUS_OK
    )
    log(
        f"{protocol.ref}: {len({t.episode.category for t in tasks})} categories x "
        f"K={list(protocol.shots)} x "
        f"seeds={list(protocol.seeds)} x {len(config.methods)} method(s) = {len(tasks)} episodes"
        + (f"; {skipped} already done in {config.out_dir}, skipped" if skipped else "")
    )
    failed: list[EpisodeRecord] = []
    start = time.perf_counter()
    limits = Limits(config.episode_timeout_s, config.episode_memory_mb)
    outcomes = execute(pending, config.workers, limits, config.executor, config.address)
    stream = iter(outcomes)
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
                log(_progress_line(index, len(pending), record, time.perf_counter() - start))
        finally:  # stop the executor's workers at once when writing fails or Ctrl-C arrives
            getattr(stream, "close", lambda: None)()
    return RunSummary(config.out_dir, len(pending), skipped, failed, failed_earlier)


def _progress_line(index: int, total: int, record: EpisodeRecord, elapsed: float) -> str:
    eta = elapsed / index * (total - index)
    head = f"[{index}/{total} {elapsed:5.0f}s, eta {eta:4.0f}s] {record.method.label} "
    head += f"{record.category} k={record.k} seed={record.seed}: "
    if record.status != STATUS_OK:
        return head + f"FAILED {record.error}"
    parts = [f"{name}={value:.3f}" for name, value in record.metrics.items() if value is not None]
    return head + " ".join(parts)
