"""Frozen records that cross module boundaries: episodes, predictions and result lines.

One JSON line per (method, episode) is the unit everything else (report, submissions,
leaderboard, regression check) reads, so its schema is versioned and validated on load.
Schema 2 adds ``settings`` (run settings that change the floats, e.g. the batch size),
``test_set_hash`` and ``by_defect`` (metrics per defect kind); schema-1 records stay readable
and are written back unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of `fsad-bench list` and the leaderboard
    from torch import Tensor

from fsad_bench import identity

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
_SCHEMA_2_FIELDS = ("settings", "test_set_hash", "by_defect")
STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class Episode:
    """(protocol@version, held-out category, k, seed): the unit of evaluation."""

    protocol: str
    protocol_version: str
    dataset: str
    category: str
    k: int
    seed: int

    @property
    def key(self) -> str:
        return identity.episode_key(
            self.protocol, self.protocol_version, self.category, self.k, self.seed
        )

    @property
    def meta_train_key(self) -> str:
        return identity.meta_train_key(
            self.protocol, self.protocol_version, self.category, self.seed
        )


@dataclass(frozen=True)
class Prediction:
    """What a method returns for a batch: scores (B,), and maps (B,H,W) or None."""

    scores: Tensor
    maps: Tensor | None = None


@dataclass(frozen=True)
class MethodRef:
    """Which method, exactly: registry name, plugin version, preset tag and full params."""

    name: str
    version: str
    preset: str | None
    params: dict[str, Any]
    produces_maps: bool

    @property
    def label(self) -> str:
        """``name`` or ``name.preset``: how the method was asked for, and reported."""
        return identity.method_label(self.name, self.preset)


@dataclass(frozen=True)
class EpisodeRecord:
    """One result line. Metrics are None when not applicable (no maps) or undefined."""

    run_id: str
    method: MethodRef
    protocol: str
    protocol_version: str
    protocol_hash: str
    dataset: str
    category: str
    k: int
    seed: int
    support_manifest_hash: str
    status: str
    metrics: dict[str, float | None]
    metric_notes: dict[str, str]
    metrics_version: str
    timing: dict[str, float | None]
    env: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    scores_file: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # e.g. batch_size: it changes floats
    test_set_hash: str | None = None  # the test listing the episode was scored on
    # per defect kind: its images against every normal test image (image and pixel metrics)
    by_defect: dict[str, dict[str, float | None]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def episode_key(self) -> str:
        return identity.episode_key(
            self.protocol, self.protocol_version, self.category, self.k, self.seed
        )

    @property
    def meta_train_key(self) -> str:
        return identity.meta_train_key(
            self.protocol, self.protocol_version, self.category, self.seed
        )

    @property
    def result_key(self) -> str:
        """Identity for resume: a method (with its params) on an episode."""
        return identity.result_key(self.method.name, self.method.preset, self.episode_key)

    def to_json(self) -> str:
        data = asdict(self)
        if self.schema_version == 1:  # written back exactly as it was read
            for name in _SCHEMA_2_FIELDS:
                data.pop(name)
        return json.dumps(data, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> EpisodeRecord:
        """Build from parsed JSON, checking types: records may come from untrusted files."""
        if not isinstance(data, dict):
            raise TypeError(f"a record must be a JSON object, not {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMAS or isinstance(version, bool):
            raise ValueError(
                f"record schema_version {version!r} is not one of {list(READABLE_SCHEMAS)}"
            )
        known = {f.name for f in fields(cls)} - (set(_SCHEMA_2_FIELDS) if version == 1 else set())
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"record has unknown fields {sorted(unknown)}")
        _check_types(data, _RECORD_TYPES, "")
        _check_types(data.get("method", {}), _METHOD_TYPES, "method.")
        data = dict(data)
        data["method"] = MethodRef(**data["method"])
        return cls(**data)


_NONE = type(None)
_RECORD_TYPES: dict[str, Any] = {
    "run_id": str, "protocol": str, "protocol_version": str, "protocol_hash": str,
    "dataset": str, "category": str, "k": int, "seed": int, "support_manifest_hash": str,
    "status": str, "metrics": dict, "metric_notes": dict, "metrics_version": str,
    "timing": dict, "env": dict, "provenance": dict, "error": (str, _NONE),
    "scores_file": (str, _NONE), "method": dict, "settings": dict,
    "test_set_hash": (str, _NONE), "by_defect": dict,
}  # fmt: skip
_METHOD_TYPES: dict[str, Any] = {
    "name": str, "version": str, "preset": (str, _NONE), "params": dict, "produces_maps": bool,
}  # fmt: skip


def _check_types(data: dict[str, Any], types: dict[str, Any], where: str) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"record field {where.rstrip('.')} must be an object")
    for name, expected in types.items():
        value = data.get(name)
        wrong = not isinstance(value, expected) or (expected is int and isinstance(value, bool))
        if name in data and wrong:
            raise TypeError(f"record field {where}{name} has type {type(value).__name__}")


def clean_metric(value: float | None) -> float | None:
    """JSON has no NaN: an undefined metric is stored as null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)
