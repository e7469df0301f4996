"""Cache of meta-trained weights keyed by (method, version, params, held-out, seed, data).

The seed is the meta-training seed, which depends on the category and episode seed but
not on K (records.Episode.meta_train_key), so the weights are the same whichever K of a
sweep trains first.

A sweep over K then meta-trains once per held-out category and seed. A file lock makes a
second worker wait for the first instead of training the same network twice. Files are
written whole (synced, then renamed); one that cannot be read anyway (a disk fault, a copy
cut short) is deleted and the network trained again, with a line saying so.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fsad_bench.method import MetaTrainSet
from fsad_bench.store import write_bytes_atomic


def meta_key(name: str, version: str, params: dict[str, Any], held_out: str, seed: int,
             data_hash: str, compute: str, k: int | None = None) -> str:  # fmt: skip
    """``compute`` names the device and thread count: meta-training on 1 and on 2 threads
    sums in different orders and can end in different weights, so a resumed run on other
    threads retrains instead of mixing the two. ``k`` only for methods that meta-train
    with the episode's K."""
    parts = [name, version, params, held_out, seed, data_hash, compute]
    payload = json.dumps(parts + ([k] if k is not None else []), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def meta_fit_cached(
    method: Any, key: str, build_set: Callable[[], MetaTrainSet], cache_dir: Path | None
) -> bool:
    """Meta-fit ``method`` or load its cached meta state; returns True on a cache hit."""
    if cache_dir is None:
        method.meta_fit(build_set())
        return False
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{method.info.name}-{key}.pt"
    with open(cache_dir / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - truncated, empty or foreign: retrain
                print(
                    f"note: meta cache {path} is unreadable ({type(exc).__name__}); deleted, "
                    "meta-training again",
                    file=sys.stderr,
                    flush=True,
                )
                path.unlink(missing_ok=True)
            else:
                method.load_meta_state_dict(state)
                return True
        method.meta_fit(build_set())
        buffer = io.BytesIO()
        torch.save(method.meta_state_dict(), buffer)
        write_bytes_atomic(path, buffer.getvalue())
        return False
