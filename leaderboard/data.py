"""Load submissions, published tables and local runs into one long frame.

One row per (entry, dataset, protocol, category, k, metric): ``entry`` is what the views
show as a method (name plus "published"/"reproduced" and a label when the backbone was not
plainly pretrained), ``k`` is a string because published full-shot results have K = "all".
Reproduced numbers come from ``fsad_bench.results.report.aggregate`` over the records, so they equal
``fsad-bench report``. ``n_categories`` / ``of_categories`` say how many of the protocol's
categories a reproduced entry has results for at that K (a mean over fewer is not the same
number); both are NaN for published rows and ``of_categories`` is NaN when unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsad_bench.errors import FsadError
from fsad_bench.identity import KIND_PUBLISHED, KIND_REPRODUCED
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.results.report import aggregate, backbone_init, method_label, run_categories
from fsad_bench.results.submission import (
    MAX_FILE_BYTES,
    Submission,
    find_submissions,
    load_submission,
)
from fsad_bench.store import latest_by_key, read_records

PUBLISHED_CSV = Path("reference") / "published.csv"
COLUMNS = [
    "entry", "kind", "method", "plugin", "dataset", "protocol", "category", "k", "metric",
    "mean", "std", "n_seeds", "backbone_init", "ms_per_image", "n_categories", "of_categories",
    "source", "origin",
]  # fmt: skip
MAX_MAPS = 24


@dataclass
class Board:
    """Everything the app shows: the long frame, refused inputs, and where maps could be."""

    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    origins: dict[str, Path] = field(default_factory=dict)  # origin label -> folder


# backbone inits that need no warning in the method's name (None: published, as in the paper)
PLAIN_INITS = (None, "pretrained", "none")


def init_note(init: str | None) -> str | None:
    """What the name must say about a backbone init other than pretrained / no backbone, so
    that a random, mixed or unrecorded init never passes for a pretrained one."""
    if init in PLAIN_INITS:
        return None
    if init == "random":
        return "random-init backbone"
    if str(init).startswith("mixed"):
        return "mixed backbone init"
    return "backbone init unknown"


def entry_label(method: str, kind: str, init: str | None = None) -> str:
    """``method (kind[, init note])``: the name every view shows."""
    extras = [kind]
    note = init_note(init)
    if note:
        extras.append(note)
    return f"{method} ({', '.join(extras)})"


def category_coverage(
    records: Sequence[EpisodeRecord], categories: Sequence[str] | None
) -> tuple[pd.Series, float]:
    """Per K, how many of the protocol's categories have results (their 'mean' row averages
    only those), and how many the protocol has (NaN when not known)."""
    expected = set(categories) if categories else None
    per_k: dict[int, set[str]] = {}
    for record in records:
        per_k.setdefault(record.k, set()).add(record.category)
    counts = {k: len((found & expected) if expected else found) for k, found in per_k.items()}
    return pd.Series(counts, dtype=float), float(len(expected)) if expected else float("nan")


def reproduced_rows(
    records: Sequence[EpisodeRecord],
    origin: str,
    source: str,
    categories: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Aggregate one method's records (report.aggregate) and attach labels, timing and how
    many of the protocol's ``categories`` (None: unknown) each K covers."""
    ok = [r for r in latest_by_key(records).values() if r.status == STATUS_OK]
    if not ok:
        return pd.DataFrame(columns=COLUMNS)
    frames = []
    for label in sorted({method_label(r) for r in ok}):
        mine = [r for r in ok if method_label(r) == label]
        long = aggregate(mine, categories)
        init = backbone_init(mine)
        timing = pd.DataFrame(
            {"k": [r.k for r in mine], "ms": [r.timing.get("predict_ms_per_image") for r in mine]}
        )
        timing["ms"] = pd.to_numeric(timing["ms"], errors="coerce")
        ms = timing.groupby("k")["ms"].mean()
        long["ms_per_image"] = long["k"].map(ms)
        covered, of = category_coverage(mine, categories)
        long["n_categories"] = long["k"].map(covered)
        long["of_categories"] = of
        long["k"] = long["k"].astype(str)
        long["entry"] = entry_label(label, KIND_REPRODUCED, init)
        long["kind"] = KIND_REPRODUCED
        long["plugin"] = mine[0].method.name
        long["dataset"] = mine[0].dataset
        long["protocol"] = mine[0].protocol
        long["backbone_init"] = init
        long["source"] = source
        long["origin"] = origin
        frames.append(long)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def submission_rows(submission: Submission) -> pd.DataFrame:
    """A submission's rows; coverage is counted against its manifest's protocol categories."""
    manifest = submission.manifest
    source = f"submission {submission.label}/{submission.submission_id}: {manifest['command']}"
    categories = [str(c) for c in manifest["protocol"]["categories"]]
    return reproduced_rows(
        submission.records, f"{submission.label}/{submission.submission_id}", source, categories
    )


