"""Support manifests: the frozen support images of every episode, their hashes and checks.

Frozen from data on disk (paths and pixel hashes) or from published file counts: MVTec AD
names its training images 000.png, 001.png, ... so its manifest can be written from the
published counts alone; a run on a real copy then checks every listed file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from fsad_bench.datasets.base import Category
from fsad_bench.datasets.hashing import pixel_sha256
from fsad_bench.errors import DatasetError, ProtocolError
from fsad_bench.protocols.protocol import Protocol, load_categories, sample_support
from fsad_bench.records import Episode
from fsad_bench.store import write_json_atomic


def manifest_key(category: str, k: int, seed: int) -> str:
    return f"{category}/k{k}/seed{seed}"


@dataclass(frozen=True)
class SupportEntry:
    path: str
    sha256: str | None = None


def load_manifest(path: Path) -> dict[str, list[SupportEntry]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            key: [SupportEntry(**entry) for entry in entries]
            for key, entries in data["supports"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(
            f"{path}: unreadable support manifest ({exc}); restore it from git"
        ) from exc


def write_manifest(path: Path, protocol: Protocol, supports: dict[str, list[SupportEntry]]) -> None:
    payload = {
        "protocol": protocol.name,
        "version": protocol.version,
        "hash": "sha256 of decoded pixels (fsad_bench.datasets.hashing.pixel_sha256)",
        "supports": {key: [asdict(e) for e in supports[key]] for key in sorted(supports)},
    }
    # whole or absent: a kill or a full disk mid-write must not leave a torn manifest
    write_json_atomic(path, payload, indent=1)


def support_hash(entries: Sequence[SupportEntry]) -> str:
    payload = json.dumps([asdict(e) for e in entries], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_entries(root: Path, entries: Sequence[SupportEntry], manifest: Path | None) -> None:
    """A frozen manifest must match the data on disk, or results are not comparable."""
    from fsad_bench.datasets.hashing import pixel_sha256

    for entry in entries:
        relative = PurePosixPath(entry.path)
        if relative.is_absolute() or ".." in relative.parts:
            raise DatasetError(
                f"{manifest}: support path {entry.path!r} leaves the data root {root}; "
                "manifest paths must be relative to it, without '..'"
            )
        file = root / entry.path
        if not file.exists():
            raise DatasetError(
                f"{file}: listed in support manifest {manifest} but missing; "
                "check --data-root points at an unmodified copy of the dataset"
            )
        if entry.sha256 and pixel_sha256(file) != entry.sha256:
            raise DatasetError(
                f"{file}: pixels differ from support manifest {manifest}; "
                "this copy of the dataset differs from the one the protocol was frozen on"
            )


def freeze_manifest(protocol: Protocol, out: Path | None = None) -> Path:
    """Sample every episode's support set from the data and store paths with pixel hashes."""
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


def plan_supports(
    protocol: Protocol, categories: dict[str, Category], episodes: Iterable[Episode]
) -> dict[str, list[SupportEntry]]:
    """Support sets from the frozen manifest where it has them, sampled (seeded) otherwise."""
    manifest_path = protocol.manifest_path()
    frozen = load_manifest(manifest_path) if manifest_path and manifest_path.exists() else {}
    supports: dict[str, list[SupportEntry]] = {}
    for episode in episodes:
        category = categories[episode.category]
        key = manifest_key(episode.category, episode.k, episode.seed)
        if key in frozen:
            entries = frozen[key]
            check_entries(category.root, entries, manifest_path)
        else:
            pool = [category.relpath(p) for p in category.train_normal]
            paths = sample_support(protocol, episode.category, episode.k, episode.seed, pool)
            entries = [SupportEntry(p) for p in paths]
        supports[key] = entries
    return supports
