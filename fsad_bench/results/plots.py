"""PNG figures of a run without a browser: the K-shot curve, per-category scores, and the
critical-difference diagram (matplotlib, Agg canvas: no display, no global pyplot state).

Colours are the Okabe-Ito palette, which stays distinguishable with the common colour
vision deficiencies; the leaderboard uses the same list.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from fsad_bench.identity import MEAN_ROW, METRICS, metric_label
from fsad_bench.results.compare import CriticalDifference
from fsad_bench.store import write_bytes_atomic

# Okabe & Ito (2008), "Color universal design": blue, orange, bluish green, vermillion, sky
# blue, reddish purple, black, and yellow last (faint on white)
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000",
             "#F0E442"]  # fmt: skip
DASHES = ["solid", "dashed", "dotted", "dashdot"]
PLOTS = "plots"
K_CURVE, PER_CATEGORY, CRITICAL = "k_curve.png", "per_category.png", "critical_difference.png"


def primary_metric(long: pd.DataFrame) -> str | None:
    """The first metric (in identity.METRICS order) with any value: what the figures show."""
    present = set(long.dropna(subset=["mean"])["metric"])
    return next((m for m in METRICS if m in present), None)


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _style(index: int) -> dict:
    """Colour first, then line style: eight methods by colour, more by colour and dash."""
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "linestyle": DASHES[(index // len(OKABE_ITO)) % len(DASHES)],
    }


def k_curve(long: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """Category mean vs K on a log-2 axis with integer ticks; band = ± std over seeds."""
    part = long[(long["category"] == MEAN_ROW) & (long["metric"] == metric)].dropna(subset=["mean"])
    if part.empty:
        return None
    figure = _figure(7.5, 4.5)
    axes = figure.add_subplot()
    for index, (method, rows) in enumerate(part.groupby("method", sort=True)):
        rows = rows.sort_values("k")
        ks = rows["k"].to_numpy(dtype=float)
        mean, std = rows["mean"].to_numpy(), rows["std"].fillna(0).to_numpy()
        style = _style(index)
        axes.plot(ks, mean, marker="o", label=str(method), **style)
        axes.fill_between(ks, mean - std, mean + std, color=style["color"], alpha=0.18, lw=0)
    ks = sorted(part["k"].unique())
    axes.set_xscale("log", base=2)
    axes.set_xticks(ks, [str(int(k)) for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("K (support images)")
    axes.set_ylabel(f"{metric_label(metric)}, category mean")
    axes.set_title(f"{metric_label(metric)} vs K (band: ± std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(figure, path)


def per_category(long: pd.DataFrame, metric: str, path: Path) -> Path | None:
    """One panel per K: each category's mean over seeds per method, with ± std bars."""
    part = long[(long["category"] != MEAN_ROW) & (long["metric"] == metric)].dropna(subset=["mean"])
    if part.empty:
        return None
    ks = sorted(part["k"].unique())
    methods = sorted(part["method"].unique())
    categories = sorted(part["category"].unique())
    width = max(7.5, 0.22 * len(categories) * len(methods) + 2.5)
    figure = _figure(width, 2.6 * len(ks) + 0.8)
    panels = figure.subplots(len(ks), 1, squeeze=False, sharex=True)[:, 0]
    bar = 0.8 / len(methods)
    x = np.arange(len(categories))
    for axes, k in zip(panels, ks, strict=True):
        at_k = part[part["k"] == k].set_index(["method", "category"])
        for index, method in enumerate(methods):
            rows = at_k.loc[method].reindex(categories) if method in at_k.index else None
            if rows is None:
                continue
            axes.bar(x + (index - (len(methods) - 1) / 2) * bar, rows["mean"], bar,
                     yerr=rows["std"].fillna(0), color=_style(index)["color"],
                     label=str(method), error_kw={"elinewidth": 0.8})  # fmt: skip
        axes.set_ylabel(f"K = {k}")
        axes.grid(axis="y", alpha=0.3)
        low = float(np.nanmin(at_k["mean"]))
        axes.set_ylim(max(0.0, low - 0.1) if low >= 0 else low - 0.1, None)
    panels[-1].set_xticks(x, categories, rotation=45, ha="right")
    panels[0].set_title(f"{metric_label(metric)} per held-out category (mean ± std over seeds)")
    panels[0].legend(loc="lower left", bbox_to_anchor=(0, 1.15), ncols=min(len(methods), 4),
                     frameon=False)  # fmt: skip
    return _save(figure, path)


