"""Feature-map plumbing shared by the per-position methods (PaDiM, RegAD)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def concat_at_finest(features: Sequence[Tensor]) -> Tensor:
    """Coarser maps are repeated (nearest) to the first map's grid and stacked on channels.

    Nearest upsampling is what PaDiM's unfold/fold ``embedding_concat`` computes: every
    fine position gets the coarse feature of the cell it lies in.
    """
    target = features[0].shape[-2:]
    resized = [
        f if f.shape[-2:] == target else F.interpolate(f, size=target, mode="nearest")
        for f in features
    ]
    return torch.cat(resized, dim=1)
