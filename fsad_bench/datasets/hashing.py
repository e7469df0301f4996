"""Content hashes of images, independent of how a PNG encoder compressed them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from fsad_bench.errors import DatasetError


def pixel_sha256(path: Path) -> str:
    """SHA-256 of mode, size and raw pixels: equal images hash equal across Pillow/zlib versions."""
    try:
        with Image.open(path) as img:
            img.load()
            digest = hashlib.sha256(f"{img.mode}:{img.size}:".encode())
            digest.update(img.tobytes())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc}); re-extract or delete it") from exc
    return digest.hexdigest()
