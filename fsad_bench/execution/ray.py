"""Play episodes as Ray tasks: ``fsad-bench run --executor ray [--address ADDR]``.

Like every executor this one only yields ``EpisodeOutcome``s; the runner in the driver stays
the single writer of records, so resume works as with the local executor. Ray is imported
here alone, and only when asked for, so the default executor never needs it.

Each episode is a streaming Ray task that first yields a start marker (after its imports
and plugin registrations) and then the outcome: the time limit counts from the marker, so
starting a worker and importing torch is not charged to the episode, as in
``execution.isolated`` (both use ``execution.base.Watch``). Without ``--address`` a local
Ray is started (and stopped) here and the workers get the driver's ``sys.path``; on a
cluster every node needs fsad-bench and the method plugins installed (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fsad_bench.errors import FsadError
from fsad_bench.execution.base import STARTED, Limits, Watch, Work, first_line, register_methods

INSTALL_HINT = "pip install 'fsad-bench[ray]'"
_POLL_S = 1.0  # longest wait between checks of the time limits and for Ctrl-C
_IN_FLIGHT_PER_WORKER = 2  # enough to keep workers busy, few enough to cancel quickly
_CRASHES = ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "LocalRayletDiedError")


class RayExecutor:
    """Ray's own ``RAY_ADDRESS`` counts as ``address`` (it is set inside ``ray job submit``)."""

    def __init__(
        self,
        work: Work[Any, Any],
        workers: int = 1,
        limits: Limits = Limits(),
        address: str | None = None,
    ) -> None:
        if limits.memory_mb is not None:
            raise FsadError(
                "--episode-memory-mb is only supported by the local executor; with --executor "
                "ray Ray's own memory monitor kills a task when its node runs low on memory"
            )
        self.work, self.workers, self.limits = work, workers, limits
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def run(self, tasks: Sequence[Any]) -> Iterator[Any]:
        """One outcome per task, in completion order; failures become failed outcomes."""
        if not tasks:  # a finished run resumes without starting Ray
            return
        check_device_names(tasks)
        ray = import_ray()
        owned = connect(ray, self.workers, self.address)
        try:
            check_gpus(ray, tasks)
            yield from _drive(ray, tasks, self.work, self.workers, self.limits,
                              worker_env(self.address))  # fmt: skip
        finally:
            if owned:
                ray.shutdown()


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        message = f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}"
        raise FsadError(message) from exc
    return ray


def connect(ray: Any, workers: int, address: str | None) -> bool:
    """Join a running Ray, or start a local one; True when this call started or joined it
    (so it is ours to shut down), False when the process was already connected."""
    if address and "://" in address:
        raise FsadError(
            f"--address {address}: Ray Client addresses cannot stream episodes; run fsad-bench "
            "on a node of the cluster with --address auto or --address HEAD_IP:6379"
        )
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # "local": a new Ray of our own even if `ray start` left one on this machine
            ray.init("local", num_cpus=max(workers, 1), include_dashboard=False, **quiet)
    except ConnectionError as exc:
        raise FsadError(
            f"cannot connect to Ray at {address}: {exc}; start it with `ray start --head`, set "
            "RAY_AUTH_MODE=token if the cluster uses token authentication (Ray's default), or "
            "leave out --address for a local Ray"
        ) from exc
    return True


def worker_env(address: str | None) -> dict[str, Any] | None:
    """The driver's ``sys.path`` for a Ray on this machine, so workers import what the
    driver can (tests, notebooks); a cluster's nodes must have the packages installed."""
    if address:
        return None
    paths = [path or os.getcwd() for path in sys.path]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def check_device_names(tasks: list[Any]) -> None:
    """Ray gives each CUDA episode a GPU of its own, which the episode sees as ``cuda``."""
    pinned = sorted({str(t.device) for t in tasks if str(t.device).startswith("cuda:")})
    if pinned:
        raise FsadError(
            f"--device {pinned[0]}: with --executor ray each episode gets a GPU of its own; "
            "use --device cuda"
        )


def check_gpus(ray: Any, tasks: list[Any]) -> None:
    """Fail before any work when no GPU can be given, instead of queueing tasks forever."""
    wants_gpu = any(str(task.device) == "cuda" for task in tasks)
    if wants_gpu and ray.cluster_resources().get("GPU", 0) < 1:
        raise FsadError("--device cuda but the Ray cluster has no GPU; add a GPU node or use cpu")


