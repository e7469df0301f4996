"""Convert the published tables in submissions/reference/source/ to the leaderboard's format.

Output: submissions/reference/published.csv, one row per (method, dataset, protocol,
category, k, metric) with mean, std, n_seeds and source, every row ``kind=published``.
Where a paper gives per-category values but no category mean, the mean row is computed
here as the plain mean of the per-category values and its source says so (no std: the
per-seed values are not published).

    python scripts/convert_reference.py                     # from the committed copies
    python scripts/convert_reference.py --copy-from DIR     # refresh the copies from DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

REFERENCE = Path(__file__).resolve().parent.parent / "submissions" / "reference"
THESIS = "meta_riad_thesis_mvtec_image_auroc.csv"
REGAD = "regad_paper_mvtec_image_auroc.csv"
SUMMARY = "published_summary.csv"
SOURCES = (THESIS, REGAD, SUMMARY, "README.md")
COLUMNS = [
    "kind", "method", "plugin", "dataset", "protocol", "category", "k", "metric",
    "mean", "std", "n_seeds", "source",
]  # fmt: skip
# fsad-bench plugin that implements each published method (for published-vs-reproduced)
PLUGINS = {
    "RIAD": "riad", "PaDiM": "padim", "AnoGrad": "anograd", "Meta-RIAD": "meta_riad",
    "RegAD": "regad", "PatchCore (few-shot)": "patchcore",
    "PatchCore (full-shot WRN50)": "patchcore",
}  # fmt: skip
LOO = {"mvtec_ad": "mvtec_ad_loo", "mpdd": "mpdd_loo"}
OWN_SPLIT = "paper's own split"
THESIS_SOURCE = "Meta-RIAD thesis (UFPE, 2022), Tables 5, 8, 11 (combined tables)"
REGAD_SOURCE = "RegAD (ECCV 2022) Table 1, mean of 10 runs"


def _base(frame: pd.DataFrame, dataset: str, protocol: str, source: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "kind": "published",
            "method": frame["method"],
            "plugin": frame["method"].map(PLUGINS).fillna(""),
            "dataset": dataset,
            "protocol": protocol,
            "category": frame["category"],
            "k": frame["k"].astype(str),
            "metric": "image_auroc",
            "mean": frame["mean"],
            "std": frame.get("std", pd.Series(float("nan"), index=frame.index)),
            "source": source,
        }
    )
    return out


def thesis_rows(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path).rename(columns={"image_auroc_mean": "mean", "image_auroc_std": "std"})
    out = _base(frame, "mvtec_ad", "mvtec_ad_loo", THESIS_SOURCE)
    out["n_seeds"] = 5
    return out


def regad_rows(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path).rename(columns={"image_auroc_mean": "mean"})
    out = _base(frame, "mvtec_ad", "mvtec_ad_loo", REGAD_SOURCE)
    out["n_seeds"] = 10
    return out


def read_loose_csv(path: Path) -> pd.DataFrame:
    """A CSV whose last column is free text with unquoted commas (published_summary.csv)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    header = lines[0].split(",")
    rows = [line.split(",", len(header) - 1) for line in lines[1:]]
    frame = pd.DataFrame(rows, columns=header)
    for column in ("image_auroc", "pixel_auroc"):
        frame[column] = pd.to_numeric(frame[column])
    return frame


def summary_rows(path: Path) -> pd.DataFrame:
    frame = read_loose_csv(path)
    rows = []
    for record in frame.to_dict("records"):
        loo = record["method"] == "RegAD"  # RegAD meta-trains on the other categories
        for metric in ("image_auroc", "pixel_auroc"):
            if pd.isna(record[metric]):
                continue
            rows.append(
                {
                    "kind": "published",
                    "method": record["method"],
                    "plugin": PLUGINS.get(record["method"], ""),
                    "dataset": record["dataset"],
                    "protocol": LOO[record["dataset"]] if loo else OWN_SPLIT,
                    "category": "mean",
                    "k": str(record["k"]),
                    "metric": metric,
                    "mean": float(record[metric]),
                    "std": float("nan"),
                    "n_seeds": pd.NA,
                    "source": record["source"],
                }
            )
    return pd.DataFrame(rows)


def computed_means(per_category: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Category-mean rows for (method, dataset, protocol, k, metric) lacking a published one."""
    keys = ["kind", "method", "plugin", "dataset", "protocol", "k", "metric"]
    have = set(map(tuple, published[published["category"] == "mean"][keys].to_numpy()))
    grouped = per_category.groupby(keys, sort=False)
    rows = []
    for key, group in grouped:
        if tuple(key) in have:
            continue
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "category": "mean",
                "mean": group["mean"].mean(),
                "std": float("nan"),
                "n_seeds": group["n_seeds"].iloc[0],
                "source": f"{group['source'].iloc[0]}; category mean of the "
                f"{len(group)} per-category values, computed by fsad-bench",
            }
        )
    return pd.DataFrame(rows, columns=published.columns)


def convert(source_dir: Path) -> pd.DataFrame:
    per_category = pd.concat(
        [thesis_rows(source_dir / THESIS), regad_rows(source_dir / REGAD)], ignore_index=True
    )
    summary = summary_rows(source_dir / SUMMARY)
    frame = pd.concat(
        [per_category, summary, computed_means(per_category, summary)], ignore_index=True
    )
    frame["n_seeds"] = frame["n_seeds"].astype("Int64")
    return frame[COLUMNS].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REFERENCE / "source", help="input CSVs")
    parser.add_argument("--copy-from", type=Path, help="refresh --source from this folder first")
    parser.add_argument("--out", type=Path, default=REFERENCE / "published.csv", help="output")
    args = parser.parse_args()
    if args.copy_from:
        args.source.mkdir(parents=True, exist_ok=True)
        for name in SOURCES:
            shutil.copyfile(args.copy_from / name, args.source / name)
    frame = convert(args.source)
    frame.to_csv(args.out, index=False, float_format="%.6g")
    print(f"wrote {args.out} ({len(frame)} rows)")


if __name__ == "__main__":
    main()
