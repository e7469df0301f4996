"""The executor contract: ``run(tasks) -> iterator of outcomes``, and what executors share.

Executors decide where episodes are played (in this process, a process pool, one process per
episode, Ray tasks); they never write. The runner stays the single writer of records, so
resume and crash safety do not depend on the executor chosen. An executor knows nothing of
episodes: it is handed the functions that play a task, prepare a worker for one (imports,
not charged to the episode's clock) and turn a task whose worker could not report into a
failed outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from fsad_bench.execution.process import die_with_parent

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")

STARTED = "started"  # a worker's first message: its imports are done, the episode's clock starts
STARTUP_S = 120.0  # importing torch and the plugin in a fresh process may take this long


@dataclass(frozen=True)
class Limits:
    """Per-episode limits; either one set means every episode runs in its own process."""

    timeout_s: float | None = None
    memory_mb: float | None = None

    @property
    def isolate(self) -> bool:
        return self.timeout_s is not None or self.memory_mb is not None


def no_preparation(task: Any) -> None:
    """The default ``prepare``: module-level, so a ``Work`` pickles."""


@dataclass(frozen=True)
class Work(Generic[Task, Outcome]):
    """What executors do with a task. ``play`` and ``prepare`` are module-level functions
    (picklable by reference for spawned and Ray workers); ``registrations`` are method names
    added in-process (tests, notebooks) that a fresh worker must register again."""

    play: Callable[[Task], Outcome]
    fail: Callable[[Task, str], Outcome]
    prepare: Callable[[Task], None] = no_preparation
    registrations: dict[str, str] = field(default_factory=dict)


class Executor(Protocol[Task, Outcome]):
    def run(self, tasks: Sequence[Task]) -> Iterator[Outcome]:
        """One outcome per task, in completion order; never raises for a failed episode."""
        ...


class Watch:
    """The clock of one episode played in another process.

    Before the worker's start marker arrives only the start-up window counts, and only when
    the episode has a time limit (a slow import is not a hang otherwise); after the marker
    the episode's own limit counts. ``overdue`` names which one was broken.
    """

    def __init__(self, timeout_s: float | None, now: float, startup_s: float | None = None):
        self.timeout_s = timeout_s
        self.startup_s = STARTUP_S if startup_s is None else startup_s
        self.started = False
        self.deadline = now + self.startup_s if timeout_s is not None else math.inf

    def start(self, now: float) -> None:
        self.started = True
        self.deadline = now + self.timeout_s if self.timeout_s is not None else math.inf

    def overdue(self, now: float) -> str | None:
        """Why the episode must be stopped now, or None."""
        if now <= self.deadline:
            return None
        if not self.started:
            return (
                f"the worker did not start within {self.startup_s:g} s (importing torch and the "
                "plugin); the machine may be overloaded: retry with --retry-failed"
            )
        return f"timed out after {self.timeout_s:g} s"


def register_methods(registrations: dict[str, str]) -> None:
    """A fresh (or reused) worker knows only the installed plugins: add the others."""
    from fsad_bench import registry

    known = registry.list_methods()
    for name, target in registrations.items():
        if known.get(name) != target:
            registry.register(name, target)


def start_worker(registrations: dict[str, str], parent: int) -> None:
    """Set-up of a spawned worker: die with the parent, know the parent's methods."""
    die_with_parent(parent)
    register_methods(registrations)


def first_line(exc: BaseException) -> str:
    """Ray's and other libraries' messages run to tracebacks; a record's reason is one line."""
    lines = str(exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0][:300]}"
