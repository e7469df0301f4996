"""Protocol files -> episodes and their support sets.

A protocol file is small, versioned YAML (``include:`` inherits from another file). The
support images of every episode are a pure function of (protocol, category, seed, k), and
can be frozen into a manifest (``manifests.py``) so that two machines provably evaluate the
same images. The built-in protocol files are package data (the ``fsad_protocols`` package,
the repository's ``protocols/`` folder), so an installed wheel finds them from anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fsad_bench.datasets import get_layout
from fsad_bench.datasets.base import Category
from fsad_bench.errors import ProtocolError
from fsad_bench.identity import METRICS
from fsad_bench.records import Episode

PROTOCOL_DIR = Path(str(resources.files("fsad_protocols")))
META_TRAIN_RULES = ("leave_one_out", "none")
_KEYS = {
    "name", "version", "dataset", "layout", "data_root", "categories", "shots", "seeds",
    "image_size", "meta_train", "metrics", "support_manifest", "test_manifest", "layout_options",
    "description", "include",
}  # fmt: skip


@dataclass(frozen=True)
class Protocol:
    name: str
    version: str
    dataset: str
    layout: str
    categories: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    image_size: int
    data_root: str | None = None
    meta_train: str = "leave_one_out"
    metrics: tuple[str, ...] = METRICS
    support_manifest: str | None = None
    # the frozen test listing (paths, labels, kinds, pixel hashes); checked before a run and
    # on submit through each record's test_set_hash, not through the definition hash, so
    # that protocols frozen before it existed keep their hash and their submissions
    test_manifest: str | None = None
    layout_options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def definition_hash(self) -> str:
        """Hash of what defines results; shots/seeds only select episodes, roots are local."""
        ident = {
            "name": self.name,
            "version": self.version,
            "dataset": self.dataset,
            "layout": self.layout,
            "categories": list(self.categories),
            "image_size": self.image_size,
            "meta_train": self.meta_train,
            "layout_options": self.layout_options,
            "support_manifest": _manifest_digest(self.manifest_path()),
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def manifest_path(self) -> Path | None:
        return self._beside(self.support_manifest)

    def test_manifest_path(self) -> Path | None:
        return self._beside(self.test_manifest)

    def _beside(self, name: str | None) -> Path | None:
        if not name:
            return None
        base = Path(self.source).parent if self.source else PROTOCOL_DIR
        return (base / name).resolve()

    def episodes(self) -> Iterator[Episode]:
        for category in self.categories:
            for k in self.shots:
                for seed in self.seeds:
                    yield Episode(self.name, self.version, self.dataset, category, k, seed)

    def with_overrides(self, **changes: Any) -> Protocol:
        changes = {key: value for key, value in changes.items() if value is not None}
        for key in ("categories", "shots", "seeds"):
            if key in changes:
                changes[key] = tuple(changes[key])
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.exists():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def find_protocol_file(name_or_path: str) -> Path:
    """Accept a path or the name of a built-in protocol under protocols/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    builtin = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    known = ", ".join(p.stem for p in list_protocol_files())
    raise ProtocolError(
        f"protocol {name_or_path!r} not found; pass a .yaml path or one of: {known}"
    )


