"""A pretrained backbone's stages as a plain module: trainable copies and uncached views.

The harness hands methods frozen feature extractors whose calls go through a process-wide
cache keyed by the weights they were built with. Two kinds of method need something else:

- methods that fine-tune the backbone (CutPaste) need their own copy whose weights move; a
  cache keyed by the original weights would return stale features for it;
- methods that call a frozen backbone on a fresh random batch at every step (MKD's
  teacher on augmented images, gradients with respect to the input) gain nothing from the
  cache and would only fill it.

``BackboneStages`` calls the backbone directly. It works with any extractor that exposes
the harness's attributes (``body``: a timm model with ``forward_intermediates``,
``normalise``: the input normalisation, ``layers``: the stage indices), so this module does
not import the harness.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


class BackboneStages(nn.Module):
    """(N,3,H,W) images in [0, 1] -> list of (N,C_i,H/s_i,W/s_i) stage maps, no cache.

    ``trainable=False`` shares the extractor's frozen weights and stays in eval mode (its
    BatchNorm statistics never move), gradients still flow to the input. ``trainable=True``
    deep-copies the weights, so training the copy leaves the shared extractor untouched.
    """

    def __init__(self, extractor: Any, trainable: bool = False) -> None:
        super().__init__()
        body = extractor.body
        self.trainable = trainable
        self.body = copy.deepcopy(body) if trainable else body
        self.layers: list[int] = list(extractor.layers)
        self.channels: list[int] = list(extractor.feature_channels)
        self.strides: list[int] = list(extractor.feature_strides)
        self.register_buffer("mean", extractor.mean.detach().clone(), persistent=False)
        self.register_buffer("std", extractor.std.detach().clone(), persistent=False)
        if trainable:
            self.body.requires_grad_(True)
        super().train(False)

    def train(self, mode: bool = True) -> BackboneStages:
        return super().train(mode and self.trainable)

    def forward(self, images: Tensor) -> list[Tensor]:
        normalised = (images - self.mean) / self.std
        return self.body.forward_intermediates(
            normalised, indices=self.layers, intermediates_only=True
        )


def pooled_last_stage(stages: nn.Module, images: Tensor) -> Tensor:
    """(N,3,H,W) -> (N,C): the last stage globally averaged (a ResNet's 'avgpool' output)."""
    return stages(images)[-1].mean(dim=(2, 3))


@contextmanager
def seeded_init(generator: torch.Generator) -> Iterator[None]:
    """Modules built inside draw PyTorch's default initialisation from a seed taken from
    ``generator``, leaving torch's global stream as it was: the episode seed then fixes
    every parameter."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
