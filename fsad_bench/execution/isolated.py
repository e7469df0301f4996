"""One spawned process per episode, at most ``workers`` at once: time and memory limits.

An episode that overruns its time limit, or whose process grows more than ``memory_mb``
above its size after start-up (a leak carried over from earlier calls, or a blow-up), is
killed and recorded as failed; memory a plugin leaks cannot reach the next episode, which
starts clean.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from fsad_bench.execution.base import STARTED, Limits, Watch, Work, start_worker
from fsad_bench.execution.process import process_rss_mb


def _play_in_child(work: Work[Any, Any], task: Any, parent: int, outbox: Any) -> None:
    start_worker(work.registrations, parent)
    work.prepare(task)
    outbox.put(STARTED)  # the episode's clock starts here, after the imports
    outbox.put(work.play(task))


@dataclass
class _Child:
    task: Any
    process: Any
    outbox: Any
    watch: Watch
    baseline_mb: float | None = None


class IsolatedExecutor:
    def __init__(
        self,
        work: Work[Any, Any],
        workers: int = 1,
        limits: Limits = Limits(),
        address: str | None = None,
    ) -> None:
        self.work, self.workers, self.limits = work, max(workers, 1), limits

    def run(self, tasks: Sequence[Any]) -> Iterator[Any]:
        context = get_context("spawn")
        queued: list[Any] = list(tasks)
        running: list[_Child] = []
        try:
            while queued or running:
                while queued and len(running) < self.workers:
                    task, outbox = queued.pop(0), context.Queue(maxsize=2)
                    process = context.Process(
                        target=_play_in_child, args=(self.work, task, os.getpid(), outbox)
                    )
                    process.start()
                    watch = Watch(self.limits.timeout_s, time.monotonic())
                    running.append(_Child(task, process, outbox, watch))
                for child in list(running):
                    outcome = _poll(child.outbox, 0.2 / len(running))
                    if outcome == STARTED:
                        child.watch.start(time.monotonic())
                        child.baseline_mb = process_rss_mb(child.process.pid)
                        continue
                    if outcome is None:
                        outcome = self._check(child)
                    if outcome is not None:
                        child.process.join()
                        running.remove(child)
                        yield outcome
        finally:  # on an error or Ctrl-C no orphan keeps computing
            for child in running:
                child.process.kill()
                child.process.join()

    def _check(self, child: _Child) -> Any:
        """A failed outcome when the child broke a limit or died without reporting, else None."""
        overdue = child.watch.overdue(time.monotonic())
        if overdue:
            child.process.kill()
            return self.work.fail(child.task, overdue)
        memory_mb = self.limits.memory_mb
        if memory_mb is not None and child.baseline_mb is not None:
            rss = process_rss_mb(child.process.pid)
            if rss is not None and rss - child.baseline_mb > memory_mb:
                child.process.kill()
                return self.work.fail(
                    child.task,
                    f"memory limit exceeded: grew {rss - child.baseline_mb:.0f} MB during the "
                    f"episode (limit {memory_mb:g} MB; raise --episode-memory-mb)",
                )
        if not child.process.is_alive():
            return _poll(child.outbox, 1.0) or self.work.fail(
                child.task, f"worker process died (exit code {child.process.exitcode})"
            )
        return None


def _poll(outbox: Any, wait: float) -> Any:
    try:
        return outbox.get(timeout=wait)
    except queue.Empty:
        return None
