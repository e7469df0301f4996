"""Submissions: a validated, self-contained copy of one method's run; data, never code.

``submissions/<method>/<id>/`` holds ``records.jsonl``, the per-image score sidecars under
``scores/`` and ``manifest.json`` (what produced the numbers, and a content hash over every
other file). Submissions come from other people and the leaderboard shows them, so every
file is read with ``json`` only, size-limited and confined to its folder (``reading``), and
a submission is re-validated (protocol hash, frozen supports, image AUROC from the scores;
``validation``) whenever it is loaded (``loading``); ``building`` makes one from a run.
"""

from fsad_bench.results.submission.building import (
    build_submission,
    command_from_run,
    record_sources,
    submit,
    write_submission,
)
from fsad_bench.results.submission.loading import find_submissions, load_submission
from fsad_bench.results.submission.reading import (
    MANIFEST,
    MAX_FILE_BYTES,
    SUBMISSION_SCHEMA,
    Grid,
    Submission,
    SubmissionError,
    confined,
    parse_json,
    parse_records,
    read_bytes_limited,
    read_json,
)
from fsad_bench.results.submission.validation import (
    builtin_protocol,
    check_scores,
    map_file_problems,
    validate_records,
)

__all__ = [
    "MANIFEST",
    "MAX_FILE_BYTES",
    "SUBMISSION_SCHEMA",
    "Grid",
    "Submission",
    "SubmissionError",
    "build_submission",
    "builtin_protocol",
    "check_scores",
    "command_from_run",
    "confined",
    "find_submissions",
    "load_submission",
    "map_file_problems",
    "parse_json",
    "parse_records",
    "read_bytes_limited",
    "read_json",
    "record_sources",
    "submit",
    "validate_records",
    "write_submission",
]
