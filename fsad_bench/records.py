"""Frozen records that cross module boundaries: episodes, predictions and result lines.

One JSON line per (method, episode) is the unit everything else (report, submissions,
leaderboard, regression check) reads, so its schema is versioned and validated on load.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of `fsad-bench list` and the leaderboard
    from torch import Tensor

SCHEMA_VERSION = 1
METRIC_NAMES = ("image_auroc", "pixel_auroc", "aupro")
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
        return f"{self.protocol}@{self.protocol_version}/{self.category}/k{self.k}/seed{self.seed}"

    @property
    def meta_train_key(self) -> str:
        """The key without K: meta-training sees no support images, and its weights are
        shared by every K of a category and seed, so its seed must not depend on K."""
        return f"{self.protocol}@{self.protocol_version}/{self.category}/seed{self.seed}"


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
        return f"{self.name}.{self.preset}" if self.preset else self.name


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
    schema_version: int = SCHEMA_VERSION

    @property
    def episode_key(self) -> str:
        return f"{self.protocol}@{self.protocol_version}/{self.category}/k{self.k}/seed{self.seed}"

    @property
    def meta_train_key(self) -> str:
        """The key without K: meta-training sees no support images, and its weights are
        shared by every K of a category and seed, so its seed must not depend on K."""
        return f"{self.protocol}@{self.protocol_version}/{self.category}/seed{self.seed}"

    @property
    def result_key(self) -> str:
        """Identity for resume: a method (with its params) on an episode."""
        return f"{self.method.name}:{self.method.preset or ''}:{self.episode_key}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> EpisodeRecord:
        """Build from parsed JSON, checking types: records may come from untrusted files."""
        if not isinstance(data, dict):
            raise TypeError(f"a record must be a JSON object, not {type(data).__name__}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"record schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}"
            )
        known = {f.name for f in fields(cls)}
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
    "scores_file": (str, _NONE), "method": dict,
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
