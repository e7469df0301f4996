"""PaDiM fit on K=8 support images at 256 px (the default protocol's size): time and memory.

pytest benchmarks/bench_padim.py --benchmark-enable     (pytest-benchmark tables)
python benchmarks/bench_padim.py [PRESET_OR_PARAMS] [--threads N] [--smoke]  (fit/predict, RSS)

e.g. ``python benchmarks/bench_padim.py '{"covariance": "ledoit_wolf"}'``. Peak memory is the
process's resident set sampled during fit (fsad_bench.run.timing.PeakMemory, as the runner records).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
import torch
from cputime import bench_parser, parse_bench_args

from fsad_bench.execution.process import rss_mb
from fsad_bench.run.timing import PeakMemory
from fsad_bench.testing.data import tiny_normals
from fsad_methods.padim.plugin import PaDiM

K, SIZE, N_TEST = 8, 256, 16
SMOKE_K, SMOKE_SIZE, SMOKE_TEST = 2, 64, 2


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_normals(K, SIZE, seed=0), tiny_normals(N_TEST, SIZE, seed=1)


@pytest.mark.benchmark(group="padim")
def test_padim_fit(benchmark, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    method = PaDiM()
    method.fit(images[0])  # load the backbone outside the timing
    benchmark.pedantic(method.fit, args=(images[0],), rounds=3, iterations=1)


@pytest.mark.benchmark(group="padim")
def test_padim_predict(benchmark, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    method = PaDiM()
    method.fit(images[0])
    with torch.inference_mode():
        benchmark.pedantic(method.predict, args=(images[1],), rounds=3, iterations=1)


def measure(
    params: dict[str, Any], k: int = K, size: int = SIZE, n_test: int = N_TEST, repeats: int = 1
) -> dict[str, float]:
    """Best wall time of ``repeats`` fits and predicts; peak memory of the first fit."""
    support, test = tiny_normals(k, size, seed=0), tiny_normals(n_test, size, seed=1)
    method = PaDiM(**params)
    method.fit(support[:1])  # backbone loaded and cached before measuring
    method._model = None  # drop the warm-up Gaussians so they are not counted as baseline
    baseline = rss_mb()
    with PeakMemory() as memory:
        start = time.perf_counter()
        method.fit(support)
        fit_s = time.perf_counter() - start
    for _ in range(repeats - 1):
        start = time.perf_counter()
        method.fit(support)
        fit_s = min(fit_s, time.perf_counter() - start)
    gaussians = method._model.gaussians
    model_mb = (gaussians.mean.nbytes + gaussians.cholesky.nbytes) / 2**20
    predict_s = float("inf")
    with torch.inference_mode(), PeakMemory() as predict_memory:
        for _ in range(repeats):
            start = time.perf_counter()
            method.predict(test)
            predict_s = min(predict_s, time.perf_counter() - start)
    predict_ms = 1000 * predict_s / n_test
    return {
        "fit_s": fit_s,
        "predict_ms_per_image": predict_ms,
        "rss_before_fit_mb": baseline,
        "peak_rss_fit_mb": memory.peak_mb,
        "peak_rss_predict_mb": predict_memory.peak_mb,
        "gaussians_mb": model_mb,
        "positions": gaussians.height * gaussians.width,
        "channels": gaussians.mean.shape[1],
    }


def main(argv: list[str]) -> int:
    parser = bench_parser(__doc__, repeats=1)
    parser.add_argument(
        "params", nargs="?", default=None,
        help=f"a preset ({', '.join(sorted(PaDiM.presets))}) or parameters as JSON",
    )  # fmt: skip
    args = parse_bench_args(parser, argv)
    params: dict[str, Any] = {}
    if args.params:
        if args.params in PaDiM.presets:
            params = dict(PaDiM.presets[args.params])
        else:
            try:
                params = json.loads(args.params)
            except json.JSONDecodeError:
                parser.error(f"{args.params!r} is neither a preset nor JSON parameters")
    k, size, n_test = (SMOKE_K, SMOKE_SIZE, SMOKE_TEST) if args.smoke else (K, SIZE, N_TEST)
    print(f"PaDiM {params or 'defaults'}: fit on K={k} at {size} px, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    for name, value in measure(dict(params), k, size, n_test, args.repeats).items():
        print(f"  {name:22s} {value:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
