"""Submissions: a valid run round-trips; every kind of tampering is refused, nothing written.

Runs here are fabricated on the built-in synthetic_quick protocol with random scores; the
stored image AUROC is computed by a plain pairwise count, independent of fsad_bench.metrics.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fsad_bench.cli import app
from fsad_bench.protocols.manifests import (
    hash_test_set,
    load_manifest,
    load_test_manifest,
    manifest_key,
    support_hash,
)
from fsad_bench.protocols.protocol import load_protocol
from fsad_bench.records import EpisodeRecord, MethodRef
from fsad_bench.results.submission import (
    MANIFEST,
    SubmissionError,
    find_submissions,
    load_submission,
    submit,
)
from fsad_bench.results.submission.reading import content_hashes
from fsad_bench.store import RECORDS, RecordWriter, scores_file_name, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "synthetic_quick"


def pairwise_auroc(labels: list[int], scores: list[float]) -> float:
    """P(score of an anomaly > score of a normal), ties one half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def make_run(
    run_dir: Path,
    method: MethodRef | None = None,
    shift: float = 0.0,
    provenance: dict | None = None,
    produces_maps: bool = True,
) -> Path:
    """A complete run of synthetic_quick that passes validation (random, seeded scores)."""
    protocol = load_protocol(PROTOCOL)
    frozen = load_manifest(protocol.manifest_path())
    tests = load_test_manifest(protocol.test_manifest_path())
    method = method or MethodRef("patchcore", "1.0", None, {"weights": "pretrained"}, True)
    rng = np.random.default_rng(0)
    writer = RecordWriter(run_dir)
    for episode in protocol.episodes():
        labels = [0] * 6 + [1] * 10
        scores = [float(v) for v in rng.normal(size=16) + shift * np.array(labels)]
        metrics = {
            "image_auroc": pairwise_auroc(labels, scores),
            "pixel_auroc": 0.9 if produces_maps else None,
            "aupro": 0.8 if produces_maps else None,
        }
        key = manifest_key(episode.category, episode.k, episode.seed)
        record = EpisodeRecord(
            run_id="fab", method=method, protocol=protocol.name,
            protocol_version=protocol.version, protocol_hash=protocol.definition_hash(),
            dataset=protocol.dataset, category=episode.category, k=episode.k,
            seed=episode.seed, support_manifest_hash=support_hash(frozen[key]), status="ok",
            metrics=metrics, metric_notes={}, metrics_version="m",
            timing={"fit_s": 1.0, "predict_ms_per_image": 10.0 * (1 + episode.k)},
            env={"python": "3"}, provenance=provenance or {"backbone": "efficientnet_lite0"},
            test_set_hash=hash_test_set(tests[episode.category]),
        )  # fmt: skip
        record = replace(record, scores_file=scores_file_name(record.result_key))
        paths = [f"{episode.category}/test/x/{i:03d}.png" for i in range(16)]
        payload = {"paths": paths, "labels": labels, "scores": scores}
        write_json_atomic(run_dir / record.scores_file, payload)
        writer.append(record)
    config = {
        "identity": {"protocol": protocol.ref, "protocol_hash": protocol.definition_hash()},
        "protocol": {**protocol.to_dict(), "source": None},
        "methods": [method.name],
        "env": {"python": "3", "git_sha": None},
    }
    write_json_atomic(run_dir / "run.json", config)
    return run_dir


def edit_lines(path: Path, edit: Callable[[list[dict]], list[dict]]) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(row) + "\n" for row in edit(rows)))


