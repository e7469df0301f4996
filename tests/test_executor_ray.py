"""``--executor ray`` on a local Ray (2 CPUs, tiny data): the same records as the local
executor, failures and crashes recorded, time limits enforced, resume, clean cancellation."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import ray  # no importorskip: CI installs the ray extra, and these tests must run there

from fsad_bench.errors import FsadError
from fsad_bench.execution import Limits
from fsad_bench.execution import ray as executor_ray
from fsad_bench.protocols.manifests import plan_supports
from fsad_bench.protocols.protocol import load_categories
from fsad_bench.run.config import build_run_config
from fsad_bench.run.runner import build_tasks, episode_work, run
from fsad_bench.store import read_records

pytestmark = [pytest.mark.usefixtures("fake_methods"), pytest.mark.slow]
VOLATILE = ("run_id", "timing", "env")  # differ between any two runs, whatever the executor


def config(root: Path, out: Path, **extra: Any) -> Any:
    options = {"data_root": root, "layout": "mvtec", "methods": "meandist", "shots": "1,2",
               "seeds": "0", "categories": "alpha", "out": out, "image_size": 32,
               "executor": "ray", "workers": 2, **extra}  # fmt: skip
    return build_run_config(options)


def quiet_run(cfg: Any) -> Any:
    return run(cfg, log=lambda _: None)


def stable_records(out: Path) -> dict[str, dict[str, Any]]:
    lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return {
        f"{r['method']['name']}:{r['category']}:{r['k']}:{r['seed']}": {
            k: v for k, v in r.items() if k not in VOLATILE
        }
        for r in records
    }


@pytest.fixture(scope="module")
def shared_ray() -> Iterator[None]:
    """One local Ray for the module (start-up costs seconds); the executor must reuse it
    and leave it running, as it did not start it."""
    started = not ray.is_initialized()
    if started:
        ray.init("local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)  # fmt: skip
    yield
    if started:
        ray.shutdown()


def test_ray_writes_the_same_records_and_scores_as_local(mvtec_root: Path, tmp_path: Path) -> None:
    """Runs first, before ``shared_ray``: the executor starts its own Ray and stops it."""
    was_running = ray.is_initialized()
    options = {"categories": "alpha,beta", "methods": "meandist,scoresonly"}
    local = quiet_run(config(mvtec_root, tmp_path / "local", executor="local", **options))
    remote = quiet_run(config(mvtec_root, tmp_path / "ray", **options))
    assert ray.is_initialized() == was_running
    assert local.played == remote.played == 8 and not local.failed and not remote.failed
    a, b = stable_records(tmp_path / "local"), stable_records(tmp_path / "ray")
    assert a.keys() == b.keys() and a == b
    for record in a.values():
        name = record["scores_file"]
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()


@pytest.mark.usefixtures("shared_ray")
def test_plugin_errors_and_hard_crashes_are_recorded_and_the_rest_completes(
    mvtec_root: Path, tmp_path: Path
) -> None:
    summary = quiet_run(config(mvtec_root, tmp_path / "run", methods="raises,dies,meandist"))
    records = {(r.method.name, r.k): r for r in read_records(tmp_path / "run")}
    assert len(records) == 6 and summary.played == 6
    failed = {key: r.error for key, r in records.items() if r.status == "failed"}
    assert failed.keys() == {("raises", 2), ("dies", 2)}, failed
    assert "RuntimeError: cannot cope with more than one shot" in failed["raises", 2]
    assert failed["dies", 2].startswith("worker process died (WorkerCrashedError")
    assert records["dies", 2].method.params == {}  # the driver writes the requested ones
    assert all(r.metrics["image_auroc"] == 1.0 for r in records.values() if r.status == "ok")
    assert ray.is_initialized(), "the executor shut down a Ray it did not start"


@pytest.mark.usefixtures("shared_ray")
def test_an_overrunning_episode_is_cancelled_and_recorded(mvtec_root: Path, tmp_path: Path) -> None:
    cfg = replace(config(mvtec_root, tmp_path / "run", methods="hangs"), episode_timeout_s=2.0)
    start = time.monotonic()
    summary = quiet_run(cfg)
    assert time.monotonic() - start < 60, "the stuck task was waited for instead of cancelled"
    records = {r.k: r for r in read_records(tmp_path / "run")}
    assert records[1].status == "ok" and records[1].metrics["image_auroc"] == 1.0
    assert records[2].status == "failed" and records[2].error == "timed out after 2 s"
    assert [r.k for r in summary.failed] == [2]
    assert wait_for_free_cpus(2), "the cancelled task still holds its CPU"


@pytest.mark.usefixtures("shared_ray")
def test_resume_plays_only_missing_episodes(mvtec_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = config(mvtec_root, out, categories="alpha,beta")
    assert quiet_run(cfg).played == 4
    full = stable_records(out)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:1]) + lines[1][:40])  # killed mid-line
    again = quiet_run(cfg)
    assert (again.played, again.skipped) == (3, 1)
    assert stable_records(out) == full
    assert len(read_records(out)) == 4
    assert quiet_run(cfg).played == 0


@pytest.mark.usefixtures("shared_ray")
def test_closing_the_stream_cancels_what_is_in_flight(mvtec_root: Path, tmp_path: Path) -> None:
    """What happens on an exception or Ctrl-C in the driver: the generator is closed."""
    tasks = plan_tasks(config(mvtec_root, tmp_path / "run", methods="meandist,hangs"))
    stream = executor_ray.RayExecutor(episode_work(), 2, Limits(), None).run(tasks)
    outcomes = [next(stream) for _ in range(3)]  # the fourth (hangs, K=2) never comes
    assert {(o.record.method.name, o.record.k) for o in outcomes} == {
        ("meandist", 1),
        ("meandist", 2),
        ("hangs", 1),
    }
    stream.close()
    assert wait_for_free_cpus(2), "the hanging task kept running after the driver stopped"


@pytest.mark.usefixtures("shared_ray")
def test_a_worker_that_cannot_import_the_plugin_stops_the_run(
    mvtec_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like a cluster node without the plugin installed: one clear error, no failed records."""
    monkeypatch.setattr(executor_ray, "worker_env", lambda _: {"env_vars": {"PYTHONPATH": ""}})
    with pytest.raises(FsadError, match="Ray workers cannot start an episode: PluginError.*"
                       "fake_plugins"):  # fmt: skip
        quiet_run(config(mvtec_root, tmp_path / "run"))
    records = tmp_path / "run" / "records.jsonl"
    assert not records.exists() or not records.read_text()


