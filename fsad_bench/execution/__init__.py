"""Where episodes are played, chosen by name through one registry (``--executor``).

``local`` (this process, or a pool with ``--workers N``), ``isolated`` (a process per
episode; chosen for ``local`` when an episode has a time or memory limit) and ``ray``.
Each implements ``execution.base.Executor``: ``run(tasks) -> iterator of outcomes``.
"""

from __future__ import annotations

from typing import Any

from fsad_bench.errors import FsadError
from fsad_bench.execution.base import Executor, Limits, Work
from fsad_bench.registry import Registry

EXECUTORS: Registry[type] = Registry(
    "executor",
    {
        "local": "fsad_bench.execution.local:LocalExecutor",
        "isolated": "fsad_bench.execution.isolated:IsolatedExecutor",
        "ray": "fsad_bench.execution.ray:RayExecutor",
    },
    error=FsadError,
)


def create_executor(
    name: str,
    work: Work[Any, Any],
    workers: int = 1,
    limits: Limits = Limits(),
    address: str | None = None,
) -> Executor[Any, Any]:
    """The named executor; ``local`` with limits becomes ``isolated`` (limits need a process
    of their own to kill)."""
    if name == "local" and limits.isolate:
        name = "isolated"
    return EXECUTORS.load(name)(work, workers, limits, address)


__all__ = ["EXECUTORS", "Executor", "Limits", "Work", "create_executor"]
