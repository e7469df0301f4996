"""The leaderboard's views as plain DataFrames: ranking, per-category table, curves, diffs.

Numbers stay numbers here (NaN where a metric does not apply); ``cell`` turns them into
the text the app shows, where a missing value is "n/a", never 0 or blank.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fsad_bench.identity import KIND_PUBLISHED, KIND_REPRODUCED

NA = "n/a"
BEST = "★ "
CI_SUFFIX = ".ci"
# backbone inits whose reproductions may stand beside a paper's figure (see comparable())
COMPARABLE_INITS = ("pretrained", "none")


def k_order(value: str) -> tuple[int, float]:
    """Numeric K first in numeric order, then 'all' (full-shot)."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, 0.0)


def cell(mean: float, std: float | None = None, digits: int = 3) -> str:
    if pd.isna(mean):
        return NA
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def select(
    frame: pd.DataFrame,
    dataset: str | None = None,
    protocol: str | None = None,
    metric: str | None = None,
    ks: Sequence[str] | None = None,
    entries: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The sidebar filters; None means no filter."""
    mask = pd.Series(True, index=frame.index)
    for column, value in (("dataset", dataset), ("protocol", protocol), ("metric", metric)):
        if value is not None:
            mask &= frame[column] == value
    if ks is not None:
        mask &= frame["k"].isin(list(ks))
    if entries is not None:
        mask &= frame["entry"].isin(list(entries))
    return frame[mask]


def ranking(frame: pd.DataFrame, k: str, metric: str) -> pd.DataFrame:
    """Entries of one (dataset, protocol) at one K by category-mean ``metric``, best first.

    Every entry with any result at this K is listed; one without this metric gets
    rank NA and mean NaN (shown as n/a) instead of disappearing.
    """
    at_k = frame[frame["k"] == k]
    entries = at_k.drop_duplicates("entry").set_index("entry")
    rows = at_k[(at_k["category"] == "mean") & (at_k["metric"] == metric)].set_index("entry")
    table = pd.DataFrame(index=entries.index)
    table["kind"] = entries["kind"]
    table["backbone_init"] = entries["backbone_init"]
    table["n_categories"] = entries["n_categories"]
    table["of_categories"] = entries["of_categories"]
    for column in ("mean", "std", "n_seeds", "ms_per_image"):
        table[column] = pd.to_numeric(rows[column], errors="coerce").reindex(table.index)
    table["source"] = entries["source"]
    table = table.reset_index().sort_values(["mean", "entry"], ascending=[False, True])
    table.insert(0, "rank", table["mean"].rank(ascending=False, method="min").astype("Int64"))
    return table.reset_index(drop=True)


def coverage(kind: str, covered: float, of: float) -> str:
    """'covered/of' categories, so a mean over a subset is not read as a full run's."""
    if kind == KIND_PUBLISHED:
        return "as published"
    if pd.isna(covered):
        return NA
    return f"{int(covered)}/{'?' if pd.isna(of) else int(of)}"


def ranking_display(table: pd.DataFrame) -> pd.DataFrame:
    covered = zip(table["kind"], table["n_categories"], table["of_categories"], strict=True)
    return pd.DataFrame(
        {
            "rank": [NA if pd.isna(r) else str(r) for r in table["rank"]],
            "method": table["entry"],
            "kind": table["kind"],
            "backbone": table["backbone_init"],
            "categories": [coverage(*c) for c in covered],
            "mean ± std": [cell(m, s) for m, s in zip(table["mean"], table["std"], strict=True)],
            "seeds": [NA if pd.isna(n) else str(int(n)) for n in table["n_seeds"]],
            "ms / image": [cell(v, digits=1) for v in table["ms_per_image"]],
            "source": table["source"],
        }
    )


def category_values(frame: pd.DataFrame, k: str, metric: str) -> pd.DataFrame:
    """Means as categories x entries (the 'mean' row last), like the thesis tables."""
    part = frame[(frame["k"] == k) & (frame["metric"] == metric)]
    if part.empty:
        return pd.DataFrame()
    values = part.pivot_table(index="category", columns="entry", values="mean", dropna=False)
    order = sorted(values.index, key=lambda c: (c == "mean", c))
    values = values.reindex(index=order)
    values.columns.name = None
    return values


def win_counts(values: pd.DataFrame) -> pd.DataFrame:
    """Per entry: categories where it is best (ties count for each) out of those it has."""
    per_category = values.drop(index="mean", errors="ignore")
    best = per_category.max(axis=1)
    wins = per_category.eq(best, axis=0) & per_category.notna()
    has = per_category.notna().sum()
    return pd.DataFrame({"wins": wins.sum().astype(int), "of": has.astype(int)})


def category_display(frame: pd.DataFrame, k: str, metric: str) -> pd.DataFrame:
    """Cells 'mean ± std', the best of each row starred, and a 'best in W of N' last row."""
    values = category_values(frame, k, metric)
    if values.empty:
        return values
    part = frame[(frame["k"] == k) & (frame["metric"] == metric)]
    stds = part.pivot_table(index="category", columns="entry", values="std", dropna=False)
    stds = stds.reindex(index=values.index, columns=values.columns)
    best = values.max(axis=1)
    shown = pd.DataFrame(index=values.index, columns=values.columns, dtype=object)
    for category in values.index:
        for entry in values.columns:
            text = cell(values.at[category, entry], stds.at[category, entry])
            top = values.at[category, entry] == best[category] and values.shape[1] > 1
            shown.at[category, entry] = BEST + text if top and text != NA else text
    wins = win_counts(values)
    shown.loc["best in"] = [
        f"{wins.at[e, 'wins']} of {wins.at[e, 'of']}" if wins.at[e, "of"] else NA
        for e in values.columns
    ]
    shown.index.name = "category"
    return shown.reset_index()


def k_curve(frame: pd.DataFrame, metric: str, category: str = "mean") -> pd.DataFrame:
    """Score vs numeric K per entry (full-shot rows are left out of a K axis)."""
    part = frame[(frame["metric"] == metric) & (frame["category"] == category)].copy()
    part["K"] = pd.to_numeric(part["k"], errors="coerce")
    part = part.dropna(subset=["K", "mean"])
    return part[["entry", "kind", "K", "mean", "std"]].sort_values(["entry", "K"])


def speed_accuracy(frame: pd.DataFrame, metric: str = "image_auroc") -> pd.DataFrame:
    """ms per image vs category-mean metric, one point per (entry, K) that has timing."""
    part = frame[(frame["metric"] == metric) & (frame["category"] == "mean")]
    part = part.dropna(subset=["ms_per_image", "mean"])
    return part[["entry", "k", "ms_per_image", "mean"]].reset_index(drop=True)


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


def default_entries(part: pd.DataFrame) -> list[str]:
    """Entries shown before the user picks: all but the CI baselines (``<method>.ci``, the
    plugins' tiny conformance settings, which guard code paths and rank nothing), unless
    they are all there is."""
    entries = sorted(part["entry"].unique())
    ci = set(part.loc[part["method"].astype(str).str.endswith(CI_SUFFIX), "entry"])
    return [e for e in entries if e not in ci] or entries
