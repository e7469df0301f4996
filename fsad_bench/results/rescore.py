"""Fill in image-level metrics of older records from their per-image scores, without rerunning.

Records made before a metric existed (metrics v1 had image AUROC, pixel AUROC and AUPRO)
hold every image's label and score in their score file, so image AP and F1-max follow
exactly. Pixel-level ones need the anomaly maps, which a run does not keep: they are
recorded as absent (null with a note), never guessed. A run directory is rewritten in
place; a submission never is: its rescored copy is written as a new submission folder.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from fsad_bench import metrics
from fsad_bench.errors import FsadError
from fsad_bench.identity import IMAGE_METRICS, PIXEL_METRICS
from fsad_bench.records import STATUS_OK, EpisodeRecord, clean_metric
from fsad_bench.results.submission import (
    MANIFEST,
    Submission,
    load_submission,
    read_json,
    write_submission,
)
from fsad_bench.results.submission.reading import content_hashes
from fsad_bench.results.submission.validation import image_metrics_from_scores
from fsad_bench.store import RECORDS, read_records, read_scores, write_bytes_atomic

ABSENT = "absent: the run predates this metric and kept no maps; rerun to compute it"
UNDEFINED = "undefined: the test set lacks normal or anomalous samples"


def rescore_record(
    record: EpisodeRecord, payload: object, wanted: tuple[str, ...]
) -> EpisodeRecord:
    """``record`` with every metric of ``wanted`` it lacks: image-level ones recomputed from
    ``payload`` (its score file), pixel-level ones null with the reason."""
    missing = [name for name in wanted if name not in record.metrics]
    if not missing or record.status != STATUS_OK:
        return record
    values, notes = dict(record.metrics), dict(record.metric_notes)
    image = [name for name in missing if name in IMAGE_METRICS]
    for name, value in image_metrics_from_scores(payload, image, str(record.scores_file)).items():
        values[name] = clean_metric(value)
        if values[name] is None:
            notes[name] = UNDEFINED
    # a pixel metric that did not apply (no maps, image-level labels) does not apply now
    inapplicable = record.metrics.get("pixel_auroc") is None and "pixel_auroc" in notes
    for name in missing:
        if name in PIXEL_METRICS:
            values[name] = None
            notes[name] = notes["pixel_auroc"] if inapplicable else ABSENT
    version = f"{metrics.METRICS_VERSION} (image metrics rescored; was {record.metrics_version})"
    return replace(record, metrics=values, metric_notes=notes, metrics_version=version)


def _wanted(records: tuple[EpisodeRecord, ...] | list[EpisodeRecord]) -> tuple[str, ...]:
    """Every image-level metric, and the pixel-level ones when the records hold any."""
    pixel = any(name in r.metrics for r in records for name in PIXEL_METRICS)
    return (*IMAGE_METRICS, *PIXEL_METRICS) if pixel else IMAGE_METRICS


def rescore_run(run_dir: Path) -> int:
    """Rewrite a run directory's records with the missing image-level metrics; how many
    records changed."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).is_file():
        raise FsadError(
            f"{run_dir} is a submission, which is never modified; pass --out SUBMISSIONS to "
            "write its rescored copy as a new submission"
        )
    records = read_records(run_dir)
    wanted = _wanted(records)
    changed = [
        rescore_record(r, read_scores(run_dir, r) if r.status == STATUS_OK else None, wanted)
        for r in records
    ]
    count = sum(a is not b for a, b in zip(records, changed, strict=True))
    if count:
        data = "".join(r.to_json() + "\n" for r in changed).encode("utf-8")
        write_bytes_atomic(run_dir / RECORDS, data)
    return count


def rescore_submission(folder: Path, out_root: Path, command: str) -> Path:
    """A new submission folder holding ``folder``'s records with the missing image metrics;
    the original is left as it is (its content hash would no longer match)."""
    old = load_submission(folder)
    wanted = _wanted(old.records)
    records = [
        rescore_record(r, read_json(folder, r.scores_file) if r.scores_file else None, wanted)
        for r in old.records
    ]
    files = {RECORDS: "".join(r.to_json() + "\n" for r in records).encode("utf-8")}
    for path in old.manifest["files"]:
        if path != RECORDS:
            files[path] = (Path(folder) / path).read_bytes()
    manifest = {key: value for key, value in old.manifest.items() if key not in ("files",)}
    manifest["metrics_version"] = records[0].metrics_version
    manifest["rescored"] = {
        "from": old.submission_id,
        "command": command,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "image-level metrics recomputed from the score files; pixel-level ones that "
        "need maps are recorded as absent",
    }
    manifest.update(content_hashes(files))
    manifest["submission_id"] = f"{manifest['protocol']['name']}-{manifest['content_hash'][:12]}"
    return write_submission(Submission(None, manifest, tuple(records)), files, out_root)
