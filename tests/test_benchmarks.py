"""Every benchmark script runs to the end in smoke mode (tiny sizes, one repeat).

The figures in docs/performance.md come from these scripts; a script that no longer runs
(an interface changed under it) fails here instead of on the next person who tries to
reproduce a figure. Smoke runs measure nothing, so nothing here asserts a speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
HELPERS = {"cputime.py"}  # imported by the scripts, not a script

# script and arguments -> a line its output must contain (what the script is for)
SMOKE_RUNS: dict[str, str] = {
    "bench_aupro.py": "speed-up",
    "bench_bridge_vs_engine.py": "Engine fit+predict",
    "bench_coreset.py": "identical",
    "bench_meta_steps.py": "second-order / first-order",
    "bench_padim.py": "fit_s",
    "bench_patchcore.py": "predict/forward",
    "bench_pr_metrics.py": "sklearn/ours",
    "bench_runs.py cache": "same metrics: True",
    "bench_runs.py memory": "peak RSS",
    "bench_vs_anomalib.py": "predict / forward",
    "elpv_patchcore_variants.py": "chosen on poly",
    "synthetic2_targets.py": "targets not judged",
}


def test_every_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - HELPERS
    covered = {run.split()[0] for run in SMOKE_RUNS}
    assert scripts == covered, "add the new benchmark script to SMOKE_RUNS"


@pytest.mark.slow
@pytest.mark.parametrize("run", list(SMOKE_RUNS))
def test_script_runs_in_smoke_mode(run: str, tmp_path: Path) -> None:
    if run.startswith("elpv_"):
        pytest.importorskip("elpv_dataset", reason="needs the elpv extra")
    script, *args = run.split()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCHMARKS.parent)}
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--smoke", "--repeats", "3"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # scripts must not depend on the working directory
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "smoke mode" in result.stdout
    assert SMOKE_RUNS[run] in output, output[-3000:]
