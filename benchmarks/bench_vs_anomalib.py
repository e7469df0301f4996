"""Ours against anomalib 2.7 in one process on the same inputs: AUPRO, coreset, PatchCore predict.

python benchmarks/bench_vs_anomalib.py [--threads N] [--repeats R] [--skip-coreset] [--smoke]
pytest benchmarks/bench_vs_anomalib.py --benchmark-enable     (pytest-benchmark tables)

anomalib is not a dependency of the main venv (it pulls lightning, torchmetrics, OpenCV and more,
which could move pinned versions); install it in a separate venv as docs/performance.md says.
Without it, only our columns are measured (one line says so). Exits 1 when a measured
target is missed (with --smoke, which measures nothing, only when the AUPRO values differ).
Targets: AUPRO >= 4x faster with |difference| <= 1e-6; coreset >= 3x faster for the same
selection size; PatchCore predict <= 1.3x the backbone forward pass alone. Ratios are of process
CPU time, best of the repeats (benchmarks/cputime.py says why); run it with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bench_aupro import N_MAPS, SIZE, realistic_data
from cputime import Timing, bench_parser, best_time, best_times, feature_cache_off, parse_bench_args
from tabulate import tabulate

from fsad_bench.features.backbones import cached_feature_extractor, create_classifier
from fsad_bench.metrics import aupro
from fsad_bench.testing.data import tiny_normals
from fsad_methods.patchcore.core import greedy_coreset
from fsad_methods.patchcore.plugin import PatchCore

LIMIT = 0.3
BANK_ROWS, BANK_DIM, CORESET_RATIO = 50_000, 1024, 0.1
OUR_PROJECTION = 128  # PatchCore's default projection_dim
ANOMALIB_EPS = 0.9  # KCenterGreedy's SparseRandomProjection(eps=0.9)
K, IMAGE_SIZE, N_TEST = 8, 256, 16
LITE0, LITE0_TIMM, LITE0_LAYERS = "efficientnet_lite0", "tf_efficientnet_lite0", [2, 3]


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: the measured ones, or tiny ones for --smoke."""

    n_maps: int = N_MAPS
    map_size: int = SIZE
    bank_rows: int = BANK_ROWS
    k: int = K
    image_size: int = IMAGE_SIZE
    n_test: int = N_TEST


SMOKE = Sizes(n_maps=4, map_size=64, bank_rows=2000, k=2, image_size=64, n_test=2)


@dataclass
class Row:
    """One line of the table; ``theirs`` is None when anomalib is missing."""

    measure: str
    ours: float
    theirs: float | None
    target: str = ""
    met: bool | None = None
    ours_wall: float | None = None
    theirs_wall: float | None = None


def time_row(
    measure: str,
    ours: Timing,
    theirs: Timing | None,
    scale: float,
    target: str = "",
    min_ratio: float = 0.0,
) -> Row:
    """A row of CPU times (wall times beside them), ``scale`` converting seconds to its unit."""
    met = None if theirs is None or not min_ratio else theirs.cpu / ours.cpu >= min_ratio
    return Row(
        measure,
        ours.cpu * scale,
        None if theirs is None else theirs.cpu * scale,
        target,
        met,
        ours.wall * scale,
        None if theirs is None else theirs.wall * scale,
    )


def load_anomalib() -> SimpleNamespace | None:
    """The three anomalib pieces compared here, or None (with the reason printed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # anomalib warns about its own deprecations
            import anomalib
            from anomalib.metrics.aupro import _AUPRO
            from anomalib.models.components.sampling import KCenterGreedy, k_center_greedy
            from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError as exc:
        print(f"anomalib not importable ({exc}): anomalib columns skipped; see docs/performance.md")
        return None
    k_center_greedy.tqdm = lambda iterable, **_: iterable  # no progress bar in the table
    return SimpleNamespace(
        version=anomalib.__version__,
        AUPRO=_AUPRO,
        KCenterGreedy=KCenterGreedy,
        PatchcoreModel=PatchcoreModel,
    )


# --- (a) AUPRO ----------------------------------------------------------------------------


def anomalib_aupro(lib: SimpleNamespace, maps: torch.Tensor, masks: torch.Tensor) -> float:
    """anomalib's AUPRO as its evaluator runs it: update with the whole set, then compute."""
    metric = lib.AUPRO(fpr_limit=LIMIT)
    metric.update(maps, masks)
    return float(metric.compute())


