"""Greedy k-center coreset: our blocked update against the plain whole-bank update it replaced.

python benchmarks/bench_coreset.py [--threads N] [--repeats R] [--quick] [--smoke]
pytest benchmarks/bench_coreset.py --benchmark-enable     (pytest-benchmark tables)

Both draw the same projection and first point from the same seed; the selections must be
identical (the blocked update computes every distance with the same per-row operations).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import pytest
import torch
from cputime import bench_parser, parse_bench_args

from fsad_methods.patchcore.core import greedy_coreset

RATIO = 0.1
# name: (bank rows, feature dim, projection dim)
CASES = {
    "Lite0 K=8 bank (8 x 32x32 patches, 40+112 ch)": (8192, 152, 128),
    "50,000 x 1024, 128-d projection (our default)": (50_000, 1024, 128),
    "50,000 x 1024, 267-d projection (anomalib's)": (50_000, 1024, 267),
}
SMOKE_CASES = {"smoke: 512 x 32, 16-d projection": (512, 32, 16)}


def plain_greedy_coreset(
    bank: torch.Tensor, n_select: int, projection_dim: int | None, generator: torch.Generator
) -> torch.Tensor:
    """The previous implementation: one whole-bank temporary per step (the reference)."""
    points = bank
    if projection_dim is not None and projection_dim < bank.shape[1]:
        weight = torch.randn(bank.shape[1], projection_dim, generator=generator) / math.sqrt(
            projection_dim
        )
        points = bank @ weight.to(bank)
    start = int(torch.randint(len(points), (1,), generator=generator))
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = start
    min_dist = torch.linalg.vector_norm(points - points[start], dim=1)
    for i in range(1, n_select):
        index = int(torch.argmax(min_dist))
        selected[i] = index
        min_dist = torch.minimum(min_dist, torch.linalg.vector_norm(points - points[index], dim=1))
    return selected


def bank_for(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Gaussian features with per-channel scales (as bench_vs_anomalib.random_bank)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=g) * (0.5 + torch.rand(dim, generator=g))


def timed(
    fn: Callable[..., torch.Tensor], *args: object, repeats: int = 1
) -> tuple[float, torch.Tensor]:
    """Process CPU seconds, best of ``repeats`` (benchmarks/cputime.py says why), and the
    result; every call gets a generator seeded alike, so the calls select the same points."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn(*args, torch.Generator().manual_seed(0))
        best = min(best, time.process_time() - start)
    return best, out


@pytest.mark.benchmark(group="coreset")
@pytest.mark.parametrize("impl", ["blocked", "plain"])
def test_coreset_lite0_bank(benchmark, impl: str) -> None:
    rows, dim, proj = next(iter(CASES.values()))
    bank, n_select = bank_for(rows, dim), math.ceil(RATIO * rows)
    fn = greedy_coreset if impl == "blocked" else plain_greedy_coreset
    picked = benchmark.pedantic(
        lambda: fn(bank, n_select, proj, torch.Generator().manual_seed(0)), rounds=3, iterations=1
    )
    expected = plain_greedy_coreset(bank, n_select, proj, torch.Generator().manual_seed(0))
    assert torch.equal(picked, expected)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, repeats=1)
    parser.add_argument("--quick", action="store_true", help="only the Lite0-sized bank")
    args = parse_bench_args(parser, argv)
    cases = SMOKE_CASES if args.smoke else dict(list(CASES.items())[: 1 if args.quick else None])
    print(f"coreset at {RATIO:.0%}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'bank':48s} {'plain s':>8s} {'ours s':>8s} {'speed-up':>8s}  identical  (CPU s)")
    same = True
    for name, (rows, dim, proj) in cases.items():
        bank, n_select = bank_for(rows, dim), math.ceil(RATIO * rows)
        ours_s, ours = timed(greedy_coreset, bank, n_select, proj, repeats=args.repeats)
        plain_s, plain = timed(plain_greedy_coreset, bank, n_select, proj, repeats=args.repeats)
        same &= torch.equal(ours, plain)
        print(
            f"{name:48s} {plain_s:8.2f} {ours_s:8.2f} {plain_s / ours_s:7.1f}x  "
            f"{torch.equal(ours, plain)}"
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