def critical_difference(
    diagrams: Sequence[CriticalDifference], path: Path | BinaryIO
) -> Path | BinaryIO | None:
    """Demšar's diagram per K: mean ranks on an axis (1 = best, left), the critical
    difference as a bar, and a thick line under methods it cannot tell apart."""
    if not diagrams:
        return None
    heights = [1.6 + 0.22 * len(d.mean_ranks) for d in diagrams]
    figure = _figure(8.0, sum(heights))  # constrained: leaves room for names and titles
    panels = figure.subplots(len(diagrams), 1, squeeze=False, height_ratios=heights)[:, 0]
    for axes, diagram in zip(panels, diagrams, strict=True):
        _draw_cd(axes, diagram)
    return _save(figure, path)


def _draw_cd(axes, diagram: CriticalDifference) -> None:  # axes: matplotlib Axes
    """Ranks on top, the better half labelled left of the axis, the rest right of it."""
    ranks = diagram.mean_ranks
    n = len(ranks)
    ordered = sorted(ranks, key=ranks.get)
    half = (n + 1) // 2
    rows = max(half, n - half)
    axes.set_xlim(1, n)
    axes.set_ylim(-(rows + 0.8) * 0.5, 1.4)
    axes.axis("off")
    axes.hlines(0, 1, n, color="black", lw=1)
    for r in range(1, n + 1):
        axes.vlines(r, 0, 0.12, color="black", lw=1)
        axes.text(r, 0.18, str(r), ha="center", va="bottom", fontsize=8)
    for i, method in enumerate(ordered):
        left = i < half
        y = -0.5 * ((i if left else n - 1 - i) + 1)
        edge = 1 if left else n
        axes.plot([ranks[method], ranks[method], edge], [0, y, y], color="black", lw=0.8,
                  clip_on=False)  # fmt: skip
        label = f"{method} ({ranks[method]:.2f})" if left else f"({ranks[method]:.2f}) {method}"
        axes.annotate(label, (edge, y), xytext=(-4 if left else 4, 0), textcoords="offset points",
                      ha="right" if left else "left", va="center", fontsize=8,
                      annotation_clip=False)  # fmt: skip
    end = min(1 + diagram.cd, n)  # a CD longer than the axis: nothing is told apart
    axes.hlines(0.95, 1, end, color="black", lw=2)
    longer = " (longer than the axis)" if end < 1 + diagram.cd else ""
    axes.text((1 + end) / 2, 1.02, f"CD = {diagram.cd:.2f}{longer}", ha="center", va="bottom",
              fontsize=8)  # fmt: skip
    for level, group in enumerate(diagram.tied_groups()):
        low, high = ranks[group[0]], ranks[group[-1]]
        axes.hlines(-0.12 - 0.14 * level, low - 0.02, high + 0.02, color="black", lw=3)
    axes.set_title(
        f"{metric_label(diagram.metric)}, K = {diagram.k}: mean rank over "
        f"{diagram.n_categories} categories\n(Nemenyi, α = 0.05; Friedman p = "
        f"{diagram.friedman_p:.3g})",
        fontsize=9,
    )


def _save(figure, path: Path | BinaryIO) -> Path | BinaryIO:
    """To a file, atomically (a full disk leaves no torn PNG), or to a binary buffer (the
    leaderboard's image)."""
    if not isinstance(path, Path):
        figure.savefig(path, format="png")
        return path
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def write_plots(
    long: pd.DataFrame, diagrams: Sequence[CriticalDifference], metric: str, out_dir: Path
) -> list[Path]:
    """plots/k_curve.png, plots/per_category.png and, given diagrams, critical_difference.png."""
    folder = Path(out_dir) / PLOTS
    written = [
        k_curve(long, metric, folder / K_CURVE),
        per_category(long, metric, folder / PER_CATEGORY),
        critical_difference(diagrams, folder / CRITICAL),
    ]
    return [p for p in written if p is not None]
