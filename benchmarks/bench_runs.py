"""Whole runs: what the feature cache saves, and peak memory on a full-size category.

    OMP_NUM_THREADS=1 python benchmarks/bench_runs.py cache    # PatchCore + PaDiM, quick protocol
    OMP_NUM_THREADS=1 python benchmarks/bench_runs.py memory   # one MVTec-sized category

Options: --repeats R (best of R runs, each into a fresh folder), --smoke (one small episode).

Prints figures; asserts nothing about speed (the machine decides that).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from cputime import bench_parser, parse_bench_args
from PIL import Image

from fsad_bench.features import cache as feature_cache
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records


def timed_run(
    options: dict, cache_mb: float, repeats: int = 1
) -> tuple[float, feature_cache.FeatureCache, list]:
    """Best of ``repeats`` runs in this process, each into a fresh folder with an empty cache
    of ``cache_mb`` (0 = off): seconds, the last run's cache and records."""
    best = float("inf")
    os.environ[feature_cache.ENV] = str(cache_mb)
    for repeat in range(repeats):
        out = f"{options['out']}-{repeat}"
        feature_cache.process_cache().clear()  # every repeat starts cold
        start = time.perf_counter()
        run(build_run_config({**options, "out": out}), log=lambda line: print("  " + line))
        best = min(best, time.perf_counter() - start)
    return best, feature_cache.process_cache(), read_records(out)


def bench_cache(repeats: int, smoke: bool) -> None:
    """synthetic_quick (brick + pill, K = 1, 4, seed 0) with PatchCore and PaDiM."""
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for label, mb in (("off", 0.0), ("on", feature_cache.DEFAULT_MB)):
            options = {"protocol": "synthetic_quick", "methods": "patchcore,padim",
                       "out": str(Path(tmp) / label)}  # fmt: skip
            if smoke:
                options.update(categories="brick", shots="1")
            seconds, cache, records = timed_run(options, mb, repeats)
            figures[label] = (seconds, cache, {r.result_key: r.metrics for r in records})
        (cold_s, _, cold), (warm_s, cache, warm) = figures["off"], figures["on"]
        print(f"\nsynthetic_quick, patchcore + padim, {len(cold)} episodes, best of {repeats}")
        print(f"cache off: {cold_s:6.1f} s")
        print(f"cache on:  {warm_s:6.1f} s  ({cold_s / warm_s:.2f}x; {cache.hits} batch hits, "
              f"{cache.misses} misses, {cache.bytes / 2**20:.0f} MB held)")  # fmt: skip
        print(f"same metrics: {cold == warm}")


def write_category(root: Path, train: int, good: int, bad: int, side: int) -> None:
    """An MVTec-layout category of random-texture images at MVTec's full resolution."""
    rng = np.random.default_rng(0)
    category = root / "big"

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR).save(path)

    for i in range(train):
        image(category / "train" / "good" / f"{i:03d}.png")
    for i in range(good):
        image(category / "test" / "good" / f"{i:03d}.png")
    for i in range(bad):
        image(category / "test" / "defect" / f"{i:03d}.png")
        mask = np.zeros((side, side), np.uint8)
        mask[side // 4 : side // 2, side // 4 : side // 2] = 255
        path = category / "ground_truth" / "defect" / f"{i:03d}_mask.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path)


def bench_memory(repeats: int, smoke: bool) -> None:
    """The largest MVTec AD test set (pill: 26 good + 141 defective = 167) at 1024 px."""
    train, good, bad, side = (8, 2, 2, 64) if smoke else (60, 26, 141, 1024)
    with tempfile.TemporaryDirectory() as tmp:
        write_category(Path(tmp) / "data", train=train, good=good, bad=bad, side=side)
        for method in ("patchcore", "padim"):
            options = {"data_root": str(Path(tmp) / "data"), "layout": "mvtec",
                       "methods": method, "shots": "8", "seeds": "0",
                       "out": str(Path(tmp) / method)}  # fmt: skip
            seconds, _, records = timed_run(options, feature_cache.DEFAULT_MB, repeats)
            timing = records[0].timing
            print(f"{method}: {good + bad} test images of {side} px at 256 px, K=8: peak RSS "
                  f"{timing['peak_mem_mb']:.0f} MB, {seconds:.0f} s, predict "
                  f"{timing['predict_ms_per_image']:.0f} ms/image")  # fmt: skip


def main(argv: list[str]) -> None:
    parser = bench_parser(__doc__, repeats=1)
    benches = {"cache": bench_cache, "memory": bench_memory}
    parser.add_argument("what", nargs="?", default="cache", choices=sorted(benches))
    args = parse_bench_args(parser, argv)
    benches[args.what](args.repeats, args.smoke)


if __name__ == "__main__":
    main(sys.argv[1:])
