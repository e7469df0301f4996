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


# --- the test set ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedImage:
    """One test image as a protocol freezes it: where, what, and its pixels' hash."""

    path: str
    label: int
    defect: str
    sha256: str | None = None


def list_test_set(category: Category, hashes: bool) -> list[ListedImage]:
    """A category's test set as entries (pixel hashes only when asked: they decode)."""
    return sorted(
        (
            ListedImage(
                category.relpath(item.path),
                item.label,
                item.defect,
                pixel_sha256(item.path) if hashes else None,
            )
            for item in category.test
        ),
        key=lambda entry: entry.path,
    )


def hash_test_set(entries: Sequence[ListedImage]) -> str:
    """What a record keeps of its test set: equal hashes, equal test sets."""
    payload = json.dumps([asdict(e) for e in entries], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def load_test_manifest(path: Path) -> dict[str, list[ListedImage]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            category: [ListedImage(**entry) for entry in entries]
            for category, entries in data["tests"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(
            f"{path}: unreadable test manifest ({exc}); restore it from git"
        ) from exc


def write_test_manifest(
    path: Path, protocol: Protocol, tests: dict[str, list[ListedImage]]
) -> None:
    payload = {
        "protocol": protocol.name,
        "version": protocol.version,
        "hash": "sha256 of decoded pixels (fsad_bench.datasets.hashing.pixel_sha256)",
        "tests": {name: [asdict(e) for e in tests[name]] for name in sorted(tests)},
    }
    write_json_atomic(path, payload, indent=1)


def freeze_test_manifest(protocol: Protocol, out: Path | None = None) -> Path:
    """Every category's test listing with pixel hashes, from the data on disk."""
    path = out or protocol.test_manifest_path()
    if path is None:
        raise ProtocolError(f"{protocol.ref} names no test_manifest; pass --out PATH")
    categories = load_categories(protocol)
    write_test_manifest(path, protocol, {n: list_test_set(c, True) for n, c in categories.items()})
    return path


def check_test_sets(
    protocol: Protocol, categories: dict[str, Category], played: Iterable[str]
) -> dict[str, str]:
    """The test-set hash of every played category. With a frozen test manifest, the data
    must match it: one line naming what is missing, extra or changed, before any episode.
    Without one, the hash is of the listing (paths, labels, kinds), so two runs on
    different data never compare as equal."""
    manifest = protocol.test_manifest_path()
    frozen = load_test_manifest(manifest) if manifest and manifest.exists() else {}
    hashes = {}
    for name in sorted(set(played)):
        expected = frozen.get(name)
        entries = list_test_set(categories[name], hashes=bool(expected and expected[0].sha256))
        if expected is not None and entries != expected:
            raise DatasetError(_test_set_problem(categories[name], expected, entries, manifest))
        hashes[name] = hash_test_set(entries)
    return hashes


def _test_set_problem(
    category: Category, expected: list[ListedImage], found: list[ListedImage], manifest: Path | None
) -> str:
    want, have = {e.path: e for e in expected}, {e.path: e for e in found}
    parts = []
    for what, paths in (
        ("missing", sorted(set(want) - set(have))),
        ("extra", sorted(set(have) - set(want))),
        ("changed", sorted(p for p in set(want) & set(have) if want[p] != have[p])),
    ):
        if paths:
            parts.append(f"{len(paths)} {what} (e.g. {paths[0]})")
    return (
        f"{category.root / category.name}: the test set differs from the protocol's frozen "
        f"listing {manifest}: {', '.join(parts)}; point --data-root at an unmodified copy"
    )
