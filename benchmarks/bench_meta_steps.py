"""Cost of one meta-training step of RIAD, Meta-RIAD (second- and first-order) and AnoGrad.

Each method is built with its plugin defaults (input size, width, batch sizes) on random
images of the default internal size; the step is the unit its meta_fit repeats.

pytest benchmarks/bench_meta_steps.py --benchmark-enable     (pytest-benchmark tables)
python benchmarks/bench_meta_steps.py [--threads N] [--repeats R] [--smoke]   (timings, MAML ratio)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from cputime import bench_parser, best_time, parse_bench_args

from fsad_methods.anograd.core import ConvAutoencoder, ReferenceGradient, train_gradcon
from fsad_methods.anograd.plugin import AnoGradParams
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.unet import UNet
from fsad_methods.meta_riad.core import meta_train
from fsad_methods.meta_riad.plugin import MetaRIAD
from fsad_methods.riad.core import train_inpainting
from fsad_methods.riad.plugin import RIADParams

N_CATEGORIES, N_IMAGES = 5, 24  # the synthetic protocol's meta-train set


def images(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"c{i}": torch.rand(N_IMAGES, 3, size, size, generator=g) for i in range(N_CATEGORIES)}


def riad_step() -> Callable[[], object]:
    p = RIADParams()  # the plugin's defaults
    net, data = UNet(p.width), torch.cat(list(images(p.input_size).values()))
    g = torch.Generator().manual_seed(0)
    loss = ReconstructionLoss()

    def step() -> object:
        return train_inpainting(
            net,
            data,
            steps=1,
            lr=p.pretrain_lr,
            batch_size=p.batch_size,
            cells=p.cells,
            n_masks=p.n_masks,
            loss_fn=loss,
            generator=g,
        )

    return step


def meta_riad_step(first_order: bool) -> Callable[[], object]:
    method = MetaRIAD(first_order=first_order)
    config = replace(method.meta_config(), iterations=1)
    net, data = UNet(method.params.width), images(method.params.input_size)
    g, loss = torch.Generator().manual_seed(0), ReconstructionLoss()
    return lambda: meta_train(net, loss, data, config, g)


def anograd_step() -> Callable[[], object]:
    p = AnoGradParams()  # the plugin's defaults
    model, reference = ConvAutoencoder(p.width), ReferenceGradient()
    data = torch.cat(list(images(p.input_size).values()))
    g = torch.Generator().manual_seed(0)

    def step() -> object:  # after the first call the gradient term (double backward) is on
        return train_gradcon(
            model,
            data,
            reference,
            steps=1,
            lr=p.pretrain_lr,
            batch_size=p.batch_size,
            alpha=p.alpha,
            generator=g,
        )

    return step


STEPS: dict[str, Callable[[], Callable[[], object]]] = {
    "riad pretraining step": riad_step,
    "meta_riad second-order step": lambda: meta_riad_step(False),
    "meta_riad first-order step": lambda: meta_riad_step(True),
    "anograd training step": anograd_step,
}


@pytest.mark.benchmark(group="meta_steps")
@pytest.mark.parametrize("name", list(STEPS))
def test_meta_step(benchmark, name: str) -> None:
    step = STEPS[name]()
    step()
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(bench_parser(__doc__), argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); best of {args.repeats}")
    seconds = {}
    for name, build in STEPS.items():
        # two warm-up calls: torch.func and oneDNN set themselves up on the first calls
        seconds[name] = best_time(build(), args.repeats, warmup=0 if args.smoke else 2).wall
        print(f"{name:30s} {seconds[name] * 1e3:9.1f} ms")
    second, first = seconds["meta_riad second-order step"], seconds["meta_riad first-order step"]
    print(f"meta_riad: second-order / first-order = {second / first:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
