"""PatchCore variants on ELPV, K=8: which principled change would lift mono, chosen on poly.

python benchmarks/elpv_patchcore_variants.py [--image-size 256] [--seeds 0,1,2] [--threads N]
    [--repeats R] [--smoke]   (--repeats is accepted for uniformity: the figures are AUROCs, not
    timings; --smoke: 64 px, seed 0, 16 normal + 16 defective test cells per category)

Issue 2 asks PatchCore (default Lite0 backbone) for image AUROC >= 0.88 on ELPV mono, K=8,
seeds 0-2. Picking a variant by its mono score would be choosing on the test set, so each
variant is judged on the *other* category (poly) and mono is only reported. The backbone's
stage features are computed once per image (test set, frozen K=8 supports and their flips)
and every variant reuses them with the plugin's own aggregation, coreset and faiss search;
"default" differs from `fsad-bench run` only in the coreset's random generator.
Needs the `elpv` extra. About 20 minutes on one core at 256 px, peak RSS 9.4 GB.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from cputime import bench_parser, parse_bench_args
from torch import Tensor

from fsad_bench.datasets import get_layout
from fsad_bench.datasets.io import load_category_tensors, load_image
from fsad_bench.features.backbones import create_feature_extractor
from fsad_bench.metrics import image_auroc
from fsad_bench.protocols.manifests import load_manifest, manifest_key
from fsad_bench.protocols.protocol import load_protocol
from fsad_methods.patchcore.core import FaissNearestNeighbours, aggregate_features, greedy_coreset

K = 8
COUNT_PADDING = [True]  # the plugin's default (1.1); --ignore-padding: version 1.0's average
STAGES = (1, 2, 3, 4)  # timm stage indices of Lite0: strides 4, 8, 16, 32
BATCH = 32
REWEIGHT_NEIGHBOURS = 9  # b in the PatchCore paper's eq. 7 (anomalib's default too)


def flips(x: Tensor) -> Tensor:
    return torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)])


def dihedral(x: Tensor) -> Tensor:
    turns = [torch.rot90(x, k, (2, 3)) for k in range(4)]
    return torch.cat(turns + [t.flip(-1) for t in turns])


AUGMENTATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "flips": flips,
    "dihedral": dihedral,
}


@dataclass(frozen=True)
class Variant:
    why: str
    stages: tuple[int, ...] = (2, 3)  # the plugin's default for Lite0
    augmentation: str = "none"
    neighbours: int = 1
    reweight: bool = False


VARIANTS = {
    "default": Variant("the plugin as shipped"),
    "reweight": Variant("the paper's eq. 7 image-score reweighting", reweight=True),
    "knn3": Variant("mean distance to 3 nearest memory patches", neighbours=3),
    "flips": Variant("support + its h/v flips (cells are mirror-symmetric)", augmentation="flips"),
    "dihedral": Variant("support + rotations and flips", augmentation="dihedral"),
    "s16": Variant("stride-16 stage only", stages=(3,)),
    "s16+s32": Variant("deeper stages", stages=(3, 4)),
    "s4+s8+s16": Variant("add the stride-4 stage", stages=(1, 2, 3)),
    "s8+s16+s32": Variant("add the stride-32 stage", stages=(2, 3, 4)),
}


class StageFeatures:
    """Raw backbone features of a batch of images, one tensor per stage index."""

    def __init__(self, extractor: torch.nn.Module, images: Tensor) -> None:
        with torch.inference_mode():
            parts = [extractor(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
        self.by_stage = {s: torch.cat([p[j] for p in parts]) for j, s in enumerate(STAGES)}

    def embed(self, stages: tuple[int, ...]) -> Tensor:
        """The plugin's embedding at the finest listed stage's resolution."""
        features = [self.by_stage[s] for s in sorted(stages)]
        return aggregate_features(features, count_padding=COUNT_PADDING[0])


def flat(embedding: Tensor) -> Tensor:
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]).contiguous()


def image_scores(support: Tensor, test: Tensor, variant: Variant, seed: int) -> np.ndarray:
    n, c, h, w = test.shape
    bank = flat(support)
    generator = torch.Generator().manual_seed(seed)
    bank = bank[greedy_coreset(bank, math.ceil(0.1 * len(bank)), 128, generator)].contiguous()
    search = FaissNearestNeighbours()
    search.fit(bank)
    queries = flat(test)
    patch = search.distances(queries, variant.neighbours).mean(dim=1).reshape(n, h * w)
    scores, where = patch.max(dim=1)
    if not variant.reweight:
        return scores.numpy()
    # eq. 7: damp the max patch's score when its nearest memory patch sits in a dense region
    worst = queries.reshape(n, h * w, c)[torch.arange(n), where]
    _, nearest = search.index.search(worst.numpy(), 1)
    _, around = search.index.search(bank[torch.from_numpy(nearest[:, 0])].numpy(),
                                    min(REWEIGHT_NEIGHBOURS, len(bank)))  # fmt: skip
    distances = torch.linalg.vector_norm(worst[:, None] - bank[torch.from_numpy(around)], dim=2)
    weight = 1 - torch.softmax(distances, dim=1)[:, 0]
    return (weight * scores).numpy()


def evaluate(
    category: str, size: int, seeds: list[int], extractor: torch.nn.Module, per_class: int = 0
) -> dict:
    """Image AUROC of every variant per seed; ``per_class`` > 0 keeps only that many normal
    and defective test cells (smoke runs)."""
    protocol = load_protocol("elpv_loo")
    frozen = load_manifest(protocol.manifest_path())
    cat = get_layout(protocol.layout).load_category(None, category, **protocol.layout_options)
    test = load_category_tensors(cat, size)
    keep = torch.arange(len(test.labels))
    if per_class:
        keep = torch.cat([torch.nonzero(test.labels == c)[:per_class, 0] for c in (0, 1)])
    labels = test.labels[keep].numpy()
    test_features = StageFeatures(extractor, test.images[keep])
    print(f"{category}: {len(labels)} test images, {int(labels.sum())} defective", flush=True)
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        entries = frozen[manifest_key(category, K, seed)]
        support = torch.stack([load_image(cat.root / e.path, size) for e in entries])
        augmented = {a: StageFeatures(extractor, f(support)) for a, f in AUGMENTATIONS.items()}
        for name, variant in VARIANTS.items():
            support_embedding = augmented[variant.augmentation].embed(variant.stages)
            test_embedding = test_features.embed(variant.stages)
            scores = image_scores(support_embedding, test_embedding, variant, seed)
            results[name].append(image_auroc(labels, scores))
        print(f"  seed {seed}: " + ", ".join(f"{n} {r[-1]:.3f}" for n, r in results.items()),
              flush=True)  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser(__doc__, repeats=1)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--ignore-padding", action="store_true", help="PatchCore 1.0's border average"
    )
    args = parse_bench_args(parser, argv)
    seeds = [0] if args.smoke else [int(s) for s in args.seeds.split(",")]
    COUNT_PADDING[0] = not args.ignore_padding
    size, per_class = (64, 16) if args.smoke else (args.image_size, 0)
    extractor, source = create_feature_extractor("efficientnet_lite0", "pretrained", STAGES)
    print(f"backbone: {source.describe()}; image size {size}; K={K}; seeds {seeds}")
    table = {c: evaluate(c, size, seeds, extractor, per_class) for c in ("poly", "mono")}
    print("\nimage AUROC, mean ± sample std over seeds (reproduced, pretrained Lite0)")
    print(f"{'variant':12s} {'poly (selects)':>16s} {'mono (reported)':>16s}  why")
    for name, variant in VARIANTS.items():
        cells = [f"{np.mean(table[c][name]):.3f} ± {np.std(table[c][name], ddof=1):.3f}"
                 for c in ("poly", "mono")]  # fmt: skip
        print(f"{name:12s} {cells[0]:>16s} {cells[1]:>16s}  {variant.why}")
    best = max(VARIANTS, key=lambda n: np.mean(table["poly"][n]))
    print(f"\nchosen on poly: {best}; its mono: {np.mean(table['mono'][best]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
