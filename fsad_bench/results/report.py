"""Aggregate records over seeds: long-format CSV, a thesis-style table, and Markdown.

std is the sample standard deviation over seeds (ddof=1) and is empty with one seed;
metrics that do not apply (no maps, image-level data) stay empty, never 0. The 'mean'
category row of a (method, K) is only computed when every category has a value for every
seed played at that K; otherwise it is empty and ``mean_gaps`` says which episodes lack.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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


def read_config(run_dir: Path) -> dict[str, Any]:
    """run.json (a run) or manifest.json (a submission); {} when neither can be read."""
    from fsad_bench.results.submission.reading import MANIFEST

    for name in (RUN_CONFIG, MANIFEST):
        try:
            data = json.loads((Path(run_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return {**data, "_file": name}
    return {}


def run_command(run_dir: Path, config: dict[str, Any]) -> str | None:
    """The command that made the run: a submission's own, or one rebuilt from run.json (the
    protocol, methods, grid and every parameter given explicitly)."""
    from fsad_bench.protocols.protocol import ADHOC_VERSION
    from fsad_bench.results.submission.reading import MANIFEST

    if config.get("_file") == MANIFEST:
        return str(config.get("command") or "") or None
    protocol, identity = config.get("protocol") or {}, config.get("identity") or {}
    if not protocol.get("name"):
        return None
    if protocol.get("version") == ADHOC_VERSION:  # a folder run without a protocol file
        parts = ["--data-root", str(protocol.get("data_root")), "--layout", protocol["layout"]]
    else:
        parts = ["--protocol", protocol["name"]]
        if protocol.get("data_root") and protocol.get("layout") not in ("synthetic", "elpv"):
            parts += ["--data-root", str(protocol["data_root"])]
    for method in config.get("methods") or []:
        parts += ["--method", str(method)]
    for method, params in sorted((identity.get("method_params") or {}).items()):
        for key, value in sorted(params.items()):
            parts += ["--param", f"{method}.{key}={json.dumps(value)}"]
    size = identity.get("image_size") or protocol.get("image_size")
    if size:  # always: a folder protocol's default size is not written anywhere
        parts += ["--image-size", str(size)]
    parts += ["--shots", ",".join(map(str, protocol.get("shots") or []))]
    parts += ["--seeds", ",".join(map(str, protocol.get("seeds") or []))]
    parts += ["--out", str(run_dir)]
    return " ".join(["fsad-bench", "run", *map(shlex.quote, parts)])


def settings_lines(records: Sequence[EpisodeRecord]) -> list[str]:
    """What changes the numbers beyond the protocol: each method's version, package and
    parameters, the batch size, and the machine (CPU, device, threads, code version)."""
    lines = []
    by_method: dict[str, list[EpisodeRecord]] = {}
    for record in records:
        by_method.setdefault(method_label(record), []).append(record)
    for name, group in sorted(by_method.items()):
        first = group[-1]
        package = first.provenance.get("plugin_package")
        batch = sorted({str(r.settings.get("batch_size", "unrecorded")) for r in group})
        lines.append(
            f"{name}: version {first.method.version}"
            + (f" ({package})" if package else "")
            + f", batch size {', '.join(batch)}, parameters "
            + json.dumps(first.method.params, sort_keys=True)
        )
    lines.append(f"machine: {'; '.join(sorted({machine(r) for r in records}))}")
    lines.append(
        f"fsad-bench git commit: {', '.join(sorted({str(r.env.get('git_sha')) for r in records}))}"
    )
    return lines


# timing["feature_cache_hits"] is written by run/episode.py: batches whose backbone features
# came from the process's feature cache while predicting (records before it lack the key)
CACHE_HITS = "feature_cache_hits"
PREDICT_MS = "predict_ms_per_image"


def timing_comparable(record: EpisodeRecord) -> bool:
    """Whether the episode's prediction time is a cold one: no feature-cache hit recorded,
    or (records from before hits were recorded) a method without a backbone, which never
    uses the backbone feature cache. A hit skips the backbone and makes an episode look
    several times faster than a first pass over the same images."""
    hits = record.timing.get(CACHE_HITS)
    if hits is None:
        return backbone_init([record]) == "none"
    return hits == 0


def machine(record: EpisodeRecord) -> str:
    """CPU model (when unrecorded: the platform and CPU count), device and threads: timings
    from different machines do not compare."""
    env = record.env
    cpu = env.get("cpu") or (
        f"CPU not recorded ({env.get('platform', '?')}, {env.get('cpu_count', '?')} CPUs)"
    )
    return f"{cpu}, {env.get('device', '?')}, {env.get('torch_threads', '?')} thread(s)"


def round_to_noise(value: float, spread: float) -> float:
    """``value`` rounded to the leading digit of its spread (two significant digits when
    the spread is unknown): digits below the noise are not information."""
    if not math.isfinite(value) or value == 0:
        return value
    if math.isfinite(spread) and spread > 0:
        return round(value, -math.floor(math.log10(spread)))
    return round(value, 1 - math.floor(math.log10(abs(value))))


def cold_timings(records: Sequence[EpisodeRecord]) -> np.ndarray:
    """Prediction ms per image of the episodes whose timing compares (``timing_comparable``)."""
    values = [r.timing.get(PREDICT_MS) for r in records if timing_comparable(r)]
    return np.array([v for v in values if isinstance(v, (int, float))], dtype=np.float64)


def timing_table(records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    """Per method, K (prediction cost grows with the support for many methods) and, when
    the records come from more than one, machine: episodes, median fit seconds, prediction
    ms per image over the cold episodes (rounded to their spread) and their count, peak
    memory, total meta-training seconds. Missing values are None."""
    groups: dict[tuple[str, int, str], list[EpisodeRecord]] = {}
    for record in records:
        if record.status == STATUS_OK:
            key = (method_label(record), record.k, machine(record))
            groups.setdefault(key, []).append(record)
    rows = []
    for (name, k, where), group in sorted(groups.items()):
        cold = cold_timings(group)
        spread = float(cold.std(ddof=1)) if len(cold) > 1 else None
        fit = [r.timing["fit_s"] for r in group if r.timing.get("fit_s") is not None]
        peak = [r.timing["peak_mem_mb"] for r in group if r.timing.get("peak_mem_mb")]
        ms = round_to_noise(float(cold.mean()), spread or math.nan) if len(cold) else None
        rows.append(
            {"method": name, "K": k, "machine": where, "episodes": len(group),
             "fit s (median)": float(np.median(fit)) if fit else None,
             "predict ms / image": ms, "episode std": spread, "cold episodes": len(cold),
             "peak MB (max)": float(max(peak)) if peak else None,
             "meta-fit s (total)": float(sum(r.timing.get("meta_fit_s") or 0 for r in group))}
        )  # fmt: skip
    table = pd.DataFrame(rows)
    if not table.empty and table["machine"].nunique() == 1:
        table = table.drop(columns="machine")
    return table


def failure_lines(records: Sequence[EpisodeRecord]) -> list[str]:
    """Each distinct failure reason once, with the episodes it hit."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if record.status != STATUS_OK:
            key = (method_label(record), str(record.error or "no reason recorded"))
            reasons.setdefault(key, []).append(f"{record.category} K={record.k} seed {record.seed}")
    lines = []
    for (method, reason), where in sorted(reasons.items()):
        more = len(where) - _SHOWN_GAPS
        shown = ", ".join(where[:_SHOWN_GAPS]) + (f" and {more} more" if more > 0 else "")
        lines.append(f"{method}: {len(where)} episode(s) ({shown}): {reason}")
    return lines


