"""Anomaly-map panels a run can save for the leaderboard's gallery: input | map | truth.

Panels are plain PNG files (no pickle, nothing executable), rendered in the worker and
written by the runner with the episode's record, so a submission can carry them and the
leaderboard can show them without the dataset. Maps share one colour scale per episode
(the test set's 1st to 99.9th percentile), so panels of one episode compare by eye.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import torch
from PIL import Image

MAPS_DIR = "maps"
PANEL_PX = 128
# anchor colours of a dark-to-bright perceptual ramp (black, purple, red, orange, pale yellow)
_RAMP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)


def maps_folder(result_key: str) -> str:
    """``maps/<20 hex>``: one folder per episode, named like its score sidecar."""
    return f"{MAPS_DIR}/{hashlib.sha256(result_key.encode()).hexdigest()[:20]}"


def choose(labels: torch.Tensor, count: int) -> list[int]:
    """Up to ``count`` test images: defective ones first, then normal, each in path order."""
    defective = [i for i, v in enumerate(labels.tolist()) if v == 1]
    normal = [i for i, v in enumerate(labels.tolist()) if v == 0]
    first = defective[: max(count - min(len(normal), count // 2), 0)]
    return first + normal[: count - len(first)]


def colourise(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 along the ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    weight = (position - low)[..., None]
    rgb = _RAMP[low] * (1 - weight) + _RAMP[low + 1] * weight
    return rgb.round().astype(np.uint8)


def _resized(array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((PANEL_PX, PANEL_PX), resample))


def panel_png(image: torch.Tensor, amap: torch.Tensor, mask: torch.Tensor | None,
              low: float, high: float) -> bytes:  # fmt: skip
    """One PNG, three squares side by side; a grey square where there is no ground truth."""
    rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    scaled = (amap.numpy().astype(np.float64) - low) / max(high - low, 1e-12)
    truth = (
        np.full(rgb.shape[:2], 128, np.uint8)
        if mask is None
        else mask.numpy().astype(np.uint8) * 255
    )
    squares = [
        _resized(rgb, Image.Resampling.BILINEAR),
        _resized(colourise(scaled), Image.Resampling.BILINEAR),
        np.repeat(_resized(truth, Image.Resampling.NEAREST)[..., None], 3, axis=2),
    ]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(squares, axis=1)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render(
    result_key: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    maps: torch.Tensor,
    scores: torch.Tensor,
    paths: tuple[str, ...],
    count: int,
) -> dict[str, bytes]:
    """Relative path -> bytes for up to ``count`` panels of one episode plus ``index.json``
    (which test image each panel shows); file names are ASCII whatever the data's names."""
    if count <= 0:
        return {}
    low, high = np.quantile(maps.numpy().astype(np.float64), [0.01, 0.999])
    folder = maps_folder(result_key)
    files, index = {}, []
    for rank, i in enumerate(choose(labels, count)):
        name = f"{rank:02d}-{'defect' if labels[i] else 'normal'}.png"
        mask = None if masks is None else masks[i]
        files[f"{folder}/{name}"] = panel_png(images[i], maps[i], mask, float(low), float(high))
        index.append({"file": name, "path": paths[i], "label": int(labels[i]),
                      "score": float(scores[i])})  # fmt: skip
    payload = {"result_key": result_key, "scale": [float(low), float(high)], "panels": index}
    files[f"{folder}/index.json"] = (json.dumps(payload, indent=1) + "\n").encode()
    return files
