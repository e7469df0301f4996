"""Speed of the exact AUPRO against the plain full-sort reference of tests/test_metrics.py.

pytest benchmarks/bench_aupro.py --benchmark-enable     (pytest-benchmark tables)
python benchmarks/bench_aupro.py [--repeats R] [--threads N] [--smoke]   (timings and ratio)
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from cputime import bench_parser, best_time, parse_bench_args
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from fsad_bench.metrics import aupro, pixel_auroc

N_MAPS, SIZE, LIMIT = 100, 256, 0.3
SMOKE_MAPS, SMOKE_SIZE = 4, 64


def load_reference() -> ModuleType:
    """The reference lives with the tests; load it by path so there is one copy of it."""
    path = Path(__file__).resolve().parent.parent / "tests" / "test_metrics.py"
    spec = importlib.util.spec_from_file_location("_aupro_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def realistic_data(
    seed: int = 0, n_maps: int = N_MAPS, size: int = SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Half the images hold 1-4 elliptic blobs; maps are smooth noise lifted around them."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_maps, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    margin = min(20, size // 4)
    for image in range(0, n_maps, 2):
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(margin, size - margin, size=2)
            ry, rx = rng.uniform(3, max(4, size // 10), size=2)
            masks[image] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    noise = ndimage.gaussian_filter(rng.standard_normal(masks.shape), sigma=(0, 4, 4))
    lift = ndimage.gaussian_filter(masks.astype(float), sigma=(0, 6, 6))
    maps = (noise / noise.std() + 2.0 * lift).astype(np.float32)
    return maps, masks


def best_wall(fn: Callable[[], object], repeats: int = 3) -> float:
    return best_time(fn, repeats).wall


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return realistic_data()


def test_fast_equals_plain(data: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = data
    assert abs(aupro(maps, masks, LIMIT) - load_reference().plain_aupro(maps, masks, LIMIT)) < 1e-9


@pytest.mark.benchmark(group="aupro")
def test_aupro_fast(benchmark, data: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = data
    benchmark.pedantic(aupro, args=(maps, masks, LIMIT), rounds=5, iterations=1)


@pytest.mark.benchmark(group="aupro")
def test_aupro_plain(benchmark, data: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = data
    plain = load_reference().plain_aupro
    benchmark.pedantic(plain, args=(maps, masks, LIMIT), rounds=5, iterations=1)


@pytest.mark.benchmark(group="pixel_auroc")
def test_pixel_auroc(benchmark, data: tuple[np.ndarray, np.ndarray]) -> None:
    maps, masks = data
    benchmark.pedantic(pixel_auroc, args=(masks, maps), rounds=5, iterations=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(bench_parser(__doc__, repeats=3), argv)
    n_maps, size = (SMOKE_MAPS, SMOKE_SIZE) if args.smoke else (N_MAPS, SIZE)
    maps, masks = realistic_data(n_maps=n_maps, size=size)
    plain = load_reference().plain_aupro
    fast_value, plain_value = aupro(maps, masks, LIMIT), plain(maps, masks, LIMIT)
    fast_s = best_wall(lambda: aupro(maps, masks, LIMIT), args.repeats)
    plain_s = best_wall(lambda: plain(maps, masks, LIMIT), args.repeats)
    print(f"data: {n_maps} maps of {size}x{size}, {int(masks.sum())} defect pixels")
    print(f"aupro fast : {fast_s * 1e3:8.1f} ms  value {fast_value:.12f}")
    print(f"aupro plain: {plain_s * 1e3:8.1f} ms  value {plain_value:.12f}")
    print(f"speed-up   : {plain_s / fast_s:.1f}x  |difference| {abs(fast_value - plain_value):.1e}")
    pixel_s = best_wall(lambda: pixel_auroc(masks, maps), args.repeats)
    sklearn_s = best_wall(lambda: roc_auc_score(masks.ravel(), maps.ravel()), repeats=1)
    print(f"pixel_auroc: {pixel_s * 1e3:8.1f} ms  (sklearn roc_auc_score {sklearn_s * 1e3:.1f} ms)")
    return 0 if abs(fast_value - plain_value) < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