def _fenced(lines: Sequence[str]) -> str:
    """Text from records (errors, names) in a code block: shown as written, never rendered."""
    body = "\n".join(line.replace("`", "'") for line in lines)
    return f"```text\n{body}\n```"


def about_run(run_dir: Path, records: Sequence[EpisodeRecord]) -> str:
    """report.md's account of how the numbers were made: command, settings, timing and
    failure reasons."""
    latest = list(latest_by_key(records).values())
    command = run_command(run_dir, read_config(run_dir))
    blocks = ["## How this was run", _fenced([command or "command unknown (no run.json)"])]
    blocks += ["### Settings", _fenced(settings_lines(latest))]
    timing = timing_table(latest)
    if not timing.empty:
        blocks += [
            "### Timing",
            "Prediction time per test image: mean over the episodes that computed every "
            "backbone feature themselves (no feature-cache hit), rounded to the leading digit "
            "of their spread; fit and meta-fit in seconds, peak resident memory in MB.",
            timing.astype(object)
            .where(timing.notna(), None)
            .to_markdown(index=False, floatfmt=".4g", missingval="n/a"),
        ]
    failures = failure_lines(latest)
    if failures:
        blocks += ["### Failures", _fenced(failures)]
    return "\n\n".join(blocks) + "\n"


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
    md += "\n" + about_run(run_dir, records)
    return long, text, md


REPORT_FILES = ("report.csv", "report.md", "comparisons.csv")


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[pd.DataFrame, str]:
    """Write report.csv, report.md, comparisons.csv (compare.paired) and plots/*.png into
    ``out_dir`` (default: the run directory)."""
    from fsad_bench.results import compare, plots

    long, text, md = build_report(run_dir)
    out = Path(out_dir or run_dir)
    values = records_frame(read_records(run_dir))
    metric = plots.primary_metric(long)
    if metric:
        plots.write_plots(long, compare.critical_differences(values, metric), metric, out)
    write_bytes_atomic(out / "report.csv", long.to_csv(index=False, float_format="%.6f").encode())
    write_bytes_atomic(out / "report.md", md.encode("utf-8"))
    table = compare.paired(values).to_csv(index=False, float_format="%.6g")
    write_bytes_atomic(out / compare.FILE, table.encode())
    return long, text