def aupro_rows(lib: SimpleNamespace | None, repeats: int, sizes: Sizes = Sizes()) -> list[Row]:
    maps, masks = realistic_data(n_maps=sizes.n_maps, size=sizes.map_size)
    ours_value = aupro(maps, masks, LIMIT)
    ours = best_time(lambda: aupro(maps, masks, LIMIT), repeats)
    print(f"(a) AUPRO on {sizes.n_maps} maps of {sizes.map_size}x{sizes.map_size}, "
          f"{int(masks.sum())} defect pixels")  # fmt: skip
    print(f"    ours     {ours_value:.12f}  {ours}")
    if lib is None:
        return [time_row("AUPRO (ms)", ours, None, 1e3, ">= 4x faster")]
    t_maps, t_masks = torch.from_numpy(maps), torch.from_numpy(masks.astype(np.uint8))
    theirs_value = anomalib_aupro(lib, t_maps, t_masks)
    theirs = best_time(lambda: anomalib_aupro(lib, t_maps, t_masks), repeats)
    diff = abs(ours_value - theirs_value)
    # anomalib keeps fpr_limit in a float32 buffer: it integrates up to float32(0.3)
    limit32 = float(np.float32(LIMIT))
    diff32 = abs(aupro(maps, masks, limit32) - theirs_value)
    print(f"    anomalib {theirs_value:.12f}  {theirs}")
    print(
        f"    |ours - anomalib| = {diff:.2e}; with our limit at float32(0.3) = {limit32!r}: "
        f"{diff32:.2e} (the rest is anomalib's float32 cumsum/trapz)"
    )
    return [
        time_row("AUPRO (ms)", ours, theirs, 1e3, ">= 4x faster", 4.0),
        Row("AUPRO |ours - anomalib|", diff, 0.0, "<= 1e-6", diff <= 1e-6),
    ]


# --- (b) coreset --------------------------------------------------------------------------


def johnson_lindenstrauss_dim(n_samples: int, eps: float = ANOMALIB_EPS) -> int:
    """The projection size anomalib's KCenterGreedy picks (sklearn's JL bound)."""
    return int(4 * math.log(n_samples) / (eps**2 / 2 - eps**3 / 3))


