"""Speed and agreement of AP and F1-max against scikit-learn, image and pixel level.

python benchmarks/bench_pr_metrics.py [--threads N] [--repeats R] [--smoke]

Pixel metrics run on bench_aupro's 100 maps of 256x256 (6.5M pixels, float32); sklearn gets
the flattened arrays. Image metrics run on 200 per-image scores. Each line prints our CPU
time, sklearn's, their ratio and the largest |difference| of the values. Exit status 1 when
a difference exceeds 1e-12. Last, the peak memory each pixel metric allocates.
"""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable

import numpy as np
from bench_aupro import realistic_data
from cputime import bench_parser, best_times, parse_bench_args
from sklearn.metrics import average_precision_score, precision_recall_curve

from fsad_bench.metrics import image_ap, image_f1_max, pixel_ap, pixel_f1_max

N_IMAGES, TOLERANCE = 200, 1e-12


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(f1.max())


def image_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About 40% anomalous images, scores shifted by one standard deviation."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    return labels, rng.standard_normal(n) + labels


def compare(
    name: str,
    ours: Callable[[], float],
    theirs: Callable[[], float],
    repeats: int,
) -> float:
    """Print one line of timings and the |difference|; return the difference."""
    timing = best_times({"ours": ours, "sklearn": theirs}, repeats)
    difference = abs(ours() - theirs())
    mine, sk = timing["ours"], timing["sklearn"]
    print(
        f"{name:13s} ours cpu {mine.cpu * 1e3:8.2f} ms (wall {mine.wall * 1e3:8.2f})  "
        f"sklearn cpu {sk.cpu * 1e3:8.2f} ms (wall {sk.wall * 1e3:8.2f})  "
        f"sklearn/ours {sk.cpu / max(mine.cpu, 1e-9):6.1f}x  |difference| {difference:.1e}"
    )
    return difference


def peak_bytes(fn: Callable[[], object]) -> int:
    """Largest memory numpy and Python allocated during one call."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(bench_parser(__doc__), argv)
    repeats = args.repeats
    maps, masks = realistic_data(n_maps=4, size=64) if args.smoke else realistic_data()
    labels, scores = image_data(20 if args.smoke else N_IMAGES)
    flat_masks, flat_maps = masks.ravel(), maps.ravel()
    print(
        f"pixels: {len(maps)} maps of {maps.shape[1]}x{maps.shape[2]} ({maps.dtype}), "
        f"{int(masks.sum())} defect pixels; images: {labels.size}, {int(labels.sum())} anomalous"
    )
    differences = [
        compare(
            "pixel_ap",
            lambda: pixel_ap(masks, maps),
            lambda: float(average_precision_score(flat_masks, flat_maps)),
            repeats,
        ),
        compare(
            "pixel_f1_max",
            lambda: pixel_f1_max(masks, maps),
            lambda: sklearn_f1_max(flat_masks, flat_maps),
            repeats,
        ),
        compare(
            "image_ap",
            lambda: image_ap(labels, scores),
            lambda: float(average_precision_score(labels, scores)),
            repeats,
        ),
        compare(
            "image_f1_max",
            lambda: image_f1_max(labels, scores),
            lambda: sklearn_f1_max(labels, scores),
            repeats,
        ),
    ]
    for name, metric in (("pixel_ap", pixel_ap), ("pixel_f1_max", pixel_f1_max)):
        peak = peak_bytes(lambda metric=metric: metric(masks, maps))
        print(f"{name:13s} peak allocation {peak / 2**20:.1f} MiB = {peak / maps.nbytes:.2f}x maps")
    return 0 if max(differences) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
