"""The leaderboard's views as plain DataFrames: ranking, per-category table, curves, speed,
paired comparisons, seed spread and published-vs-reproduced pairs.

Numbers stay numbers (NaN where a metric does not apply, shown as empty cells): the app
formats them in the display, so every column sorts as numbers do.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fsad_bench.identity import KIND_LOCAL, KIND_PUBLISHED, KIND_REPRODUCED, metric_label
from fsad_bench.results import compare
from fsad_bench.results.report import round_to_noise

NA = "n/a"
CI_SUFFIX = ".ci"
# backbone inits whose reproductions may stand beside a paper's figure (see comparable())
COMPARABLE_INITS = ("pretrained", "none")


def k_order(value: str) -> tuple[int, float]:
    """Numeric K first in numeric order, then 'all' (full-shot)."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, 0.0)


def context(dataset: str, protocol: str, metric: str | None = None, k: object = None) -> str:
    """The line above a table: what is compared (dataset, protocol, metric, K)."""
    parts = [f"dataset {dataset}", f"protocol {protocol}"]
    if metric:
        parts.append(metric_label(metric))
    if k is not None:
        parts.append(f"K = {k}")
    return " · ".join(parts)


def select(
    frame: pd.DataFrame,
    dataset: str | None = None,
    protocol: str | None = None,
    metric: str | None = None,
    ks: Sequence[str] | None = None,
    entries: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The sidebar filters; None means no filter (a frame without a column ignores it)."""
    mask = pd.Series(True, index=frame.index)
    for column, value in (("dataset", dataset), ("protocol", protocol), ("metric", metric)):
        if value is not None and column in frame:
            mask &= frame[column] == value
    if ks is not None:
        mask &= frame["k"].isin(list(ks))
    if entries is not None:
        mask &= frame["entry"].isin(list(entries))
    return frame[mask]


# ---- speed ------------------------------------------------------------------------------------


def machines(timings: pd.DataFrame) -> pd.Series:
    """Machines with comparable (cold) timings, most episodes first."""
    cold = timings[timings["comparable"].astype(bool)].dropna(subset=["ms_per_image"])
    return cold["machine"].value_counts()


def speed(timings: pd.DataFrame, machine: str | None) -> pd.DataFrame:
    """Per (entry, K): prediction ms per image over the cold episodes measured on
    ``machine``, rounded to the leading digit of their spread (report.round_to_noise)."""
    columns = ["entry", "k", "ms_per_image", "ms_spread", "n_timed"]
    part = timings[timings["comparable"].astype(bool) & (timings["machine"] == machine)]
    part = part.dropna(subset=["ms_per_image"])
    if part.empty:
        return pd.DataFrame(columns=columns)
    grouped = part.groupby(["entry", "k"])["ms_per_image"]
    table = grouped.agg(mean="mean", ms_spread=lambda v: v.std(ddof=1), n_timed="count")
    table = table.reset_index()
    table["ms_per_image"] = [
        round_to_noise(m, s) for m, s in zip(table["mean"], table["ms_spread"], strict=True)
    ]
    return table[columns]


def excluded_timings(timings: pd.DataFrame, machine: str | None) -> dict[str, int]:
    """How many timed episodes a speed view leaves out, and why."""
    timed = timings.dropna(subset=["ms_per_image"])
    cold = timed["comparable"].astype(bool)
    unrecorded = timed["cache_hits"].isna() & ~cold
    return {
        "feature-cache hits": int((~cold & ~unrecorded).sum()),
        "cache use not recorded (older records of a backbone method)": int(unrecorded.sum()),
        "other machines": int((cold & (timed["machine"] != machine)).sum()),
    }


def speed_accuracy(frame: pd.DataFrame, timed: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Category-mean ``metric`` against ms per image, one point per (entry, K) timed."""
    part = frame[(frame["metric"] == metric) & (frame["category"] == "mean")]
    part = part.dropna(subset=["mean"])[["entry", "kind", "k", "mean"]]
    points = part.merge(timed, on=["entry", "k"])
    points["K"] = pd.to_numeric(points["k"], errors="coerce")
    points["label"] = "K=" + points["k"].astype(str)
    return points.sort_values(["entry", "K"]).reset_index(drop=True)


# ---- ranking and per-category tables ----------------------------------------------------------


def ranking(
    frame: pd.DataFrame, k: str, metric: str, timed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Entries of one (dataset, protocol) at one K by category-mean ``metric``, best first.

    Every entry with any result at this K is listed; one without this metric gets rank NA
    and mean NaN instead of disappearing. Local runs are placed by their mean but not
    ranked: nobody validated them. ``timed`` (``speed``) adds ms per image.
    """
    at_k = frame[frame["k"] == k]
    entries = at_k.drop_duplicates("entry").set_index("entry")
    rows = at_k[(at_k["category"] == "mean") & (at_k["metric"] == metric)].set_index("entry")
    table = pd.DataFrame(index=entries.index)
    table["kind"] = entries["kind"]
    table["backbone_init"] = entries["backbone_init"]
    table["n_categories"] = entries["n_categories"]
    table["of_categories"] = entries["of_categories"]
    for column in ("mean", "std", "n_seeds"):
        table[column] = pd.to_numeric(rows[column], errors="coerce").reindex(table.index)
    ms = pd.Series(dtype=float)
    if timed is not None and not timed.empty:
        ms = timed[timed["k"] == k].set_index("entry")["ms_per_image"]
    table["ms_per_image"] = pd.to_numeric(ms, errors="coerce").reindex(table.index)
    table["source"] = entries["source"]
    table = table.reset_index().sort_values(["mean", "entry"], ascending=[False, True])
    ranked = table["mean"].where(table["kind"] != KIND_LOCAL)
    table.insert(0, "rank", ranked.rank(ascending=False, method="min").astype("Int64"))
    return table.reset_index(drop=True)


def coverage(kind: str, covered: float, of: float) -> str:
    """'covered/of' categories, so a mean over a subset is not read as a full run's."""
    if kind == KIND_PUBLISHED:
        return "as published"
    if pd.isna(covered):
        return NA
    return f"{int(covered)}/{'?' if pd.isna(of) else int(of)}"


def ranking_display(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ranking as shown: the score beside the method's name (it stays on screen on a
    phone), numbers numeric (the app formats them), coverage as 'n/N'."""
    covered = zip(table["kind"], table["n_categories"], table["of_categories"], strict=True)
    return pd.DataFrame(
        {
            "rank": table["rank"],
            "method": table["entry"],
            metric_label(metric): table["mean"],
            "± std": table["std"],
            "kind": table["kind"],
            "backbone": table["backbone_init"],
            "categories": [coverage(*c) for c in covered],
            "seeds": pd.array(table["n_seeds"].where(table["mean"].notna()), dtype="Int64"),
            "ms / image": table["ms_per_image"],
            "source": table["source"],
        }
    )


def category_values(frame: pd.DataFrame, k: str, metric: str, column: str = "mean") -> pd.DataFrame:
    """Means (or stds) as categories x entries, the 'mean' row last, like the thesis tables."""
    part = frame[(frame["k"] == k) & (frame["metric"] == metric)]
    if part.empty:
        return pd.DataFrame()
    values = part.pivot_table(index="category", columns="entry", values=column, dropna=False)
    order = sorted(values.index, key=lambda c: (c == "mean", c))
    values = values.reindex(index=order)
    values.columns.name = None
    values.index.name = "category"
    return values


def win_counts(values: pd.DataFrame) -> pd.DataFrame:
    """Per entry: categories where it is best (ties count for each) out of those it has."""
    per_category = values.drop(index="mean", errors="ignore")
    best = per_category.max(axis=1)
    wins = per_category.eq(best, axis=0) & per_category.notna()
    has = per_category.notna().sum()
    return pd.DataFrame({"wins": wins.sum().astype(int), "of": has.astype(int)})


def best_cells(values: pd.DataFrame) -> pd.DataFrame:
    """True where a cell is its row's best (with more than one entry to compare)."""
    if values.shape[1] < 2:
        return pd.DataFrame(False, index=values.index, columns=values.columns)
    return values.eq(values.max(axis=1), axis=0) & values.notna()


# ---- curves -----------------------------------------------------------------------------------


def k_curve(frame: pd.DataFrame, metric: str, category: str = "mean") -> pd.DataFrame:
    """Score vs numeric K per entry with the ± std band (full-shot rows are left out)."""
    part = frame[(frame["metric"] == metric) & (frame["category"] == category)].copy()
    part["K"] = pd.to_numeric(part["k"], errors="coerce")
    part = part.dropna(subset=["K", "mean"])
    std = part["std"].fillna(0)
    part["low"], part["high"] = part["mean"] - std, part["mean"] + std
    return part[["entry", "kind", "K", "mean", "std", "low", "high"]].sort_values(["entry", "K"])


# ---- paired comparisons and seed spread -------------------------------------------------------


def paired(episodes: pd.DataFrame, k: str, metric: str) -> pd.DataFrame:
    """compare.paired over the selected entries' episodes at one K and metric, with a
    verdict: which one is better where the p-value and the interval agree."""
    part = episodes[(episodes["k"] == k) & (episodes["metric"] == metric)]
    table = compare.paired(part, group="entry")
    real = compare.significant(table)
    table["verdict"] = [
        (a if d > 0 else b) + " better" if r else "not told apart"
        for a, b, d, r in zip(table["method_a"], table["method_b"], table["mean_diff"], real,
                              strict=True)
    ]  # fmt: skip
    return table.drop(columns=["k", "metric"])


def critical_difference(
    episodes: pd.DataFrame, k: str, metric: str
) -> compare.CriticalDifference | None:
    return compare.critical_difference(episodes, k, metric, group="entry")


def seed_spread(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """compare.seed_spread of the entries with per-seed results, numeric K in order."""
    part = frame[(frame["metric"] == metric) & (frame["kind"] != KIND_PUBLISHED)]
    table = compare.seed_spread(part, group="entry")
    table["K"] = pd.to_numeric(table["k"], errors="coerce")
    return table.sort_values(["K", "mean_seed_std"], ascending=[True, False]).reset_index(drop=True)


# ---- published vs reproduced ------------------------------------------------------------------


def comparable(reproduced: pd.DataFrame) -> pd.DataFrame:
    """Reproductions that may stand beside a paper's figure: not a CI baseline (tiny preset,
    its numbers say nothing of the method) and a backbone pretrained or absent, as in the
    papers (random, mixed or unrecorded init is left out)."""
    ci = reproduced["method"].astype(str).str.endswith(CI_SUFFIX)
    init = reproduced["backbone_init"].isin(COMPARABLE_INITS)
    return reproduced[~ci & init]


def with_protocol(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that name their protocol: pandas joins a missing key to a missing key, which
    would pair figures whose protocols nobody knows."""
    protocol = frame["protocol"]
    return frame[protocol.notna() & (protocol.astype(str).str.strip() != "")]


def published_vs_reproduced(frame: pd.DataFrame) -> pd.DataFrame:
    """Same plugin, dataset, protocol, K, category and metric in both: published,
    reproduced, diff. A paper's own split is not our protocol, so it is never paired."""
    keys = ["plugin", "dataset", "protocol", "k", "category", "metric"]
    published = with_protocol(frame[(frame["kind"] == KIND_PUBLISHED) & (frame["plugin"] != "")])
    reproduced = with_protocol(comparable(frame[frame["kind"] == KIND_REPRODUCED]))
    merged = published[[*keys, "entry", "mean", "source"]].merge(
        reproduced[[*keys, "entry", "mean"]], on=keys, suffixes=("_published", "_reproduced")
    )
    merged = merged.dropna(subset=["mean_published", "mean_reproduced"], how="all")
    merged["difference"] = merged["mean_reproduced"] - merged["mean_published"]
    columns = [
        "plugin", "dataset", "protocol", "k", "category", "metric", "entry_published",
        "mean_published", "entry_reproduced", "mean_reproduced", "difference", "source",
    ]  # fmt: skip
    return merged[columns].reset_index(drop=True)


def pairable_published(frame: pd.DataFrame, protocols: Sequence[str]) -> pd.DataFrame:
    """Published figures that a run of ours could stand beside: a plugin exists and the
    paper used one of our ``protocols``; with the command that would make the run."""
    published = frame[(frame["kind"] == KIND_PUBLISHED) & (frame["plugin"] != "")]
    published = published[published["protocol"].isin(list(protocols))]
    rows = []
    for (plugin, dataset, protocol, method), part in published.groupby(
        ["plugin", "dataset", "protocol", "entry"], sort=True
    ):
        ks = sorted(set(part["k"]), key=k_order)
        metrics = [metric_label(m) for m in compare.metric_order(part["metric"])]
        rows.append(
            {"published method": method, "plugin": plugin, "dataset": dataset,
             "protocol": protocol, "K": ", ".join(ks), "metrics": ", ".join(metrics),
             "command": f"fsad-bench run --protocol {protocol} --data-root DIR "
                        f"--method {plugin} --shots {','.join(ks)}"}
        )  # fmt: skip
    return pd.DataFrame(rows)


def default_entries(part: pd.DataFrame) -> list[str]:
    """Entries shown before the user picks: all but the CI baselines (``<method>.ci``, the
    plugins' tiny conformance settings, which guard code paths and rank nothing), unless
    they are all there is."""
    entries = sorted(part["entry"].unique())
    ci = set(part.loc[part["method"].astype(str).str.endswith(CI_SUFFIX), "entry"])
    return [e for e in entries if e not in ci] or entries
