"""Two implementations of one method on the same episodes: the built-in plugin vs anomalib's.

python scripts/cross_implementation.py [--protocol synthetic_loo] [--data-root DIR]
    [--shots 1,2,4,8] [--seeds 0,1,2] [--pairs patchcore,padim] [--out runs/cross_impl]
    [--smoke]

Plays ``patchcore`` beside ``anomalib.patchcore`` and ``padim`` beside ``anomalib.padim``
through the normal runner (same episodes, supports, image size, batches), with settings
matched: EfficientNet-Lite0 with its TF normalisation on both sides, the same stages
(PatchCore 2+3, PaDiM 1+2+3), 3x3 neighbourhood averaging that counts the zero padding
(anomalib's AvgPool2d, our count_padding=True), coreset ratio 0.1, image score = largest
patch distance (anomalib's num_neighbors=1 turns its re-weighting off), 100 PaDiM channels,
covariance + 0.01 I, maps upsampled and blurred with sigma 4. What stays different is
listed in methods/anomalib_bridge/README.md (the random projection for the coreset and
which 100 PaDiM channels are drawn). Prints mean image and pixel AUROC per K side by side
and marks gaps above 0.02 (image) and 0.01 (pixel). Records stay in --out (resumable).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

from tabulate import tabulate

from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records

PAIRS: dict[str, tuple[str, dict, str, dict]] = {
    "patchcore": (
        "patchcore",
        {"backbone": "efficientnet_lite0", "coreset_ratio": 0.1, "num_neighbours": 1,
         "count_padding": True},
        "anomalib.patchcore",
        {"backbone": "efficientnet_lite0", "layers": [2, 3],
         "model_args": {"coreset_sampling_ratio": 0.1, "num_neighbors": 1}},
    ),
    "padim": (
        "padim",
        {"backbone": "efficientnet_lite0", "layers": [1, 2, 3], "d": 100, "covariance": "eps",
         "eps": 0.01},
        "anomalib.padim",
        {"backbone": "efficientnet_lite0", "layers": [1, 2, 3],
         "model_args": {"n_features": 100}},
    ),
}  # fmt: skip
GAP = {"image_auroc": 0.02, "pixel_auroc": 0.01}


def _means(records: list, spec: str, metric: str) -> dict[int, str]:
    """Mean over categories and seeds per K; 'failed n/N' when episodes failed."""
    by_k: dict[int, list] = defaultdict(list)
    for record in records:
        if record.method.label == spec:
            by_k[record.k].append(record)
    out = {}
    for k, group in sorted(by_k.items()):
        values = [r.metrics.get(metric) for r in group if r.status == "ok"]
        values = [v for v in values if v is not None and not math.isnan(v)]
        failed = sum(r.status != "ok" for r in group)
        out[k] = f"{mean(values):.3f}" if values and not failed else f"failed {failed}/{len(group)}"
    return out


def _gap(a: str, b: str, limit: float) -> str:
    try:
        diff = float(b) - float(a)
    except ValueError:
        return "-"
    return f"{diff:+.3f}" + (" !" if abs(diff) > limit else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="synthetic_loo")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--shots", default="1,2,4,8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pairs", default="patchcore,padim")
    parser.add_argument("--out", default="runs/cross_impl")
    parser.add_argument("--smoke", action="store_true", help="synthetic_quick, K=4, seed 0")
    args = parser.parse_args(argv)
    if args.smoke:
        args.protocol, args.shots, args.seeds = "synthetic_quick", "4", "0"
    pairs = [PAIRS[name] for name in args.pairs.split(",")]
    methods = [spec for ours, _, theirs, _ in pairs for spec in (ours, theirs)]
    params = {ours: p for ours, p, _, _ in pairs} | {theirs: q for _, _, theirs, q in pairs}
    options = {
        "protocol": args.protocol,
        "data_root": args.data_root,
        "methods": methods,
        "params": params,
        "shots": args.shots,
        "seeds": args.seeds,
        "out": args.out,
    }
    summary = run(build_run_config(options), log=print)
    print(summary)
    records = read_records(Path(args.out) / "records.jsonl")
    rows = []
    for ours, _, theirs, _ in pairs:
        for metric in GAP:
            a, b = _means(records, ours, metric), _means(records, theirs, metric)
            for k in sorted(set(a) | set(b)):
                va, vb = a.get(k, "-"), b.get(k, "-")
                rows.append([ours, metric, k, va, vb, _gap(va, vb, GAP[metric])])
    print(f"{args.protocol}, K={args.shots}, seeds {args.seeds} (mean over categories and seeds)")
    print(tabulate(rows, headers=["method", "metric", "K", "ours", "anomalib", "gap (!: large)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