def random_bank(rows: int = BANK_ROWS, dim: int = BANK_DIM, seed: int = 0) -> torch.Tensor:
    """Gaussian features with per-channel scales: no structure a method could exploit."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=g) * (0.5 + torch.rand(dim, generator=g))


def ours_coreset(bank: torch.Tensor, n_select: int, projection_dim: int) -> torch.Tensor:
    return greedy_coreset(bank, n_select, projection_dim, torch.Generator().manual_seed(0))


def anomalib_coreset(lib: SimpleNamespace, bank: torch.Tensor, ratio: float) -> list[int]:
    torch.manual_seed(0)  # its projection and first point come from the global RNG
    return lib.KCenterGreedy(embedding=bank, sampling_ratio=ratio).select_coreset_idxs()


def coreset_rows(lib: SimpleNamespace | None, repeats: int, rows: int = BANK_ROWS) -> list[Row]:
    bank = random_bank(rows)
    n_select = int(rows * CORESET_RATIO)  # anomalib's int(); ours would take the ceil
    jl_dim = johnson_lindenstrauss_dim(rows)
    print(f"(b) coreset: {rows} x {BANK_DIM} float32 bank -> {n_select} points")
    times = {}
    for dim in (OUR_PROJECTION, jl_dim):
        times[dim] = best_time(lambda d=dim: ours_coreset(bank, n_select, d), repeats)
        print(f"    ours, {dim}-d Gaussian projection   {times[dim]}")
    theirs = None
    if lib is not None:
        sampler = lib.KCenterGreedy(embedding=bank, sampling_ratio=CORESET_RATIO)
        assert sampler.coreset_size == n_select, "anomalib would select another number of points"
        theirs = best_time(lambda: anomalib_coreset(lib, bank, CORESET_RATIO), repeats)
        print(f"    anomalib, {jl_dim}-d sparse projection {theirs}")
    return [
        time_row(f"coreset, ours {dim}-d{note} (s)", times[dim], theirs, 1, ">= 3x faster", 3.0)
        for dim, note in ((OUR_PROJECTION, " (default)"), (jl_dim, " (= anomalib's)"))
    ]


# --- (c) PatchCore predict ----------------------------------------------------------------


def lite0_anomalib_model(lib: SimpleNamespace) -> torch.nn.Module:
    """anomalib's PatchCore on timm's Lite0, given exactly our (package) Lite0 weights."""
    model = lib.PatchcoreModel(
        layers=LITE0_LAYERS, backbone=LITE0_TIMM, pre_trained=False, num_neighbors=1
    )
    full = create_classifier(LITE0)[0].body.state_dict()  # our strict loader, no download
    timm_model = model.feature_extractor.feature_extractor
    timm_model.load_state_dict({k: full[k] for k in timm_model.state_dict()}, strict=True)
    return model


def anomalib_fit(model: torch.nn.Module, support: torch.Tensor) -> None:
    """anomalib's training step and coreset subsampling, as its Lightning module runs them."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(support)
    model.subsample_embedding(CORESET_RATIO)
    model.eval()


def patchcore_rows(lib: SimpleNamespace | None, repeats: int, sizes: Sizes = Sizes()) -> list[Row]:
    support = tiny_normals(sizes.k, sizes.image_size, seed=0)
    test = tiny_normals(sizes.n_test, sizes.image_size, seed=1)
    extractor, _ = cached_feature_extractor(LITE0, "pretrained", None, "cpu")
    feature_cache_off()
    torch.manual_seed(0)
    method = PatchCore()
    method.fit(support)
    fns = {"predict": lambda: method.predict(test), "forward": lambda: extractor(test)}
    if lib is not None:
        model = lite0_anomalib_model(lib)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecated argument it passes itself
            anomalib_fit(model, extractor.normalise(support))  # it expects normalised input
        normalised = extractor.normalise(test)
        fns["their predict"] = lambda: model(normalised)
        fns["their forward"] = lambda: model.feature_extractor(normalised)
    with torch.inference_mode():
        t = best_times(fns, repeats)
    print(
        f"(c) PatchCore Lite0, K={sizes.k} at {sizes.image_size} px, batch of {sizes.n_test} "
        "test images, feature cache off, measured in turns"
    )
    print(f"    ours: predict {t['predict']}, backbone forward {t['forward']} per batch")
    their_predict, their_forward, their_ratio = t.get("their predict"), t.get("their forward"), None
    if their_predict is not None and their_forward is not None:
        their_ratio = their_predict.cpu / their_forward.cpu
        print(f"    anomalib: predict {their_predict}, backbone forward {their_forward} per batch")
        with torch.inference_mode():
            ours_f, theirs_f = extractor(test), model.feature_extractor(normalised).values()
            gap = max(float((a - b).abs().max()) for a, b in zip(ours_f, theirs_f, strict=True))
        print(f"    same weights: max |our features - anomalib's features| = {gap:.1e}")
    ratio = t["predict"].cpu / t["forward"].cpu
    per_image = 1e3 / sizes.n_test
    return [
        time_row("PatchCore predict (ms/img)", t["predict"], their_predict, per_image),
        time_row("backbone forward alone (ms/img)", t["forward"], their_forward, per_image),
        Row("predict / forward", ratio, their_ratio, "<= 1.3 (ours)", ratio <= 1.3),
    ]