def list_protocol_files() -> list[Path]:
    return sorted(PROTOCOL_DIR.glob("*.yaml"))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ProtocolError(f"{path}: include cycle through {[str(p) for p in seen]}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProtocolError(f"{path}: cannot read protocol file ({exc})") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{path}: a protocol file must be a YAML mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise ProtocolError(f"{path}: unknown keys {sorted(unknown)}; valid keys: {sorted(_KEYS)}")
    parent = data.pop("include", None)
    if parent:
        base = _read_yaml(path.parent / parent, (*seen, path))
        base.update(data)
        data = base
    return data


def load_protocol(name_or_path: str) -> Protocol:
    path = find_protocol_file(name_or_path)
    data = _read_yaml(path)
    missing = {"name", "version", "dataset", "layout", "shots", "seeds", "image_size"} - set(data)
    if missing:
        raise ProtocolError(f"{path}: missing keys {sorted(missing)}")
    if data.get("meta_train", "leave_one_out") not in META_TRAIN_RULES:
        raise ProtocolError(f"{path}: meta_train must be one of {META_TRAIN_RULES}")
    bad_metrics = set(data.get("metrics", METRICS)) - set(METRICS)
    if bad_metrics:
        raise ProtocolError(f"{path}: unknown metrics {sorted(bad_metrics)}")
    return Protocol(
        name=str(data["name"]),
        version=str(data["version"]),
        dataset=str(data["dataset"]),
        layout=str(data["layout"]),
        categories=tuple(data.get("categories") or ()),
        shots=tuple(int(k) for k in data["shots"]),
        seeds=tuple(int(s) for s in data["seeds"]),
        image_size=int(data["image_size"]),
        data_root=data.get("data_root"),
        meta_train=data.get("meta_train", "leave_one_out"),
        metrics=tuple(data.get("metrics", METRICS)),
        support_manifest=data.get("support_manifest"),
        test_manifest=data.get("test_manifest"),
        layout_options=dict(data.get("layout_options") or {}),
        description=str(data.get("description", "")).strip(),
        source=str(path.resolve()),
    )


ADHOC_VERSION = "auto"


def adhoc_name(data_root: Path) -> str:
    """``<folder>_loo`` from the dataset folder's name (lower case, other characters as
    ``_``); ``<folder>_folder_loo`` when that is a built-in protocol's name, which a run on
    an arbitrary folder must never borrow (its supports are not the frozen ones)."""
    slug = re.sub(r"[^a-z0-9]+", "_", Path(data_root).resolve().name.lower()).strip("_")
    name = f"{slug or 'custom'}_loo"
    builtin = {path.stem for path in list_protocol_files()}
    builtin |= {str(_read_yaml(path).get("name")) for path in list_protocol_files()}
    return f"{slug or 'custom'}_folder_loo" if name in builtin else name


def adhoc_protocol(layout: str, data_root: Path, categories: Sequence[str]) -> Protocol:
    """A protocol for any folder in a known layout, so users need not write a file."""
    return Protocol(
        name=adhoc_name(data_root),
        version=ADHOC_VERSION,
        dataset=Path(data_root).name or "custom",
        layout=layout,
        categories=tuple(categories),
        shots=(1, 2, 4, 8),
        seeds=(0, 1, 2),
        image_size=256,
        data_root=str(data_root),
        description=f"leave-one-out over the categories found in {data_root}",
    )


def describe(name_or_path: str) -> list[str]:
    """``protocol show``: the settings as YAML (lists, not Python tuples), headed by the
    file asked for; a file that includes another says so and under which name its records
    go (its episodes are the parent's when it keeps the parent's name)."""
    path = find_protocol_file(name_or_path)
    protocol = load_protocol(name_or_path)
    own = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    lines = [f"# {path.stem} ({path.resolve()})"]
    if own.get("include"):
        lines.append(
            f"# includes {own['include']}; "
            + (
                f"keeps its name, so records name these episodes {protocol.ref}"
                if "name" not in own
                else f"records name these episodes {protocol.ref}"
            )
        )
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in protocol.to_dict().items()}
    settings.pop("source")
    text = yaml.safe_dump(settings, sort_keys=False, default_flow_style=None, width=100)
    lines += text.rstrip("\n").splitlines()
    lines.append(f"definition_hash: {protocol.definition_hash()}")
    return lines


def derive_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def sample_support(
    protocol: Protocol, category: str, k: int, seed: int, pool: Sequence[str]
) -> list[str]:
    """K relative paths from the sorted pool; nested in K for a fixed seed (K=1 ⊂ K=2 ...)."""
    import numpy as np

    ordered = sorted(pool)
    if k < 1:
        raise ProtocolError(f"K must be at least 1, got {k}")
    if k > len(ordered):
        raise ProtocolError(
            f"category {category!r} has only {len(ordered)} normal training images; "
            f"K={k} is too large, use --shots with values <= {len(ordered)}"
        )
    rng = np.random.default_rng(derive_seed(protocol.ref, category, "support", seed))
    order = rng.permutation(len(ordered))
    return [ordered[i] for i in order[:k]]


def load_categories(protocol: Protocol) -> dict[str, Category]:
    """List (not decode) every category first: bad layouts fail before any work starts."""
    layout = get_layout(protocol.layout)
    root = Path(protocol.data_root) if protocol.data_root else None
    names = protocol.categories or tuple(layout.discover_categories(root))
    if not names:
        raise ProtocolError(f"no categories found under {root}; check --data-root and --layout")
    return {name: layout.load_category(root, name, **protocol.layout_options) for name in names}
