"""Kill a real run with SIGKILL midway, run it again: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import run
from fsad_bench.store import read_records

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


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; prctl is Linux")
def test_pool_workers_die_with_a_killed_parent(mvtec_root: Path, tmp_path: Path) -> None:
    """kill -9 of the run must not leave workers computing (and holding GBs) unseen."""
    args = [*cli_args(mvtec_root, tmp_path / "run"), "--workers", "2"]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = {
            pid
            for pid in _children(proc.pid)
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        }
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) >= 2, "no pool workers to orphan"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(cli_args(mvtec_root, out), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while line_count(out / "records.jsonl") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted: the finished episodes are kept in {out}" in err
    assert "Traceback" not in err
