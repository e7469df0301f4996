"""The anomalib bridge against anomalib's own Engine: one episode's fit + predict, CPU time.

python benchmarks/bench_bridge_vs_engine.py [--models stfpm,padim,patchcore] [--k 8]
    [--n-test 16] [--repeats R] [--threads N] [--smoke]

Both sides build the same anomalib model (``build.build_module``: same backbone weights,
same pre-processor, no post-processor) on the same K support images and score the same test
images. The bridge trains it with ``training.train`` and predicts with the torch model; the
Engine runs ``Engine.fit`` (a Lightning Trainer, its callbacks and checkpoint) and
``Engine.predict`` on DataLoaders of anomalib ``ImageItem``s. Ratios are of process CPU time
(benchmarks/cputime.py says why), best of the repeats, measured in turns; run it with
OMP_NUM_THREADS=1. Exits 1 when a ratio bridge/Engine is above the target 0.8 (not with
--smoke, which measures nothing).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Callable

import torch
from cputime import Timing, bench_parser, best_times, feature_cache_off, parse_bench_args
from tabulate import tabulate

from fsad_bench.registry import resolve
from fsad_bench.run.seeding import seed_everything
from fsad_bench.testing.data import tiny_normals

TARGET = 0.8
EPOCHS = {"stfpm": 3}  # trained models: a few epochs, the same on both sides


def _bridge(model: str, support: torch.Tensor, test: torch.Tensor) -> Callable[[], object]:
    method = resolve(f"anomalib.{model}", {"epochs": EPOCHS.get(model)}).build()

    def run() -> object:
        seed_everything(0)
        method.fit(support)
        with torch.inference_mode():
            return method.predict(test)

    return run


def _loader(images: torch.Tensor, batch_size: int, shuffle: bool) -> object:
    from anomalib.data import ImageBatch, ImageItem
    from torch.utils.data import DataLoader

    items = [
        ImageItem(
            image=image,
            gt_label=torch.tensor(0),
            gt_mask=torch.zeros(image.shape[-2:], dtype=torch.uint8),
        )
        for image in images
    ]
    return DataLoader(items, batch_size=batch_size, shuffle=shuffle, collate_fn=ImageBatch.collate)


def _engine(model: str, support: torch.Tensor, test: torch.Tensor) -> Callable[[], object]:
    from anomalib.engine import Engine

    from fsad_methods.anomalib_bridge.build import build_module

    method = resolve(f"anomalib.{model}", {"epochs": EPOCHS.get(model)}).build()
    epochs = method._epochs()

    def run() -> object:
        seed_everything(0)
        module = build_module(method._recipe(support.shape[-1], len(support)))
        with tempfile.TemporaryDirectory() as root:
            engine = Engine(
                default_root_dir=root,
                max_epochs=epochs,
                accelerator="cpu",
                devices=1,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            engine.fit(module, train_dataloaders=_loader(support, 32, shuffle=True))
            return engine.predict(module, dataloaders=_loader(test, 32, shuffle=False))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, repeats=3)
    parser.add_argument("--models", default="stfpm,padim,patchcore")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=16)
    args = parse_bench_args(parser, argv)
    warnings.filterwarnings("ignore")
    feature_cache_off()
    size = 64 if args.smoke else 256
    k, n_test = (2, 2) if args.smoke else (args.k, args.n_test)
    support, test = tiny_normals(k, size), tiny_normals(n_test, size, seed=5)
    rows, missed = [], []
    for model in args.models.split(","):
        times: dict[str, Timing] = best_times(
            {"bridge": _bridge(model, support, test), "engine": _engine(model, support, test)},
            repeats=args.repeats,
        )
        ratio = times["bridge"].cpu / times["engine"].cpu
        rows.append([model, str(times["bridge"]), str(times["engine"]), f"{ratio:.2f}"])
        if ratio > TARGET:
            missed.append(model)
    print(f"K={k}, {n_test} test images, {size} px, best of {args.repeats}; target <= {TARGET}")
    print(tabulate(rows, headers=["model", "bridge fit+predict", "Engine fit+predict", "ratio"]))
    if missed and not args.smoke:
        print(f"target missed for: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
