"""Load submissions, published tables and local runs into one long frame.

One row per (entry, dataset, protocol, category, k, metric): ``entry`` is what the views
show as a method: its name, plus "local run" for a run directory nobody validated and a
note when the backbone was not plainly pretrained (the kind has its own column), and ``k``
is a string because published full-shot results have K = "all". Beside it, ``episodes``
holds every episode's metric values (for paired comparisons) and ``timings`` every
episode's prediction time with whether it compares (cold feature cache) and on which
machine it was measured. Reproduced numbers come from ``fsad_bench.results.report``'s
``aggregate`` over the records, so they equal ``fsad-bench report``. ``n_categories`` /
``of_categories`` say how many of the protocol's categories a reproduced entry has results
for at that K (a mean over fewer is not the same number); both are NaN for published rows
and ``of_categories`` is NaN when unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsad_bench.errors import FsadError
from fsad_bench.identity import KIND_LOCAL, KIND_PUBLISHED, KIND_REPRODUCED
from fsad_bench.records import STATUS_OK, EpisodeRecord
from fsad_bench.results.report import (
    PREDICT_MS,
    aggregate,
    backbone_init,
    machine,
    method_label,
    records_frame,
    run_categories,
    timing_comparable,
)
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
    "mean", "std", "n_seeds", "backbone_init", "n_categories", "of_categories", "source",
    "origin",
]  # fmt: skip
KEYS = ["entry", "kind", "origin", "dataset", "protocol", "category", "k", "seed"]
EPISODE_COLUMNS = [*KEYS, "metric", "value"]
TIMING_COLUMNS = [*KEYS, "ms_per_image", "comparable", "cache_hits", "machine"]
MAX_MAPS = 24


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


@dataclass
class Board:
    """Everything the app shows: the long frame, per-episode values and timings, refused
    inputs, and where maps could be."""

    frame: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    origins: dict[str, Path] = field(default_factory=dict)  # origin label -> folder
    episodes: pd.DataFrame = field(default_factory=lambda: _empty(EPISODE_COLUMNS))
    timings: pd.DataFrame = field(default_factory=lambda: _empty(TIMING_COLUMNS))


@dataclass
class Part:
    """What one submission or run adds to the board."""

    rows: pd.DataFrame
    episodes: pd.DataFrame
    timings: pd.DataFrame


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


def entry_label(method: str, kind: str, init: str | None = None, where: str = "") -> str:
    """The name every view shows: the method, plus "local run" (and ``where``, the run's
    folder, when two local runs share a name) for an unvalidated run, and a note for a
    backbone that is not plainly pretrained. The kind itself has its own column."""
    extras = [f"{KIND_LOCAL} {where}".strip()] if kind == KIND_LOCAL else []
    note = init_note(init)
    if note:
        extras.append(note)
    return f"{method} ({', '.join(extras)})" if extras else method


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


def reproduced_part(
    records: Sequence[EpisodeRecord],
    origin: str,
    source: str,
    categories: Sequence[str] | None = None,
    kind: str = KIND_REPRODUCED,
) -> Part:
    """Aggregate each method's records (report.aggregate), attach labels and how many of
    the protocol's ``categories`` (None: unknown) each K covers; keep every episode's
    values and timing beside them."""
    ok = [r for r in latest_by_key(records).values() if r.status == STATUS_OK]
    parts = []
    for label in sorted({method_label(r) for r in ok}):
        mine = [r for r in ok if method_label(r) == label]
        init = backbone_init(mine)
        meta = {"entry": entry_label(label, kind, init), "kind": kind, "origin": origin,
                "dataset": mine[0].dataset, "protocol": mine[0].protocol}  # fmt: skip
        long = aggregate(mine, categories)
        covered, of = category_coverage(mine, categories)
        long["n_categories"] = long["k"].map(covered)
        long["of_categories"] = of
        long["k"] = long["k"].astype(str)
        long = long.assign(**meta, plugin=mine[0].method.name, backbone_init=init, source=source)
        values = records_frame(mine).drop(columns=["method", "dataset"]).assign(**meta)
        values["k"] = values["k"].astype(str)
        timings = pd.DataFrame(
            [{**meta, "category": r.category, "k": str(r.k), "seed": r.seed,
              "ms_per_image": r.timing.get(PREDICT_MS), "comparable": timing_comparable(r),
              "cache_hits": r.timing.get("feature_cache_hits"), "machine": machine(r)}
             for r in mine]
        )  # fmt: skip
        timings["ms_per_image"] = pd.to_numeric(timings["ms_per_image"], errors="coerce")
        parts.append(Part(long[COLUMNS], values[EPISODE_COLUMNS], timings[TIMING_COLUMNS]))
    if not parts:
        return Part(_empty(COLUMNS), _empty(EPISODE_COLUMNS), _empty(TIMING_COLUMNS))
    return Part(*(pd.concat(frames, ignore_index=True) for frames in zip(
        *((p.rows, p.episodes, p.timings) for p in parts), strict=True
    )))  # fmt: skip


def submission_part(submission: Submission) -> Part:
    """A submission's rows; coverage is counted against its manifest's protocol categories."""
    manifest = submission.manifest
    source = f"submission {submission.label}/{submission.submission_id}: {manifest['command']}"
    categories = [str(c) for c in manifest["protocol"]["categories"]]
    origin = f"{submission.label}/{submission.submission_id}"
    return reproduced_part(submission.records, origin, source, categories)


def submission_rows(submission: Submission) -> pd.DataFrame:
    return submission_part(submission).rows


def load_published(root: Path) -> pd.DataFrame:
    path = Path(root) / PUBLISHED_CSV
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, dtype={"k": str, "plugin": str}, keep_default_na=False,
                        na_values={"mean": [""], "std": [""], "n_seeds": [""]})  # fmt: skip
    frame = frame[frame["kind"] == KIND_PUBLISHED].copy()
    frame["entry"] = frame["method"].astype(str)
    frame["backbone_init"] = "as published"
    frame["n_categories"] = frame["of_categories"] = float("nan")
    frame["origin"] = "published tables"
    frame["n_seeds"] = pd.to_numeric(frame["n_seeds"], errors="coerce")
    return frame[COLUMNS]


def run_part(run_dir: Path) -> Part:
    """A local run directory: shown beside submissions, marked as not validated."""
    records = read_records(run_dir)
    origin = f"{KIND_LOCAL} {Path(run_dir).name}"
    source = f"{KIND_LOCAL} {run_dir} (not a validated submission)"
    return reproduced_part(records, origin, source, run_categories(run_dir), KIND_LOCAL)


def load_run(run_dir: Path) -> pd.DataFrame:
    return run_part(run_dir).rows


def renames(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(origin, entry) -> a unique name, where two origins show the same name on one
    dataset and protocol: a local run gets its folder's name, anything else its origin."""
    if frame.empty:
        return {}
    counts = frame.groupby(["entry", "dataset", "protocol"])["origin"].transform("nunique")
    clash = frame[counts > 1].drop_duplicates(["origin", "entry"])
    names = {}
    for row in clash.itertuples():
        if row.kind == KIND_LOCAL:
            where = str(row.origin).removeprefix(f"{KIND_LOCAL} ")
            names[(row.origin, row.entry)] = entry_label(
                row.method, row.kind, row.backbone_init, where
            )
        else:
            names[(row.origin, row.entry)] = f"{row.entry} [{row.origin}]"
    return names


