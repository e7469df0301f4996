"""Wall-clock and peak-memory measurement for one episode.

ru_maxrss never goes down, so it cannot give a per-episode peak; a light sampler thread
reading the resident set (or the CUDA allocator's peak) can.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from fsad_bench.execution.process import rss_mb


class PeakMemory:
    """Context manager: ``peak_mb`` is the highest RSS (CPU) or allocated bytes (CUDA) seen."""

    def __init__(self, device: str = "cpu", interval_s: float = 0.01) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)  # the episode's device, not cuda:0
        else:
            self.peak_mb = rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, rss_mb())
        else:
            import torch

            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