def task_options(task: Any, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """One CPU (and one GPU for CUDA) per episode; no retries, as a crash is recorded."""
    options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
    if str(task.device) == "cuda":
        options["num_gpus"] = 1
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options


def play_streaming(work: Work[Any, Any], task: Any) -> Iterator[Any]:
    """The Ray task: register the driver's in-process methods (workers are reused, so
    registrations are compared, not only added), prepare (import the plugin), send the start
    marker, then play."""
    register_methods(work.registrations)
    work.prepare(task)
    yield STARTED
    yield work.play(task)


@dataclass
class _Flight:
    """A submitted episode and its clock (the limit counts from the start marker)."""

    task: Any
    stream: Any
    watch: Watch


def _drive(
    ray: Any,
    tasks: Sequence[Any],
    work: Work[Any, Any],
    workers: int,
    limits: Limits,
    runtime_env: dict[str, Any] | None,
) -> Iterator[Any]:
    """Keep a bounded number of tasks in flight and yield outcomes as they complete."""
    remote = ray.remote(play_streaming)
    queued, flights = deque(tasks), []
    capacity = _IN_FLIGHT_PER_WORKER * max(workers, 1)
    try:
        while queued or flights:
            while queued and len(flights) < capacity:
                task = queued.popleft()
                stream = remote.options(**task_options(task, runtime_env)).remote(work, task)
                flights.append(_Flight(task, stream, Watch(limits.timeout_s, time.monotonic())))
            streams = [flight.stream for flight in flights]
            ready, _ = ray.wait(streams, num_returns=1, timeout=_wait_s(flights))
            for flight in list(flights):
                outcome = _settle(ray, flight, work, any(r is flight.stream for r in ready))
                if outcome is not None:
                    flights.remove(flight)
                    yield outcome
    finally:  # on an error or Ctrl-C in the driver, nothing keeps computing unseen
        for flight in flights:
            _cancel(ray, flight.stream)


def _wait_s(flights: list[_Flight]) -> float:
    nearest = min(flight.watch.deadline for flight in flights) - time.monotonic()
    return min(max(nearest, 0.05), _POLL_S)


def _settle(ray: Any, flight: _Flight, work: Work[Any, Any], ready: bool) -> Any:
    """The flight's outcome when it has one (done, failed or timed out), else None."""
    if ready:
        return _receive(ray, flight, work)
    overdue = flight.watch.overdue(time.monotonic())
    if overdue:
        _cancel(ray, flight.stream)
        return work.fail(flight.task, overdue)
    return None


def _receive(ray: Any, flight: _Flight, work: Work[Any, Any]) -> Any:
    """The next item of a ready stream: the start marker (None), the outcome, or an error
    that becomes a failed outcome; an error before the marker is a setup fault that would
    fail every episode, so it stops the run instead."""
    try:
        item = ray.get(next(flight.stream))
    except Exception as exc:  # noqa: BLE001 - recorded as the episode's failure
        if not flight.watch.started and _is_setup_error(ray, exc):
            raise FsadError(
                f"Ray workers cannot start an episode: {_reason(ray, exc)}; every node needs "
                "fsad-bench and the method plugins installed as on the driver"
            ) from exc
        return work.fail(flight.task, _reason(ray, exc))
    if isinstance(item, str) and item == STARTED:
        flight.watch.start(time.monotonic())
        return None
    return item


def _is_setup_error(ray: Any, exc: Exception) -> bool:
    errors = ray.exceptions
    return isinstance(exc, (errors.RayTaskError, errors.RuntimeEnvSetupError))


def _reason(ray: Any, exc: Exception) -> str:
    """One line: the plugin's own exception, or how the worker died."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None:
        return f"{first_line(cause)} (in the Ray worker)"
    if type(exc).__name__ in _CRASHES:
        return f"worker process died ({first_line(exc)})"
    return f"Ray task failed ({first_line(exc)})"


def _cancel(ray: Any, stream: Any) -> None:
    """Force-cancel kills the worker process: a stuck plugin cannot ignore it."""
    with contextlib.suppress(Exception):  # already finished, or Ray is shutting down
        ray.cancel(stream, force=True)
