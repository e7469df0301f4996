"""Timing helpers shared by the comparison benchmarks (not a benchmark itself).

On a shared machine wall time includes the time spent waiting for a core, which changes
minute to minute with other processes' load; the process's CPU time (user + system) counts
only the work done. With one thread (OMP_NUM_THREADS=1) it is the fairer basis for a ratio
between two implementations measured a minute apart, so ratios use it and wall time is shown
beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from fsad_bench.features import cache as feature_cache


@dataclass(frozen=True)
class Timing:
    """Best (minimum) of the repeats, in seconds."""

    cpu: float
    wall: float

    def __str__(self) -> str:
        return f"cpu {self.cpu:.3f} s (wall {self.wall:.3f} s)"


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 0) -> Timing:
    """Minimum CPU and wall time over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return Timing(min(cpu), min(wall))


def best_times(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """``best_time`` of several functions measured in turns, so that a burst of load from
    other processes hits all of them alike and their ratios stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(best_time(fn, 1))
    return {
        name: Timing(min(t.cpu for t in ts), min(t.wall for t in ts)) for name, ts in runs.items()
    }


def feature_cache_off() -> None:
    """Every call runs the backbone: a repeated batch would otherwise be a process-cache hit.
    The cache reads its bound from the environment at every use (fsad_bench.features.cache)."""
    os.environ[feature_cache.ENV] = "0"


def bench_parser(doc: str, repeats: int = 5) -> argparse.ArgumentParser:
    """The options every benchmark script shares: --threads, --repeats and --smoke."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"best of R timings (default {repeats})"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one repeat: checks that the script runs, measures nothing",
    )
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then apply --threads before anything is timed; --smoke means one repeat."""
    import torch

    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.smoke:
        args.repeats = 1
        print("smoke mode: tiny sizes, one repeat; the figures below measure nothing", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