def load_published(root: Path) -> pd.DataFrame:
    path = Path(root) / PUBLISHED_CSV
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, dtype={"k": str, "plugin": str}, keep_default_na=False,
                        na_values={"mean": [""], "std": [""], "n_seeds": [""]})  # fmt: skip
    frame = frame[frame["kind"] == KIND_PUBLISHED].copy()
    frame["entry"] = [entry_label(m, KIND_PUBLISHED) for m in frame["method"]]
    frame["backbone_init"] = "as published"
    frame["ms_per_image"] = float("nan")
    frame["n_categories"] = frame["of_categories"] = float("nan")
    frame["origin"] = "published tables"
    frame["n_seeds"] = pd.to_numeric(frame["n_seeds"], errors="coerce")
    return frame[COLUMNS]


def load_run(run_dir: Path) -> pd.DataFrame:
    """A local run directory, shown beside submissions but marked as not validated."""
    records = read_records(run_dir)
    origin = f"local run {Path(run_dir).name}"
    source = f"local run {run_dir} (not a validated submission)"
    return reproduced_rows(records, origin, source, run_categories(run_dir))


def _disambiguate(frame: pd.DataFrame) -> pd.DataFrame:
    """Two origins of the same entry name on one dataset/protocol get the origin appended."""
    if frame.empty:
        return frame
    counts = frame.groupby(["entry", "dataset", "protocol"])["origin"].transform("nunique")
    clash = counts > 1
    frame.loc[clash, "entry"] = frame.loc[clash, "entry"] + " [" + frame.loc[clash, "origin"] + "]"
    return frame


def load_board(submissions_root: Path, run_dirs: Sequence[Path] = ()) -> Board:
    """Read everything; a refused submission or run is listed in problems, not shown."""
    frames = [load_published(submissions_root)]
    board = Board(pd.DataFrame(columns=COLUMNS))
    for folder in find_submissions(submissions_root):
        try:
            submission = load_submission(folder)
            rows = submission_rows(submission)
        except Exception as exc:  # noqa: BLE001 - one bad submission must not stop the board
            board.problems.append(f"{folder}: {type(exc).__name__}: {exc}")
            continue
        frames.append(rows)
        board.origins[f"{submission.label}/{submission.submission_id}"] = folder
    for run_dir in run_dirs:
        try:
            rows = load_run(run_dir)
        except FsadError as exc:
            board.problems.append(f"{run_dir}: {exc}")
            continue
        frames.append(rows)
        board.origins[f"local run {Path(run_dir).name}"] = Path(run_dir)
    frames = [f for f in frames if not f.empty]
    if frames:
        board.frame = _disambiguate(pd.concat(frames, ignore_index=True)[COLUMNS])
    return board


@dataclass(frozen=True)
class Panel:
    """One saved input | map | ground-truth image and what it shows."""

    image: Path
    caption: str


def saved_maps(folder: Path) -> dict[str, list[Panel]]:
    """Episode label -> its saved panels (``fsad-bench run --save-maps N``), read as data:
    only PNG files named by the episode's index.json, inside the folder, size-limited."""
    import json

    from fsad_bench.run.gallery import maps_folder

    root = Path(folder).resolve()
    if not (root / "maps").is_dir() or not (root / "records.jsonl").is_file():
        return {}
    try:
        records = latest_by_key(read_records(root)).values()
    except FsadError:
        return {}
    episodes: dict[str, list[Panel]] = {}
    for record in sorted(records, key=lambda r: (r.category, r.k, r.seed)):
        directory = (root / maps_folder(record.result_key)).resolve()
        index = directory / "index.json"
        if not directory.is_relative_to(root) or not index.is_file():
            continue
        if index.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            panels = json.loads(index.read_text(encoding="utf-8"))["panels"]
        except (ValueError, KeyError, TypeError):
            continue
        shown = []
        for panel in panels[:MAX_MAPS]:
            image = (directory / str(panel.get("file", ""))).resolve()
            if image.suffix != ".png" or not image.is_file():
                continue
            if not image.is_relative_to(directory) or image.stat().st_size > MAX_FILE_BYTES:
                continue
            kind = "defective" if panel.get("label") == 1 else "normal"
            score = panel.get("score")
            score_text = f"{score:.4g}" if isinstance(score, (int, float)) else "?"
            shown.append(Panel(image, f"{panel.get('path', '?')} ({kind}, score {score_text})"))
        if shown:
            label = f"{record.method.label} {record.category} K={record.k} seed={record.seed}"
            episodes[label] = shown
    return episodes
