"""Scores per defect kind: which defects a method finds and which it misses.

For each defect kind, its images are scored against every normal test image of the
episode. Records made since schema 2 carry these metrics (image AUROC, and pixel AUROC and
AUPRO computed from the maps during the run); for older records the image AUROC follows
from the per-image scores in their score files (the kind is the image's folder, as in the
MVTec layout), and the pixel metrics, which need the maps, are absent (empty, never 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from fsad_bench.errors import FsadError
from fsad_bench.metrics import image_auroc
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.run.scoring import BY_DEFECT
from fsad_bench.store import latest_by_key, read_scores

COLUMNS = ["method", "category", "defect", "k", "metric", "mean", "std", "n_seeds"]
FILE = "report_by_defect.csv"


def _kinds_from_scores(payload: dict) -> list[str]:
    """Each image's defect kind: recorded since schema 2, else its folder's name."""
    if isinstance(payload.get("defects"), list):
        return [str(d) for d in payload["defects"]]
    return [PurePosixPath(str(p)).parent.name for p in payload["paths"]]


def _from_scores(payload: dict) -> dict[str, dict[str, float | None]]:
    labels = np.asarray(payload["labels"])
    scores = np.asarray(payload["scores"], dtype=np.float64)
    kinds = np.asarray(_kinds_from_scores(payload))
    found = {}
    for kind in sorted(set(kinds[labels == 1])):
        keep = (labels == 0) | (kinds == kind)
        value = image_auroc(labels[keep], scores[keep])
        found[str(kind)] = {"image_auroc": None if np.isnan(value) else value}
    return found if len(found) > 1 else {}


def episode_rows(run_dir: Path, record: EpisodeRecord) -> list[dict]:
    by_defect = record.by_defect
    if not by_defect and record.scores_file:
        by_defect = _from_scores(read_scores(run_dir, record))
    rows = []
    for kind, values in sorted(by_defect.items()):
        for metric in BY_DEFECT:
            if metric in record.metrics:  # what the protocol computes
                rows.append(
                    {"method": record.method.label, "category": record.category,
                     "defect": kind, "k": record.k, "seed": record.seed, "metric": metric,
                     "value": values.get(metric)}
                )  # fmt: skip
    return rows


def by_defect(run_dir: Path, records: Sequence[EpisodeRecord]) -> pd.DataFrame:
    """Mean, sample std and number of seeds per (method, category, defect, K, metric)."""
    rows = []
    for record in latest_by_key(records).values():
        if record.status == STATUS_OK:
            rows += episode_rows(run_dir, record)
    if not rows:
        raise FsadError(
            f"{run_dir}: this dataset has no defect kinds (every anomalous image is of one "
            "kind), so there is nothing to break down; the per-category report is all there is"
        )
    frame = pd.DataFrame(rows)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    keys = ["method", "category", "defect", "k", "metric"]
    long = frame.groupby(keys, sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    long = long.rename(columns={"count": "n_seeds"})
    return long[COLUMNS]
