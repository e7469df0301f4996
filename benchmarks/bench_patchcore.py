"""PatchCore fit and predict per image on each EfficientNet-Lite backbone, K=8 at 256 px.

python benchmarks/bench_patchcore.py [--threads N] [--repeats R] [--smoke]
pytest benchmarks/bench_patchcore.py --benchmark-enable     (pytest-benchmark tables)

The process feature cache is turned off, so every predict runs the backbone (a cold episode);
"forward" is the backbone alone on the same batch, the floor predict is compared against.
Times are process CPU time, best of the repeats (benchmarks/cputime.py); use OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import sys

import pytest
import torch
from cputime import bench_parser, best_time, best_times, feature_cache_off, parse_bench_args

from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import cached_feature_extractor
from fsad_bench.testing.data import tiny_normals
from fsad_methods.patchcore.plugin import PatchCore

K, SIZE, N_TEST = 8, 256, 16
SMOKE_K, SMOKE_SIZE, SMOKE_TEST = 2, 64, 2
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # the first: default


def measure(
    backbone: str, repeats: int, k: int = K, size: int = SIZE, n_test: int = N_TEST
) -> dict[str, float]:
    """ms per image of fit (per support image), predict and the backbone forward alone."""
    feature_cache_off()
    support, test = tiny_normals(k, size, seed=0), tiny_normals(n_test, size, seed=1)
    extractor, _ = cached_feature_extractor(backbone, "pretrained", None, "cpu")
    method = PatchCore(backbone=backbone)
    torch.manual_seed(0)
    fit = best_time(lambda: method.fit(support), repeats, warmup=1).cpu
    with torch.inference_mode():  # in turns, so that load bursts hit both alike
        fns = {"predict": lambda: method.predict(test), "forward": lambda: extractor(test)}
        t = best_times(fns, repeats)
    predict, forward = t["predict"].cpu, t["forward"].cpu
    return {
        "fit_ms_per_support_image": 1e3 * fit / k,
        "predict_ms_per_image": 1e3 * predict / n_test,
        "forward_ms_per_image": 1e3 * forward / n_test,
        "predict_over_forward": predict / forward,
        "bank": float(method.provenance()["bank"]),
    }


@pytest.mark.benchmark(group="patchcore")
@pytest.mark.parametrize("backbone", BACKBONES)
def test_patchcore_fit_predict(benchmark, backbone: str) -> None:
    feature_cache_off()
    try:
        cached_feature_extractor(backbone, "pretrained", None, "cpu")
    except WeightsError as exc:
        pytest.skip(str(exc))
    support, test = tiny_normals(K, SIZE, seed=0), tiny_normals(N_TEST, SIZE, seed=1)
    method = PatchCore(backbone=backbone)

    def fit_predict() -> object:
        method.fit(support)
        with torch.inference_mode():
            return method.predict(test)

    benchmark.pedantic(fit_predict, rounds=3, iterations=1, warmup_rounds=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(bench_parser(__doc__), argv)
    k, size, n_test = (SMOKE_K, SMOKE_SIZE, SMOKE_TEST) if args.smoke else (K, SIZE, N_TEST)
    backbones = BACKBONES[:1] if args.smoke else BACKBONES
    threads = torch.get_num_threads()
    print(f"PatchCore K={k} at {size} px, {n_test} test images in one batch, feature cache off")
    print(f"torch {torch.__version__}, {threads} thread(s), best of {args.repeats}")
    print(
        f"{'backbone':20s} {'fit ms/img':>10s} {'predict ms/img':>14s} {'forward ms/img':>14s} "
        f"{'predict/forward':>15s} {'bank':>6s}"
    )
    for backbone in backbones:
        try:
            m = measure(backbone, args.repeats, k, size, n_test)
        except WeightsError as exc:
            print(f"{backbone:20s} skipped: {exc}")
            continue
        print(
            f"{backbone:20s} {m['fit_ms_per_support_image']:10.1f} "
            f"{m['predict_ms_per_image']:14.1f} {m['forward_ms_per_image']:14.1f} "
            f"{m['predict_over_forward']:15.2f} {m['bank']:6.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
