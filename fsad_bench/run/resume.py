"""A run directory's identity: what a second call into the same ``--out`` must match.

``run.json`` remembers the protocol, its hash, image and batch size, the data listing and
every method's version and resolved parameters; a call that differs in any of them is
refused with one line, because its records would not compare with those already there.
Calls that add K, seeds or methods add to ``run.json`` instead of replacing it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsad_bench.errors import FsadError, ProtocolError
from fsad_bench.protocols.manifests import SupportEntry, load_manifest
from fsad_bench.records import EpisodeRecord
from fsad_bench.run.config import RunConfig
from fsad_bench.store import RUN_CONFIG, write_json_atomic

SUPPORTS = "support_manifest.json"
IDENTITY_KEYS = ("protocol", "protocol_hash", "image_size", "batch_size")


def run_identity(
    config: RunConfig, data: str, methods: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``methods``: each method's version and resolved parameters (``run.methods``)."""
    identity = {**config.identity(), "data": data, "methods": methods}
    return json.loads(json.dumps(identity, default=str))


def check_resume(config: RunConfig, identity: dict[str, Any]) -> None:
    path = config.out_dir / RUN_CONFIG
    if not path.exists():
        return
    previous = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
    for name, params in identity["method_params"].items():
        old = previous.get("method_params", {}).get(name)
        if old is not None and old != params:
            raise FsadError(
                f"{path}: {name} ran here with params {old}, now {params}; use a new --out"
            )
    for name, now in identity["methods"].items():
        old = previous.get("methods", {}).get(name)
        if old is not None and old != now:
            changed = "version" if old["version"] != now["version"] else "parameters"
            raise FsadError(
                f"{path}: {name} ran here as version {old['version']} with {old['params']}; "
                f"the installed plugin's {changed} differ ({now['version']}, {now['params']}), "
                "so its records would not compare; use a new --out"
            )
    if previous.get("data") not in (None, identity["data"]):
        raise FsadError(
            f"{path}: this run directory was played on other data (file listing "
            f"{previous['data']}, now {identity['data']} under {config.protocol.data_root}); "
            "point --data-root at the same copy or use a new --out"
        )
    for key in IDENTITY_KEYS:
        if key not in previous and key == "batch_size":
            continue  # run.json from before the batch size was recorded
        if previous.get(key) != identity[key]:
            raise FsadError(
                f"{path}: this run directory holds {key}={previous.get(key)!r}, not "
                f"{identity[key]!r}; use a new --out directory"
            )


def check_versions(
    path: Path, records: Sequence[EpisodeRecord], methods: dict[str, dict[str, Any]]
) -> None:
    """Records are the last word on what ran (a run.json from before it named the versions
    cannot say): a plugin upgraded since must not add episodes beside them."""
    for record in records:
        now = methods.get(record.method.label)
        if now is not None and now["version"] != record.method.version:
            raise FsadError(
                f"{path}: {record.method.label} ran here as version {record.method.version}, "
                f"the installed plugin is {now['version']}, so its records would not compare; "
                "use a new --out"
            )


def write_run_config(config: RunConfig, identity: dict[str, Any], env: dict[str, Any]) -> None:
    path = config.out_dir / RUN_CONFIG
    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    old = previous.get("identity", {})
    identity = dict(identity)
    identity["method_params"] = {**old.get("method_params", {}), **identity["method_params"]}
    identity["methods"] = {**old.get("methods", {}), **identity["methods"]}
    protocol = {**config.protocol.to_dict(), "source": None}
    for grid in ("shots", "seeds"):  # the directory holds every call's episodes, not the last's
        protocol[grid] = sorted(
            set(previous.get("protocol", {}).get(grid, [])) | set(protocol[grid])
        )
    payload = {
        "identity": identity,
        "protocol": protocol,
        "methods": sorted(set(previous.get("methods", [])) | set(config.methods)),
        "env": env,
    }
    write_json_atomic(path, json.loads(json.dumps(payload, default=str)))


def with_earlier(
    out_dir: Path, supports: dict[str, list[SupportEntry]]
) -> dict[str, list[SupportEntry]]:
    """This call's supports plus those an earlier call in the same directory recorded."""
    path = out_dir / SUPPORTS
    try:
        earlier = load_manifest(path) if path.exists() else {}
    except ProtocolError:  # a copy for the record, rebuilt from the protocol on every call
        earlier = {}
    return {**earlier, **supports}