def _rename(frame: pd.DataFrame, names: dict[tuple[str, str], str]) -> pd.DataFrame:
    if frame.empty or not names:
        return frame
    keys = list(zip(frame["origin"], frame["entry"], strict=True))
    frame = frame.copy()
    frame["entry"] = [
        names.get(key, entry) for key, entry in zip(keys, frame["entry"], strict=True)
    ]
    return frame


def load_board(submissions_root: Path, run_dirs: Sequence[Path] = ()) -> Board:
    """Read everything; a refused submission or run is listed in problems, not shown."""
    parts = [Part(load_published(submissions_root), _empty(EPISODE_COLUMNS),
                  _empty(TIMING_COLUMNS))]  # fmt: skip
    board = Board(pd.DataFrame(columns=COLUMNS))
    for folder in find_submissions(submissions_root):
        try:
            submission = load_submission(folder)
            part = submission_part(submission)
        except Exception as exc:  # noqa: BLE001 - one bad submission must not stop the board
            board.problems.append(f"{folder}: {type(exc).__name__}: {exc}")
            continue
        parts.append(part)
        board.origins[f"{submission.label}/{submission.submission_id}"] = folder
    for run_dir in run_dirs:
        try:
            part = run_part(run_dir)
        except FsadError as exc:
            board.problems.append(f"{run_dir}: {exc}")
            continue
        parts.append(part)
        board.origins[f"{KIND_LOCAL} {Path(run_dir).name}"] = Path(run_dir)

    def joined(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True)[columns] if frames else _empty(columns)

    frame = joined([p.rows for p in parts], COLUMNS)
    names = renames(frame)
    board.frame = _rename(frame, names)
    board.episodes = _rename(joined([p.episodes for p in parts], EPISODE_COLUMNS), names)
    board.timings = _rename(joined([p.timings for p in parts], TIMING_COLUMNS), names)
    return board


