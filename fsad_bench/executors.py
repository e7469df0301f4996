"""Where episodes are played: in-process, a local process pool, or one process per episode.

Every executor yields ``EpisodeOutcome``s and never writes: the runner stays the single
writer of records, so resume and crash safety do not depend on the executor chosen.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from fsad_bench.timing import process_rss_mb

_STARTED = "started"
_STARTUP_S = 120.0  # importing torch in a fresh process; not charged to the episode
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Limits:
    """Per-episode limits; either one set means every episode runs in its own process."""

    timeout_s: float | None = None
    memory_mb: float | None = None

    @property
    def isolate(self) -> bool:
        return self.timeout_s is not None or self.memory_mb is not None


def execute_local(tasks: list[Any], workers: int, limits: Limits = Limits()) -> Iterator[Any]:
    """The default: no extra dependency, the same records whatever ``workers`` is."""
    if limits.isolate:
        yield from execute_isolated(tasks, workers, limits)
    elif workers <= 1:
        from fsad_bench.episode import play

        for task in tasks:
            yield play(task)
    else:
        yield from _execute_pool(tasks, workers)


def _execute_pool(tasks: list[Any], workers: int) -> Iterator[Any]:
    """A pool of long-lived workers; if one dies (segfault, OOM kill) the pool breaks, and
    the episodes it took down are replayed one process each, so only the culprit fails."""
    from fsad_bench.episode import play
    from fsad_bench.registry import list_methods

    context = get_context("spawn")  # fork after torch/OpenMP initialisation can deadlock
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=start_worker,
        initargs=(list_methods(), os.getpid()),
    )
    casualties: list[Any] = []
    try:
        futures = {pool.submit(play, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                casualties.append(futures[future])
                continue
            yield outcome
    finally:  # on an error or Ctrl-C, queued episodes are dropped, not played unseen
        pool.shutdown(wait=True, cancel_futures=True)
    if casualties:
        yield from execute_isolated(casualties, workers, Limits())


def die_with_parent(parent: int) -> None:
    """A worker whose parent was killed (kill -9) would otherwise go on computing an episode
    nobody will record, holding its memory; on Linux the kernel now kills it too."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)


def start_worker(targets: dict[str, str], parent: int) -> None:
    """Spawned workers start with an empty in-process registry: repeat the parent's names."""
    from fsad_bench import registry

    die_with_parent(parent)

    known = registry.list_methods()
    for name, target in targets.items():
        if name not in known:
            registry.register(name, target)


def _play_in_child(task: Any, targets: dict[str, str], parent: int, outbox: Any) -> None:
    from fsad_bench.episode import play

    start_worker(targets, parent)
    outbox.put(_STARTED)  # the episode's clock starts here, after the imports
    outbox.put(play(task))


@dataclass
class _Child:
    task: Any
    process: Any
    outbox: Any
    deadline: float
    baseline_mb: float | None = None


def execute_isolated(tasks: list[Any], workers: int, limits: Limits) -> Iterator[Any]:
    """One spawned process per episode, at most ``workers`` at once. An episode that overruns
    its time limit, or whose process grows more than ``memory_mb`` above its size after
    start-up (a leak carried over from earlier calls, or a blow-up), is killed and recorded
    as failed; memory a plugin leaks cannot reach the next episode, which starts clean."""
    from fsad_bench.registry import list_methods

    context = get_context("spawn")
    targets = list_methods()
    queued, running = list(tasks), []
    forever = float("inf")
    try:
        while queued or running:
            while queued and len(running) < max(workers, 1):
                task, outbox = queued.pop(0), context.Queue(maxsize=2)
                process = context.Process(
                    target=_play_in_child, args=(task, targets, os.getpid(), outbox)
                )
                process.start()
                running.append(_Child(task, process, outbox, time.monotonic() + _STARTUP_S))
            for child in list(running):
                outcome = _poll(child.outbox, 0.2 / len(running))
                if outcome == _STARTED:
                    child.deadline = time.monotonic() + (limits.timeout_s or forever)
                    child.baseline_mb = process_rss_mb(child.process.pid)
                    continue
                if outcome is None:
                    outcome = _check_child(child, limits)
                if outcome is not None:
                    child.process.join()
                    running.remove(child)
                    yield outcome
    finally:  # on an error or Ctrl-C no orphan keeps computing
        for child in running:
            child.process.kill()
            child.process.join()


def _check_child(child: _Child, limits: Limits) -> Any:
    """A failed outcome when the child broke a limit or died without reporting, else None."""
    from fsad_bench.episode import failed_outcome

    if time.monotonic() > child.deadline:
        child.process.kill()
        return failed_outcome(child.task, f"timed out after {limits.timeout_s:g} s")
    if limits.memory_mb is not None and child.baseline_mb is not None:
        rss = process_rss_mb(child.process.pid)
        if rss is not None and rss - child.baseline_mb > limits.memory_mb:
            child.process.kill()
            return failed_outcome(
                child.task,
                f"memory limit exceeded: grew {rss - child.baseline_mb:.0f} MB during the "
                f"episode (limit {limits.memory_mb:g} MB; raise --episode-memory-mb)",
            )
    if not child.process.is_alive():
        return _poll(child.outbox, 1.0) or failed_outcome(
            child.task, f"worker process died (exit code {child.process.exitcode})"
        )
    return None


def _poll(outbox: Any, wait: float) -> Any:
    try:
        return outbox.get(timeout=wait)
    except queue.Empty:
        return None


def execute(
    tasks: list[Any],
    workers: int,
    limits: Limits = Limits(),
    executor: str = "local",
    address: str | None = None,
) -> Iterable[Any]:
    """Pick the executor by name; Ray is imported only when asked for."""
    if executor == "local":
        return execute_local(tasks, workers, limits)
    if executor == "ray":
        from fsad_bench.executor_ray import execute_ray

        return execute_ray(tasks, workers, limits, address)
    raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
