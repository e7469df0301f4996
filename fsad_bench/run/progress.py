"""What a run says while it plays: a line per finished episode, and that it is alive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.run.tasks import EpisodeTask

HEARTBEAT_S = 60.0


class Heartbeat:
    """Says the run is alive when no episode has finished for a while: meta-training, or a
    large test set, can keep one episode busy for minutes without a progress line."""

    def __init__(
        self, log: Callable[[str], None], tasks: Sequence[EpisodeTask], sequential: bool
    ) -> None:
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
                line += f"; playing {self.tasks[self.done].describe()}"
            self.log(line)


def progress_line(index: int, total: int, record: EpisodeRecord, elapsed: float) -> str:
    eta = elapsed / index * (total - index)
    head = f"[{index}/{total} {elapsed:5.0f}s, eta {eta:4.0f}s] {record.method.label} "
    head += f"{record.category} k={record.k} seed={record.seed}: "
    if record.status != STATUS_OK:
        return head + f"FAILED {record.error}"
    parts = [f"{name}={value:.3f}" for name, value in record.metrics.items() if value is not None]
    return head + " ".join(parts)