def test_memory_limit_and_missing_ray_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(FsadError, match="only supported by the local executor"):
        executor_ray.RayExecutor(episode_work(), 2, Limits(memory_mb=100), None)
    with pytest.raises(FsadError, match="Ray Client addresses cannot stream"):
        executor_ray.connect(ray, 2, "ray://head:10001")
    with pytest.raises(FsadError, match="cannot connect to Ray at auto: .*ray start --head"):
        executor_ray.connect(NoRay(), 2, "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(FsadError, match=r"pip install 'fsad-bench\[ray\]'"):
        executor_ray.import_ray()


class NoRay:
    """Stands in for ``ray`` when no cluster answers at the address given."""

    @staticmethod
    def is_initialized() -> bool:
        return False

    @staticmethod
    def init(**_: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.")


@pytest.mark.usefixtures("shared_ray")
def test_cuda_episodes_ask_ray_for_a_gpu(mvtec_root: Path, tmp_path: Path) -> None:
    tasks = plan_tasks(config(mvtec_root, tmp_path / "run", device="cuda"))
    assert executor_ray.task_options(tasks[0], None) == {
        "num_cpus": 1, "num_gpus": 1, "max_retries": 0
    }  # fmt: skip
    with pytest.raises(FsadError, match="the Ray cluster has no GPU"):
        executor_ray.check_gpus(ray, tasks)
    pinned = [replace(tasks[0], device="cuda:1")]
    with pytest.raises(FsadError, match="use --device cuda"):
        executor_ray.check_device_names(pinned)


def plan_tasks(cfg: Any) -> list[Any]:
    """The runner's tasks for a config, without running them."""
    categories = load_categories(cfg.protocol)
    cfg = replace(cfg, protocol=cfg.protocol.with_overrides(categories=tuple(categories)))
    supports = plan_supports(cfg.protocol, categories, cfg.episodes())
    return list(build_tasks(cfg, categories, supports, "test", {}))


def wait_for_free_cpus(count: float, within_s: float = 30.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= count:
            return True
        time.sleep(0.2)
    return False
