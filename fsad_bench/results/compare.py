"""Which differences between methods are real: paired tests over the same episodes.

Two methods played on the same protocol share their episodes (category x seed x K): the
same held-out category, the same K support images. Comparing them episode by episode
removes the spread that both share (a hard category, an unlucky support draw), which a
table of means cannot do. For each pair of methods, K and metric this module counts wins,
ties and losses, gives the mean difference with a bootstrap confidence interval (the
(category, seed) pairs resampled, ``scipy.stats.bootstrap``, BCa, fixed seed) and the
Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zero differences dropped as in
Wilcoxon's original test). When every difference is zero the two methods scored the same
on every episode: there is nothing to rank, and the p-value is 1 (no evidence of a
difference) rather than undefined.

With three or more methods, ``critical_difference`` ranks them within each category (mean
over seeds, rank 1 = best) and gives the Nemenyi critical difference of mean ranks, from
the studentized range distribution (``scipy.stats.studentized_range``) as in Demšar (2006),
with the Friedman test's p-value: two methods whose mean ranks differ by less than the
critical difference are not told apart by these data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from fsad_bench.identity import MEAN_ROW, METRICS

COLUMNS = [
    "method_a", "method_b", "k", "metric", "wins_a", "wins_b", "ties", "mean_diff",
    "ci_low", "ci_high", "p_value",
]  # fmt: skip
FILE = "comparisons.csv"
CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0
ALPHA = 0.05
SPREAD_COLUMNS = ["k", "metric", "mean_seed_std", "max_seed_std", "worst_category",
                  "n_categories"]  # fmt: skip


def _pairs(values: pd.DataFrame, group: str, a: str, b: str) -> pd.DataFrame:
    """Per (k, metric): the episodes both methods have a value for, side by side."""
    keys = ["category", "k", "seed", "metric"]
    left = values[values[group] == a].set_index(keys)["value"]
    right = values[values[group] == b].set_index(keys)["value"]
    joined = pd.concat({"a": left, "b": right}, axis=1, join="inner").dropna()
    return joined.reset_index()


def bootstrap_ci(diffs: np.ndarray, seed: int = SEED) -> tuple[float, float]:
    """CI of the mean difference over resampled episodes; NaN with fewer than two."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    if np.all(diffs == diffs[0]):  # every resample has this mean: the interval is a point
        return float(diffs[0]), float(diffs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa on few distinct values warns, then we fall back
        result = stats.bootstrap(
            (diffs,), np.mean, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
            method="BCa", rng=np.random.default_rng(seed),
        )  # fmt: skip
        low, high = result.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):  # degenerate jackknife: percentile
            result = stats.bootstrap(
                (diffs,), np.mean, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                method="percentile", rng=np.random.default_rng(seed),
            )  # fmt: skip
            low, high = result.confidence_interval
    return float(low), float(high)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided signed-rank p-value; 1 when no difference is non-zero (see the module)."""
    if len(diffs) == 0:
        return float("nan")
    if not np.any(diffs != 0):
        return 1.0
    return float(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)


def paired(values: pd.DataFrame, group: str = "method", seed: int = SEED) -> pd.DataFrame:
    """``values``: one row per (group, category, k, seed, metric) with its ``value`` (as
    ``report.records_frame``). One row per pair of methods, K and metric (COLUMNS);
    ``mean_diff`` is a minus b, so a positive difference favours a (higher is better)."""
    rows = []
    methods = sorted(values[group].dropna().unique())
    order = {m: i for i, m in enumerate(METRICS)}
    for a, b in combinations(methods, 2):
        joined = _pairs(values, group, a, b)
        for (k, metric), cell in joined.groupby(["k", "metric"], sort=True):
            diffs = (cell["a"] - cell["b"]).to_numpy(dtype=np.float64)
            if len(diffs) == 0:
                continue
            low, high = bootstrap_ci(diffs, seed)
            rows.append(
                {"method_a": a, "method_b": b, "k": k, "metric": metric,
                 "wins_a": int((diffs > 0).sum()), "wins_b": int((diffs < 0).sum()),
                 "ties": int((diffs == 0).sum()), "mean_diff": float(diffs.mean()),
                 "ci_low": low, "ci_high": high, "p_value": wilcoxon_p(diffs)}
            )  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table
    table["_order"] = table["metric"].map(order).fillna(len(order))
    table = table.sort_values(["_order", "k", "method_a", "method_b"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


@dataclass(frozen=True)
class CriticalDifference:
    """Mean ranks over categories (1 = best) and the Nemenyi critical difference."""

    k: object
    metric: str
    mean_ranks: dict[str, float]
    cd: float
    n_categories: int
    friedman_p: float

    def tied_groups(self) -> list[tuple[str, ...]]:
        """Maximal runs of methods (in rank order) whose mean ranks lie within one CD."""
        ordered = sorted(self.mean_ranks, key=self.mean_ranks.get)
        groups: list[tuple[str, ...]] = []
        for start in range(len(ordered)):
            end = start
            while (
                end + 1 < len(ordered)
                and self.mean_ranks[ordered[end + 1]] - self.mean_ranks[ordered[start]] < self.cd
            ):
                end += 1
            group = tuple(ordered[start : end + 1])
            if len(group) > 1 and not any(set(group) <= set(g) for g in groups):
                groups.append(group)
        return groups


def critical_difference(
    values: pd.DataFrame, k: object, metric: str, group: str = "method", alpha: float = ALPHA
) -> CriticalDifference | None:
    """Nemenyi over the categories where every method has a value at this K (mean over
    seeds); None with fewer than three methods or two categories."""
    part = values[(values["k"] == k) & (values["metric"] == metric)].dropna(subset=["value"])
    table = part.groupby(["category", group])["value"].mean().unstack(group).dropna()
    methods, n = list(table.columns), len(table)
    if len(methods) < 3 or n < 2:
        return None
    ranks = stats.rankdata(-table.to_numpy(dtype=np.float64), axis=1)
    mean_ranks = dict(zip(methods, ranks.mean(axis=0).tolist(), strict=True))
    q = stats.studentized_range.ppf(1 - alpha, len(methods), np.inf) / math.sqrt(2)
    cd = float(q * math.sqrt(len(methods) * (len(methods) + 1) / (6 * n)))
    matrix = table.to_numpy(dtype=np.float64)
    if (np.ptp(matrix, axis=1) == 0).all():  # every category a tie: no evidence of a rank
        friedman = 1.0
    else:
        friedman = float(stats.friedmanchisquare(*matrix.T).pvalue)
    return CriticalDifference(k, metric, mean_ranks, cd, n, friedman)


def critical_differences(
    values: pd.DataFrame, metric: str, group: str = "method"
) -> list[CriticalDifference]:
    """One diagram per K (in K order) where there are enough methods and categories."""
    found = [critical_difference(values, k, metric, group) for k in sorted(values["k"].unique())]
    return [cd for cd in found if cd is not None]


def seed_spread(long: pd.DataFrame, group: str = "method") -> pd.DataFrame:
    """How much a score moves with the support draw: per method, K and metric, the sample
    std over seeds at fixed category and K, averaged over categories (and its largest).

    ``long`` is ``report.aggregate``'s table (per-category ``std`` over seeds). The seed
    picks the K support images, and for trained methods also their training draws.
    """
    part = long[(long["category"] != MEAN_ROW) & (long["n_seeds"] >= 2)].dropna(subset=["std"])
    rows = []
    for (method, k, metric), cell in part.groupby([group, "k", "metric"], sort=True):
        worst = cell.loc[cell["std"].idxmax()]
        rows.append(
            {group: method, "k": k, "metric": metric, "mean_seed_std": cell["std"].mean(),
             "max_seed_std": worst["std"], "worst_category": worst["category"],
             "n_categories": len(cell)}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=[group, *SPREAD_COLUMNS])


def significant(table: pd.DataFrame, alpha: float = ALPHA) -> pd.Series:
    """Rows whose p-value is below ``alpha`` and whose CI excludes 0."""
    return (table["p_value"] < alpha) & ((table["ci_low"] > 0) | (table["ci_high"] < 0))


def metric_order(metrics: Sequence[str]) -> list[str]:
    return [m for m in METRICS if m in set(metrics)]
