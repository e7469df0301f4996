"""Aggregate records over seeds: long-format CSV, a thesis-style table, and Markdown.

std is the sample standard deviation over seeds (ddof=1) and is empty with one seed;
metrics that do not apply (no maps, image-level data) stay empty, never 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from fsad_bench.records import METRIC_NAMES, STATUS_OK, EpisodeRecord
from fsad_bench.results import latest_by_key, read_records

LONG_COLUMNS = ["method", "category", "k", "metric", "mean", "std", "n_seeds"]
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO@0.3"}


def method_label(record: EpisodeRecord) -> str:
    return (
        f"{record.method.name}.{record.method.preset}"
        if record.method.preset
        else record.method.name
    )


def records_frame(records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    rows = []
    for record in latest_by_key(records).values():
        if record.status != STATUS_OK:
            continue
        for metric in METRIC_NAMES:
            rows.append(
                {
                    "method": method_label(record),
                    "dataset": record.dataset,
                    "category": record.category,
                    "k": record.k,
                    "seed": record.seed,
                    "metric": metric,
                    "value": record.metrics.get(metric),
                }
            )
    return pd.DataFrame(
        rows, columns=["method", "dataset", "category", "k", "seed", "metric", "value"]
    )


def aggregate(records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    """Long format: one row per (method, category, k, metric), plus a 'mean' category row."""
    frame = records_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    keys = ["method", "category", "k", "metric"]
    per_category = frame.groupby(keys, sort=True)["value"]
    long = per_category.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
    # the category mean of each seed, then mean/std over seeds (as the thesis reports)
    per_seed = frame.groupby(["method", "k", "metric", "seed"])["value"].mean(numeric_only=True)
    overall = (
        per_seed.groupby(["method", "k", "metric"])
        .agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count")
        .reset_index()
    )
    overall.insert(1, "category", "mean")
    long = pd.concat([long, overall], ignore_index=True)
    long.loc[long["mean"].isna(), ["std"]] = float("nan")
    long.loc[long["mean"].isna(), "n_seeds"] = 0
    return long[LONG_COLUMNS]


def _cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def wide_table(long: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows are categories (mean last), columns are (method, K): like the thesis tables."""
    part = long[long["metric"] == metric].copy()
    if part.empty:
        return pd.DataFrame()
    part["cell"] = [_cell(m, s) for m, s in zip(part["mean"], part["std"], strict=True)]
    part["column"] = part["method"] + " K=" + part["k"].astype(str)
    order = sorted(part["category"].unique(), key=lambda c: (c == "mean", c))
    pairs = sorted(set(zip(part["method"], part["k"], strict=True)))
    columns = [f"{m} K={k}" for m, k in pairs]
    table = part.pivot(index="category", columns="column", values="cell")
    table = table.reindex(index=order, columns=columns).fillna("n/a")
    table.columns.name = None
    return table


def render(long: pd.DataFrame, markdown: bool = False) -> str:
    blocks, skipped = [], []
    for metric in METRIC_NAMES:
        table = wide_table(long, metric)
        if table.empty:
            continue
        if long.loc[long["metric"] == metric, "mean"].isna().all():
            skipped.append(METRIC_LABELS[metric])
            continue
        title = f"{METRIC_LABELS[metric]} (reproduced; mean ± std over seeds)"
        body = table.to_markdown() if markdown else table.to_string()
        blocks.append(f"## {title}\n\n{body}" if markdown else f"{title}\n{body}")
    if skipped:
        blocks.append(f"{', '.join(skipped)}: n/a (no anomaly maps, or image-level labels only)")
    return "\n\n".join(blocks) + "\n"


def provenance_lines(records: Sequence[EpisodeRecord]) -> list[str]:
    """What produced the numbers: protocol, and each method's backbone, its initialisation
    and the weights file, so a random-init or other-weights run cannot pass for the usual."""
    protocols = sorted(
        {f"{r.protocol}@{r.protocol_version} (hash {r.protocol_hash})" for r in records}
    )
    by_method: dict[str, list[EpisodeRecord]] = {}
    for record in records:
        if record.status == STATUS_OK:
            by_method.setdefault(method_label(record), []).append(record)
    lines = [f"Reproduced by fsad-bench on {', '.join(protocols)}."]
    for name, group in sorted(by_method.items()):
        lines.append(f"  {name}: {describe_backbone(group)}")
    return lines


def describe_backbone(records: Sequence[EpisodeRecord]) -> str:
    first = records[0]
    backbone = first.provenance.get("backbone", first.method.params.get("backbone"))
    init = backbone_init(records)
    if init == "none":
        return "no pretrained backbone (trained from scratch)"
    weights = sorted({str(r.provenance["weights"]) for r in records if "weights" in r.provenance})
    text = f"backbone={backbone}, {init}"
    return text + (f"; {'; '.join(weights)}" if weights else "")


def backbone_init(records: Iterable[EpisodeRecord]) -> str:
    """pretrained / random / none, from each record's provenance (or its weights param)."""
    kinds = set()
    for record in records:
        prov, params = record.provenance, record.method.params
        if "backbone_init" in prov:
            kinds.add(str(prov["backbone_init"]))
        elif "weights" in params:
            kinds.add("random" if params["weights"] == "random" else "pretrained")
        elif "backbone" in prov or "backbone" in params:
            kinds.add("unknown")
        else:
            kinds.add("none")
    return kinds.pop() if len(kinds) == 1 else "mixed: " + ", ".join(sorted(kinds))


def write_report(run_dir: Path) -> tuple[pd.DataFrame, str]:
    """Write report.csv and report.md into the run directory; return the table text."""
    records = read_records(run_dir)
    long = aggregate(records)
    long.to_csv(Path(run_dir) / "report.csv", index=False, float_format="%.6f")
    failed = [r for r in latest_by_key(records).values() if r.status != STATUS_OK]
    header = "\n".join(provenance_lines(records))
    text = header + "\n\n" + render(long)
    md = header.replace("\n  ", "\n- ") + "\n\n" + render(long, markdown=True)
    if failed:
        note = f"{len(failed)} episode(s) failed; see records.jsonl (status=failed)."
        text += f"\n{note}\n"
        md += f"\n{note}\n"
    (Path(run_dir) / "report.md").write_text(md, encoding="utf-8")
    return long, text
