"""Every seed the runner sets, derived in one place from the episode and the method.

The runner seeds python, numpy and torch before meta_fit, fit and predict; plugins draw their
own generators from torch's global RNG (``fsad_bench.method.episode_generator``) so the
episode seed reaches them. Meta-training's seed leaves K out: its cached weights are shared
by every K of a category and seed (docs/architecture.md, Seeds).
"""

from __future__ import annotations

from fsad_bench.protocols.protocol import derive_seed
from fsad_bench.records import Episode


def fit_seed(episode: Episode, method: str) -> int:
    """Seed before fit; predict uses this + 1."""
    return derive_seed(episode.key, method)


def meta_fit_seed(episode: Episode, method: str, per_k: bool = False) -> int:
    """Without K unless the method meta-trains with the episode's K (``meta_uses_k``)."""
    return derive_seed(episode.key if per_k else episode.meta_train_key, method, "meta_fit")


def seed_everything(seed: int) -> None:
    """The runner seeds python, numpy and torch before every meta_fit/fit/predict."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
