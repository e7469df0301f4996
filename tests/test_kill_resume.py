"""Kill a real run with SIGKILL midway, run it again: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fsad_bench.config import build_run_config
from fsad_bench.results import read_records
from fsad_bench.runner import run

CLI = [sys.executable, "-c", "from fsad_bench.cli import app; app()"]
OPTIONS = {"layout": "mvtec", "method": "patchcore", "shots": "1", "seeds": "0,1",
           "image_size": "64"}  # fmt: skip


def cli_args(root: Path, out: Path) -> list[str]:
    options = {**OPTIONS, "data_root": root, "out": out}
    flags = [(f"--{key.replace('_', '-')}", str(value)) for key, value in options.items()]
    return [*CLI, "run", *(item for pair in flags for item in pair)]


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_midway_then_rerun_equals_uninterrupted(mvtec_root: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(mvtec_root, killed), stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while line_count(killed / "records.jsonl") < 2 and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= line_count(killed / "records.jsonl") < 6
    subprocess.run(cli_args(mvtec_root, killed), check=True, capture_output=True)

    whole = tmp_path / "whole"
    options = {**OPTIONS, "methods": OPTIONS["method"], "data_root": mvtec_root, "out": whole}
    del options["method"]
    run(build_run_config(options), log=lambda _: None)

    resumed, reference = read_records(killed), read_records(whole)
    assert len(resumed) == len({r.result_key for r in resumed}) == 6
    assert {r.result_key: (r.metrics, r.support_manifest_hash) for r in resumed} == {
        r.result_key: (r.metrics, r.support_manifest_hash) for r in reference
    }
    for record in resumed:  # every record has its per-image scores
        assert (killed / record.scores_file).exists()