@dataclass(frozen=True)
class Panel:
    """One saved input | map | ground-truth image, which test image it shows, and the
    episode's map colour scale (map values at the dark and bright ends)."""

    image: Path
    caption: str
    path: str = ""
    scale: tuple[float, float] | None = None
    method: str = ""  # the episode's method label and K, for the leaderboard's filters
    k: str = ""


def has_maps(folder: Path) -> bool:
    """Cheap: whether a run or submission saved any anomaly-map panels."""
    return (Path(folder) / "maps").is_dir() and (Path(folder) / "records.jsonl").is_file()


def _scale(index: dict) -> tuple[float, float] | None:
    scale = index.get("scale")
    if not isinstance(scale, list) or len(scale) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale):
        return None
    return float(scale[0]), float(scale[1])


def saved_maps(folder: Path) -> dict[str, list[Panel]]:
    """Episode label (``method category K=k seed=s``) -> its saved panels (``fsad-bench run
    --save-maps N``), read as data: only PNG files named by the episode's index.json, inside
    the folder, size-limited."""
    import json

    from fsad_bench.run.gallery import maps_folder

    root = Path(folder).resolve()
    if not has_maps(root):
        return {}
    try:
        records = latest_by_key(read_records(root)).values()
    except FsadError:
        return {}
    episodes: dict[str, list[Panel]] = {}
    for record in sorted(records, key=lambda r: (r.category, r.k, r.seed)):
        directory = (root / maps_folder(record.result_key)).resolve()
        index_file = directory / "index.json"
        if not directory.is_relative_to(root) or not index_file.is_file():
            continue
        if index_file.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            panels = index["panels"]
        except (ValueError, KeyError, TypeError):
            continue
        shown = []
        for panel in panels[:MAX_MAPS]:
            if not isinstance(panel, dict):
                continue
            image = (directory / str(panel.get("file", ""))).resolve()
            if image.suffix != ".png" or not image.is_file():
                continue
            if not image.is_relative_to(directory) or image.stat().st_size > MAX_FILE_BYTES:
                continue
            kind = "defective" if panel.get("label") == 1 else "normal"
            score = panel.get("score")
            score_text = f"{score:.4g}" if isinstance(score, (int, float)) else "?"
            path = str(panel.get("path", "?"))
            caption = f"{path} ({kind}, score {score_text})"
            shown.append(Panel(image, caption, path, _scale(index), record.method.label,
                               str(record.k)))  # fmt: skip
        if shown:
            label = f"{record.method.label} {record.category} K={record.k} seed={record.seed}"
            episodes[label] = shown
    return episodes
