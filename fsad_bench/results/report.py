"""Aggregate records over seeds: long-format CSV, a thesis-style table, and Markdown.

std is the sample standard deviation over seeds (ddof=1) and is empty with one seed;
metrics that do not apply (no maps, image-level data) stay empty, never 0. The 'mean'
category row of a (method, K) is only computed when every category has a value for every
seed played at that K; otherwise it is empty and ``mean_gaps`` says which episodes lack.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fsad_bench.identity import MEAN_ROW, METRICS, category_label, metric_label
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.store import RUN_CONFIG, latest_by_key, read_records, write_bytes_atomic

_SHOWN_GAPS = 6

LONG_COLUMNS = ["method", "category", "k", "metric", "mean", "std", "n_seeds"]


def method_label(record: EpisodeRecord) -> str:
    return record.method.label


def records_frame(records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    rows = []
    for record in latest_by_key(records).values():
        if record.status != STATUS_OK:
            continue
        for metric in (m for m in METRICS if m in record.metrics):  # what the record holds
            rows.append(
                {
                    "method": method_label(record),
                    "dataset": record.dataset,
                    "category": category_label(record.category),
                    "k": record.k,
                    "seed": record.seed,
                    "metric": metric,
                    "value": record.metrics.get(metric),
                }
            )
    return pd.DataFrame(
        rows, columns=["method", "dataset", "category", "k", "seed", "metric", "value"]
    )


Gap = tuple[str | None, str, int, str]  # (metric or None for all, category, seed, why)


def _gaps(
    records: Sequence[EpisodeRecord], categories: Sequence[str] | None = None
) -> dict[tuple[str, int], list[Gap]]:
    """Per (method, K): the (category, seed) values its 'mean' row lacks.

    A method is expected to have every category of its records (and of ``categories``, the
    protocol's, when known) for every seed it played at that K. A metric with no value at
    all in the cell does not apply (no maps) and is not a gap.
    """
    latest = list(latest_by_key(records).values())
    by_method: dict[str, list[EpisodeRecord]] = {}
    for record in latest:
        by_method.setdefault(method_label(record), []).append(record)
    gaps: dict[tuple[str, int], list[Gap]] = {}
    for method, mine in by_method.items():
        expected = sorted({r.category for r in mine} | set(categories or ()))
        for k in sorted({r.k for r in mine}):
            at_k = {(r.category, r.seed): r for r in mine if r.k == k}
            seeds = sorted({seed for _, seed in at_k})
            found: list[Gap] = []
            for category in expected:
                for seed in seeds:
                    record = at_k.get((category, seed))
                    if record is None:
                        found.append((None, category, seed, "not played"))
                    elif record.status != STATUS_OK:
                        found.append((None, category, seed, "failed"))
            ok = [r for r in at_k.values() if r.status == STATUS_OK]
            for metric in METRICS:
                if any(r.metrics.get(metric) is not None for r in ok):
                    found += [
                        (metric, r.category, r.seed, f"has no {metric}")
                        for r in ok
                        if r.metrics.get(metric) is None
                    ]
            if found:
                gaps[(method, k)] = found
    return gaps


def mean_gaps(
    records: Sequence[EpisodeRecord], categories: Sequence[str] | None = None
) -> list[str]:
    """One line per (method, K) whose 'mean' row is empty, naming the episodes it lacks."""
    lines = []
    for (method, k), found in sorted(_gaps(records, categories).items()):
        seeds: dict[tuple[str, str], list[int]] = {}
        for _, category, seed, why in sorted(found, key=lambda g: (g[1], g[3], g[2])):
            seeds.setdefault((category, why), []).append(seed)
        parts = [
            f"{category} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))} {why}"
            for (category, why), s in seeds.items()
        ]
        more = len(parts) - _SHOWN_GAPS
        text = "; ".join(parts[:_SHOWN_GAPS]) + (f"; and {more} more" if more > 0 else "")
        lines.append(f"mean n/a for {method} K={k}: {text}")
    return lines


def aggregate(
    records: Sequence[EpisodeRecord], categories: Sequence[str] | None = None
) -> pd.DataFrame:
    """Long format: one row per (method, category, k, metric), plus a 'mean' category row.

    The 'mean' row is the category mean of each seed, then mean/std over seeds (as the
    thesis reports); it is empty unless every category (those of the records, plus
    ``categories`` when given) has a value for every seed of that (method, K): see
    ``mean_gaps``.
    """
    frame = records_frame(records)
    if frame.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    keys = ["method", "category", "k", "metric"]
    per_category = frame.groupby(keys, sort=True)["value"]
    long = per_category.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
    gaps = _gaps(records, categories)
    rows: list[dict[str, Any]] = []
    for (method, k, metric), cell in frame.groupby(["method", "k", "metric"], sort=True):
        lacking = any(m in (None, metric) for m, *_ in gaps.get((method, k), []))
        mean = std = float("nan")
        n_seeds = 0
        if not lacking and cell["value"].notna().all():
            per_seed = cell.groupby("seed")["value"].mean()
            mean, std, n_seeds = per_seed.mean(), per_seed.std(ddof=1), len(per_seed)
        rows.append(
            {"method": method, "category": MEAN_ROW, "k": k, "metric": metric,
             "mean": mean, "std": std, "n_seeds": n_seeds}
        )  # fmt: skip
    long = pd.concat([long, pd.DataFrame(rows, columns=LONG_COLUMNS)], ignore_index=True)
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
    order = sorted(part["category"].unique(), key=lambda c: (c == MEAN_ROW, c))
    pairs = sorted(set(zip(part["method"], part["k"], strict=True)))
    columns = [f"{m} K={k}" for m, k in pairs]
    table = part.pivot(index="category", columns="column", values="cell")
    table = table.reindex(index=order, columns=columns).fillna("n/a")
    table.columns.name = None
    return table


def render(long: pd.DataFrame, markdown: bool = False) -> str:
    blocks, skipped = [], []
    for metric in METRICS:
        table = wide_table(long, metric)
        if table.empty:
            continue
        if long.loc[long["metric"] == metric, "mean"].isna().all():
            skipped.append(metric_label(metric))
            continue
        title = f"{metric_label(metric)} (reproduced; mean ± std over seeds)"
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
    if init == "none":  # the plugin's own words (e.g. raw pixels), else it trains its network
        return f"no pretrained backbone ({backbone or 'trained from scratch'})"
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


def run_categories(run_dir: Path) -> list[str] | None:
    """The protocol categories a run's run.json lists; None when it cannot say. A local
    run may be partial (killed, --categories, failed episodes): these say what is missing."""
    try:
        config = json.loads((Path(run_dir) / RUN_CONFIG).read_text(encoding="utf-8"))
        categories = config["protocol"]["categories"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(categories, list) or not categories:
        return None
    return [str(c) for c in categories]


def build_report(run_dir: Path) -> tuple[pd.DataFrame, str, str]:
    """The long table, its text and its Markdown, from a run directory or a submission."""
    records = read_records(run_dir)
    categories = run_categories(run_dir)
    long = aggregate(records, categories)
    failed = [r for r in latest_by_key(records).values() if r.status != STATUS_OK]
    header = "\n".join(provenance_lines(records))
    text = header + "\n\n" + render(long)
    md = header.replace("\n  ", "\n- ") + "\n\n" + render(long, markdown=True)
    notes = mean_gaps(records, categories)
    if failed:
        notes.append(f"{len(failed)} episode(s) failed; see records.jsonl (status=failed).")
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
        md += "\n" + "\n\n".join(notes) + "\n"
    return long, text, md


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[pd.DataFrame, str]:
    """Write report.csv and report.md into ``out_dir`` (default: the run directory)."""
    long, text, md = build_report(run_dir)
    out = Path(out_dir or run_dir)
    write_bytes_atomic(out / "report.csv", long.to_csv(index=False, float_format="%.6f").encode())
    write_bytes_atomic(out / "report.md", md.encode("utf-8"))
    return long, text
