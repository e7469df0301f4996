"""What travels between the runner and its executors: typed, picklable, torch-free.

A task carries everything a worker needs to play one episode of one method; an outcome
carries back the record to write (or the data error that stops the run) and its files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsad_bench import identity
from fsad_bench.protocols.manifests import SupportEntry
from fsad_bench.protocols.protocol import Protocol
from fsad_bench.records import Episode, EpisodeRecord


@dataclass(frozen=True)
class EpisodeTask:
    run_id: str
    episode: Episode
    method_spec: str  # ``name`` or ``name.preset``, as given to --method
    method_params: dict[str, Any]
    protocol: Protocol
    data_root: str | None
    support: tuple[SupportEntry, ...]
    support_hash: str
    meta_categories: tuple[str, ...]
    device: str
    env: dict[str, Any]
    batch_size: int = 16
    cache_dir: str | None = None
    threads: int | None = None
    save_maps: int = 0  # panels per episode for the leaderboard gallery (run.gallery)
    test_set_hash: str | None = None  # of the held-out category's test listing

    @property
    def result_key(self) -> str:
        name, preset = identity.split_label(self.method_spec)
        return identity.result_key(name, preset, self.episode.key)

    def describe(self) -> str:
        """How progress lines name the episode a worker is playing."""
        episode = self.episode
        return f"{self.method_spec} {episode.category} k={episode.k} seed={episode.seed}"


@dataclass
class EpisodeOutcome:
    """A record to write, or ``data_error``: bad data stops the run instead (it is not the
    plugin's fault and would fail every episode of the category)."""

    record: EpisodeRecord | None
    scores: dict[str, Any] | None = field(default=None)
    data_error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # saved maps, relative to the run
