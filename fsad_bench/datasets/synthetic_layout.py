"""Reading generated data: the MVTec layout, checked against what the protocol records.

A protocol over generated data may record the generator (``generator: synthetic-v2``) and
each category's content hash (``content_sha256.<category>: <16 hex>``) in its
``layout_options``; they are part of its definition hash. Reading a category compares them
with the ``SYNTHETIC.json`` its generator wrote, so data from another version, seed or
image size is refused before a run starts rather than scored under the protocol's name.
Without options this is the plain MVTec reader (version 1's protocols record none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsad_bench.datasets import mvtec
from fsad_bench.datasets.base import Category
from fsad_bench.errors import DatasetError

HASH_PREFIX = "content_sha256."
discover_categories = mvtec.discover_categories


def load_category(root: Path | None, name: str, **options: Any) -> Category:
    generator = options.pop("generator", None)
    hashes = {k[len(HASH_PREFIX) :]: v for k, v in options.items() if k.startswith(HASH_PREFIX)}
    mvtec.reject_options(
        "synthetic",
        {k: v for k, v in options.items() if not k.startswith(HASH_PREFIX)},
        ("generator", f"{HASH_PREFIX}<category>"),
    )
    if root is not None and (generator is not None or name in hashes):
        _check(Path(root), name, generator, hashes.get(name))
    return mvtec.load_category(root, name)


def _check(root: Path, name: str, generator: str | None, expected: str | None) -> None:
    # here, not at the top: the layout table must import without numpy, PIL and scipy
    from fsad_bench.datasets.synthetic_common import MANIFEST

    manifest = root / MANIFEST
    fix = "point --data-root at a `fsad-bench data synth` output of the protocol's version"
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{manifest}: cannot read its generator's record ({exc}); {fix}"
        ) from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{manifest}: not a generator's record (a JSON object); {fix}")
    found = meta.get("generator")
    if generator is not None and found != generator:
        raise DatasetError(f"{root} holds {found} data, the protocol needs {generator}; {fix}")
    actual = (meta.get("content_sha256") or {}).get(name)
    if expected is not None and actual != expected:
        raise DatasetError(
            f"{root}/{name}: content hash {actual} (seed {meta.get('seed')}, "
            f"{meta.get('image_size')} px), the protocol records {expected}; regenerate it with "
            "the protocol's seed and image size (e.g. delete the cached copy)"
        )