def forge(folder: Path) -> None:
    """Recompute the manifest's hashes, as a tamperer would, to reach the deeper checks."""
    manifest = json.loads((folder / MANIFEST).read_text())
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    manifest.update(content_hashes(files))
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def test_valid_run_becomes_a_submission_that_loads_back(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "subs"
    folder = submit(run_dir, out, command="fsad-bench run --protocol synthetic_quick")
    assert folder.parent == out / "patchcore"
    submission = load_submission(folder)
    manifest = submission.manifest
    protocol = load_protocol(PROTOCOL)
    assert manifest["kind"] == "reproduced"
    assert manifest["protocol"]["definition_hash"] == protocol.definition_hash()
    assert manifest["command"] == "fsad-bench run --protocol synthetic_quick"
    assert manifest["backbone_init"] == "pretrained"
    assert len(submission.records) == len(list(protocol.episodes()))
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert on_disk == sorted([*manifest["files"], MANIFEST])
    assert not [p for p in (out / "patchcore").iterdir() if p.name.startswith(".tmp")]
    assert submit(run_dir, out) == folder  # same content: same id, nothing rewritten


def test_random_init_is_recorded(tmp_path: Path) -> None:
    method = MethodRef("patchcore", "1.0", None, {"weights": "random"}, True)
    folder = submit(make_run(tmp_path / "run", method=method), tmp_path / "subs")
    assert load_submission(folder).manifest["backbone_init"] == "random"


def _drop_first(rows: list[dict]) -> list[dict]:
    return rows[1:]


def _edit_metric(rows: list[dict]) -> list[dict]:
    rows[0]["metrics"]["image_auroc"] = min(1.0, rows[0]["metrics"]["image_auroc"] + 0.05)
    return rows


def _wrong_hash(rows: list[dict]) -> list[dict]:
    for row in rows:
        row["protocol_hash"] = "0123456789abcdef"
    return rows


def _failed(rows: list[dict]) -> list[dict]:
    rows[-1] = {**rows[-1], "status": "failed", "error": "boom"}
    return rows


def _support(rows: list[dict]) -> list[dict]:
    rows[0]["support_manifest_hash"] = "ffffffffffffffff"
    return rows


def _escape(rows: list[dict]) -> list[dict]:
    rows[0]["scores_file"] = "../../outside.json"
    return rows


def _string_k(rows: list[dict]) -> list[dict]:
    rows[0]["k"] = str(rows[0]["k"])
    return rows


RUN_TAMPERING = {
    "missing episode": (_drop_first, "episodes missing: brick/k1/seed0"),
    "edited metric": (_edit_metric, "differs from .* recomputed from scores/"),
    "wrong protocol hash": (_wrong_hash, "protocol hash 0123456789abcdef does not match"),
    "failed episode": (_failed, "failed \\(boom\\)"),
    "support manifest": (_support, "support manifest hash ffffffffffffffff differs"),
    "path escape": (_escape, "not scores/<hash>.json"),
    "string k": (_string_k, "record field k has type str"),
}


@pytest.mark.parametrize("case", sorted(RUN_TAMPERING))
def test_tampered_run_is_refused_and_nothing_written(
    case: str, run_dir: Path, tmp_path: Path
) -> None:
    edit, message = RUN_TAMPERING[case]
    edit_lines(run_dir / RECORDS, edit)
    if case == "wrong protocol hash":
        config = json.loads((run_dir / "run.json").read_text())
        config["identity"]["protocol_hash"] = "0123456789abcdef"
        (run_dir / "run.json").write_text(json.dumps(config))
    out = tmp_path / "subs"
    with pytest.raises(SubmissionError, match=message):
        submit(run_dir, out)
    assert not out.exists()


def test_torn_nan_and_oversized_files_are_refused(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = run_dir / RECORDS
    original = records.read_bytes()
    records.write_bytes(original + b'{"half": ')
    with pytest.raises(SubmissionError, match="torn"):
        submit(run_dir, tmp_path / "subs")
    records.write_bytes(original.replace(b'"aupro": 0.8', b'"aupro": NaN', 1))
    with pytest.raises(SubmissionError, match="not valid JSON"):
        submit(run_dir, tmp_path / "subs")
    records.write_bytes(original)
    monkeypatch.setattr("fsad_bench.results.submission.reading.MAX_FILE_BYTES", 100)
    with pytest.raises(SubmissionError, match="over the 100-byte limit"):
        submit(run_dir, tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


def test_garbage_line_is_named_with_its_fix(run_dir: Path, tmp_path: Path) -> None:
    records = run_dir / RECORDS
    lines = records.read_text().splitlines(keepends=True)
    records.write_text("".join([*lines[:2], "not json at all\n", *lines[2:]]))
    result = CliRunner().invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "subs")])
    output = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(output) == 1
    assert f"{records}:3: malformed record" in output[0]
    assert "remove that line" in output[0] and "fsad-bench run" in output[0]
    assert not (tmp_path / "subs").exists()


def test_symlinked_scores_outside_the_run_are_refused(run_dir: Path, tmp_path: Path) -> None:
    sidecar = sorted((run_dir / "scores").iterdir())[0]
    outside = tmp_path / "outside.json"
    shutil.move(sidecar, outside)
    os.symlink(outside, sidecar)
    with pytest.raises(SubmissionError, match="escapes"):
        submit(run_dir, tmp_path / "subs")


@pytest.fixture
def submitted(run_dir: Path, tmp_path: Path) -> Path:
    return submit(run_dir, tmp_path / "subs")


def test_edited_submission_file_is_refused(submitted: Path) -> None:
    edit_lines(submitted / RECORDS, _edit_metric)
    with pytest.raises(SubmissionError, match="records.jsonl: content differs from its hash"):
        load_submission(submitted)


