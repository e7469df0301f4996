"""Episodes in this process, or in a pool of spawned worker processes (``--workers N``).

The same records come out whatever ``workers`` is. If a pool worker dies (segfault, OOM
kill) the pool breaks; the episodes it took down are replayed one process each
(``isolated``), so only the culprit fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from fsad_bench.errors import FsadError
from fsad_bench.execution.base import Limits, Work, start_worker
from fsad_bench.execution.isolated import IsolatedExecutor


class LocalExecutor:
    def __init__(
        self,
        work: Work[Any, Any],
        workers: int = 1,
        limits: Limits = Limits(),
        address: str | None = None,
    ) -> None:
        if limits.isolate:
            raise FsadError("episode limits need the isolated executor (a process per episode)")
        self.work, self.workers = work, workers

    def run(self, tasks: Sequence[Any]) -> Iterator[Any]:
        if self.workers <= 1:
            for task in tasks:
                self.work.prepare(task)
                yield self.work.play(task)
        else:
            yield from self._pool(tasks)

    def _pool(self, tasks: Sequence[Any]) -> Iterator[Any]:
        context = get_context("spawn")  # fork after torch/OpenMP initialisation can deadlock
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=start_worker,
            initargs=(self.work.registrations, os.getpid()),
        )
        casualties: list[Any] = []
        try:
            futures = {pool.submit(_prepare_and_play, self.work, task): task for task in tasks}
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
            yield from IsolatedExecutor(self.work, self.workers, Limits()).run(casualties)


def _prepare_and_play(work: Work[Any, Any], task: Any) -> Any:
    work.prepare(task)
    return work.play(task)