# --- table ----------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    """CPU times; anomalib/ours is the speed-up (not shown for the AUPRO difference row)."""
    lines = []
    for r in rows:
        ratio = "" if r.theirs is None or not r.ours or "|" in r.measure else r.theirs / r.ours
        met = {None: "", True: "yes", False: "NO"}[r.met]
        theirs = "not installed" if r.theirs is None else r.theirs
        walls = "" if r.ours_wall is None else f"{r.ours_wall:.3g}"
        if r.theirs_wall is not None:
            walls += f" / {r.theirs_wall:.3g}"
        lines.append([r.measure, r.ours, theirs, ratio, r.target, met, walls])
    header = ["measure (CPU time)", "ours", "anomalib", "anomalib/ours", "target", "met"]
    return tabulate(lines, [*header, "wall: ours / anomalib"], floatfmt=".3g")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)  # --repeats: AUPRO and PatchCore
    parser.add_argument("--coreset-repeats", type=int, default=1)
    parser.add_argument("--bank-rows", type=int, default=BANK_ROWS, help="coreset bank size")
    parser.add_argument("--skip-coreset", action="store_true", help="the slowest part")
    args = parse_bench_args(parser, argv)
    sizes = SMOKE if args.smoke else Sizes(bank_rows=args.bank_rows)
    lib = load_anomalib()
    version = lib.version if lib else "not installed"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); anomalib {version}")
    rows = aupro_rows(lib, args.repeats, sizes)
    if not args.skip_coreset:
        rows += coreset_rows(lib, 1 if args.smoke else args.coreset_repeats, sizes.bank_rows)
    rows += patchcore_rows(lib, args.repeats, sizes)
    print()
    print(table(rows))
    missed = [r for r in rows if r.met is False and (not args.smoke or "|" in r.measure)]
    return 1 if missed else 0


# --- pytest-benchmark: the same pieces at sizes that keep a run short --------------------------


@pytest.fixture(scope="module")
def lib() -> SimpleNamespace:
    loaded = load_anomalib()
    if loaded is None:
        pytest.skip("anomalib is not installed (separate venv, see docs/performance.md)")
    return loaded


@pytest.fixture(scope="module")
def aupro_data() -> tuple[np.ndarray, np.ndarray]:
    return realistic_data()


def test_aupro_equals_anomalib(lib: SimpleNamespace, aupro_data) -> None:
    maps, masks = aupro_data
    theirs = anomalib_aupro(lib, torch.from_numpy(maps), torch.from_numpy(masks.astype(np.uint8)))
    assert abs(aupro(maps, masks, LIMIT) - theirs) <= 1e-6


@pytest.mark.benchmark(group="vs_anomalib_aupro")
def test_aupro_anomalib(benchmark, lib: SimpleNamespace, aupro_data) -> None:
    maps, masks = torch.from_numpy(aupro_data[0]), torch.from_numpy(aupro_data[1].astype(np.uint8))
    benchmark.pedantic(anomalib_aupro, args=(lib, maps, masks), rounds=3, iterations=1)


@pytest.mark.benchmark(group="vs_anomalib_coreset")
def test_coreset_ours(benchmark) -> None:
    bank = random_bank(10_000)
    dim = johnson_lindenstrauss_dim(len(bank))
    benchmark.pedantic(ours_coreset, args=(bank, 1000, dim), rounds=1, iterations=1)


@pytest.mark.benchmark(group="vs_anomalib_coreset")
def test_coreset_anomalib(benchmark, lib: SimpleNamespace) -> None:
    bank = random_bank(10_000)
    benchmark.pedantic(anomalib_coreset, args=(lib, bank, CORESET_RATIO), rounds=1, iterations=1)


if __name__ == "__main__":
    sys.exit(main())