@pytest.mark.parametrize("case", ["missing episode", "edited metric", "wrong protocol hash"])
def test_forged_submission_is_refused(case: str, submitted: Path) -> None:
    edit, message = RUN_TAMPERING[case]
    edit_lines(submitted / RECORDS, edit)
    if case == "wrong protocol hash":
        manifest = json.loads((submitted / MANIFEST).read_text())
        manifest["protocol"]["definition_hash"] = "0123456789abcdef"
        (submitted / MANIFEST).write_text(json.dumps(manifest))
    forge(submitted)
    with pytest.raises(SubmissionError, match=message):
        load_submission(submitted)


def test_extra_or_missing_files_are_refused(submitted: Path) -> None:
    (submitted / "scores" / "extra.py").write_text("print('hi')")
    with pytest.raises(SubmissionError, match="extra.py: not listed"):
        load_submission(submitted)
    (submitted / "scores" / "extra.py").unlink()
    sorted((submitted / "scores").iterdir())[0].unlink()
    with pytest.raises(SubmissionError, match="listed in manifest.json but missing"):
        load_submission(submitted)


def test_cli_submit_reports_one_line(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "subs")])
    assert result.exit_code == 0, result.output
    edit_lines(run_dir / RECORDS, _drop_first)
    result = runner.invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "other")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1
    assert lines[0].startswith("error:") and "episodes missing" in lines[0]


def test_records_from_two_code_versions_are_listed_and_noted(run_dir: Path, tmp_path: Path) -> None:
    def two_versions(rows: list[dict]) -> list[dict]:
        for i, row in enumerate(rows):
            row["env"] = {"git_sha": "aaa" if i % 2 else "bbb", "torch_threads": 1}
        return rows

    edit_lines(run_dir / RECORDS, two_versions)
    result = CliRunner().invoke(app, ["submit", str(run_dir), "--out", str(tmp_path / "subs")])
    assert result.exit_code == 0, result.output
    assert "more than one git_sha (aaa, bbb)" in result.output
    assert "torch_threads" not in result.output  # one thread count: nothing to say
    folder = find_submissions(tmp_path / "subs")[0]
    sources = load_submission(folder).manifest["record_sources"]
    assert sources == {"git_sha": ["aaa", "bbb"], "torch_threads": ["1"]}


def test_shipped_submissions_validate() -> None:
    folders = find_submissions(ROOT / "submissions")
    labels = {(load_submission(f).label, load_submission(f).manifest["protocol"]["name"])
              for f in folders}  # fmt: skip
    assert ("patchcore", "synthetic_loo") in labels and ("patchcore", "synthetic_quick") in labels
    for folder in folders:
        manifest = load_submission(folder).manifest
        protocol = load_protocol(manifest["protocol"]["name"])
        n = len(manifest["protocol"]["categories"]) * len(manifest["protocol"]["shots"])
        assert manifest["n_episodes"] == n * len(manifest["protocol"]["seeds"])
        assert manifest["protocol"]["definition_hash"] == protocol.definition_hash()


def test_records_outside_the_recorded_grid_are_refused(run_dir: Path, tmp_path: Path) -> None:
    config = json.loads((run_dir / "run.json").read_text())
    config["protocol"]["shots"] = [1]
    (run_dir / "run.json").write_text(json.dumps(config))
    with pytest.raises(SubmissionError, match="outside the grid of shots \\[1\\]"):
        submit(run_dir, tmp_path / "subs")


def test_command_from_run_carries_params_size_and_threads(run_dir: Path, tmp_path: Path) -> None:
    import shlex

    from fsad_bench.run.config import parse_params

    config = json.loads((run_dir / "run.json").read_text())
    params = {"weights": "random", "layers": [1, 2], "sigma": 2.5}
    config["identity"].update(method_params={"patchcore": params}, image_size=128)
    write_json_atomic(run_dir / "run.json", config)
    edit_lines(run_dir / RECORDS, lambda rows: [{**r, "env": {"torch_threads": 1}} for r in rows])
    folder = submit(run_dir, tmp_path / "subs", command="what the submitter typed")
    manifest = load_submission(folder).manifest
    assert manifest["command"] == "what the submitter typed"
    words = shlex.split(manifest["command_from_run"])
    assert words[:3] == ["OMP_NUM_THREADS=1", "fsad-bench", "run"]
    assert words[words.index("--image-size") + 1] == "128"
    given = [words[i + 1] for i, w in enumerate(words) if w == "--param"]
    assert parse_params(given) == {"patchcore": params}


def test_submissions_readme_lists_every_shipped_folder_as_its_manifest_says() -> None:
    """The tables are generated by scripts/list_submissions.py: a re-made submission must
    not leave a stale folder name, version or command in the README."""
    import runpy

    rows = runpy.run_path(str(ROOT / "scripts" / "list_submissions.py"))["rows"]
    readme = (ROOT / "submissions" / "README.md").read_text(encoding="utf-8")
    listed = [line for line in readme.splitlines() if line.startswith("| `")]
    assert sorted(listed) == sorted(rows(False)[2:] + rows(True)[2:])
