"""Freezing support manifests, from data on disk or from published file counts.

MVTec AD names its training images 000.png, 001.png, ... so its manifest can be written
from the published counts alone; a run on a real copy then checks every listed file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fsad_bench.datasets.hashing import pixel_sha256
from fsad_bench.errors import ProtocolError
from fsad_bench.protocol import (
    Protocol,
    SupportEntry,
    manifest_key,
    sample_support,
    write_manifest,
)


def freeze_manifest(protocol: Protocol, out: Path | None = None) -> Path:
    """Sample every episode's support set from the data and store paths with pixel hashes."""
    from fsad_bench.runner import load_categories

    path = out or protocol.manifest_path()
    if path is None:
        raise ProtocolError(f"{protocol.ref} names no support_manifest; pass --out PATH")
    wanted = {manifest_key(e.category, e.k, e.seed) for e in protocol.episodes()}
    extra = sorted(set(_frozen_keys(path)) - wanted) if out is None else []
    if extra:  # shared through include: with a protocol that has more episodes
        raise ProtocolError(
            f"{path} also holds {len(extra)} episode(s) that {protocol.ref} does not have "
            f"(e.g. {extra[0]}): it is shared with the protocol that {protocol.name} "
            "includes; freeze that one, or pass --out PATH"
        )
    categories = load_categories(protocol)
    supports: dict[str, list[SupportEntry]] = {}
    for episode in protocol.episodes():
        category = categories[episode.category]
        pool = [category.relpath(p) for p in category.train_normal]
        paths = sample_support(protocol, episode.category, episode.k, episode.seed, pool)
        supports[manifest_key(episode.category, episode.k, episode.seed)] = [
            SupportEntry(p, pixel_sha256(category.root / p)) for p in paths
        ]
    write_manifest(path, protocol, supports)
    return path


def _frozen_keys(path: Path) -> list[str]:
    """The episodes an existing manifest file holds (none if it is absent or unreadable)."""
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["supports"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def manifest_from_counts(
    protocol: Protocol, train_counts: Mapping[str, int], out: Path, pattern: str = "{:03d}.png"
) -> Path:
    """Manifest for a dataset whose train files are numbered: no data needed, no hashes."""
    supports: dict[str, list[SupportEntry]] = {}
    for episode in protocol.episodes():
        count = train_counts[episode.category]
        pool = [f"{episode.category}/train/good/{pattern.format(i)}" for i in range(count)]
        paths = sample_support(protocol, episode.category, episode.k, episode.seed, pool)
        supports[manifest_key(episode.category, episode.k, episode.seed)] = [
            SupportEntry(p) for p in paths
        ]
    write_manifest(out, protocol, supports)
    return out
