"""Shared fixtures: tiny MVTec-layout datasets built on the fly, hermetic caches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_mvtec_category(
    root: Path, name: str, n_train: int = 6, n_good: int = 3, n_bad: int = 3, size: int = 32,
    seed: int = 0,
) -> Path:  # fmt: skip
    """Noise-textured normals; defects are bright squares with exact masks."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 120, size=(size, size, 3), dtype=np.uint8)

    def normal() -> np.ndarray:
        jitter = rng.integers(-10, 10, size=(size, size, 3))
        return np.clip(base.astype(int) + jitter, 0, 255).astype(np.uint8)

    for i in range(n_train):
        write_png(root / name / "train" / "good" / f"{i:03d}.png", normal())
    for i in range(n_good):
        write_png(root / name / "test" / "good" / f"{i:03d}.png", normal())
    for i in range(n_bad):
        image, mask = normal(), np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 8, size=2)
        image[y : y + 8, x : x + 8] = 250
        mask[y : y + 8, x : x + 8] = 255
        write_png(root / name / "test" / "blob" / f"{i:03d}.png", image)
        write_png(root / name / "ground_truth" / "blob" / f"{i:03d}_mask.png", mask)
    return root / name


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    root = tmp_path / "mvtec"
    for index, name in enumerate(["alpha", "beta", "gamma"]):
        make_mvtec_category(root, name, seed=index)
    return root


@pytest.fixture
def fake_methods() -> Iterator[None]:
    """Register the misbehaving/spying plugins of fake_plugins.py for one test."""
    from fake_plugins import FAKES

    from fsad_bench import registry

    for name, target in FAKES.items():
        registry.register(name, target)
    yield
    for name in FAKES:
        registry.unregister(name)
