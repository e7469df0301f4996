"""RIAD (Zavrtanik et al., Pattern Recognition 2021) in pure torch; no harness imports.

An encoder-decoder learns to inpaint images whose grid cells were hidden. At test time the
image is split, for each cell size k, into n disjoint masks; the stitched inpaintings are
compared to the image with multi-scale gradient magnitude similarity, and the maps of all
k are averaged. Defects cannot be inpainted from their normal surroundings, so they stand out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.reconstruction import (
    grid_masks,
    resize,
    score_by_inpainting,
    stitched_reconstruction,
)
from fsad_methods.common.unet import UNet


def train_inpainting(
    model: nn.Module,
    images: Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    cells: Sequence[int],
    n_masks: int,
    loss_fn: ReconstructionLoss,
    generator: torch.Generator,
) -> list[float]:
    """Adam on the stitched-reconstruction loss; one random cell size per step, as in RIAD.

    Returns the loss of every step (for tests and logs). Batches are drawn with replacement
    so K=1 and a large pretraining set use the same loop.
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    size = images.shape[-1]
    losses = []
    for _ in range(steps):
        index = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        batch = images[index]
        cell = cells[int(torch.randint(len(cells), (1,), generator=generator))]
        masks = grid_masks(size, size, cell, n_masks, generator).to(images.device)
        loss = loss_fn(batch, stitched_reconstruction(model, batch, masks))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


class RIADModel:
    """A U-Net plus the fixed test masks it scores with."""

    def __init__(
        self,
        width: int = 16,
        input_size: int = 64,
        cells: Sequence[int] = (2, 4, 8, 16),
        n_masks: int = 3,
        scales: int = 4,
        sigma: float = 4.0,
        loss_fn: ReconstructionLoss | None = None,
    ) -> None:
        self.net = UNet(width)
        self.input_size = input_size
        self.cells = tuple(cells)
        self.n_masks = n_masks
        self.scales = scales
        self.sigma = sigma
        self.loss_fn = loss_fn or ReconstructionLoss()
        self.test_masks: list[Tensor] | None = None

    def train(
        self, images: Tensor, steps: int, lr: float, batch_size: int, generator: torch.Generator
    ) -> list[float]:
        return train_inpainting(
            self.net,
            resize(images, self.input_size),
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            cells=self.cells,
            n_masks=self.n_masks,
            loss_fn=self.loss_fn,
            generator=generator,
        )

    def draw_test_masks(self, generator: torch.Generator) -> None:
        """One mask set per cell size, reused for every test image (batch invariance)."""
        s = self.input_size
        self.test_masks = [grid_masks(s, s, k, self.n_masks, generator) for k in self.cells]

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def score(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) -> scores (B,) and maps (B,H,W) at the input size."""
        if self.test_masks is None:
            raise RuntimeError("draw_test_masks must run before score")
        return score_by_inpainting(
            self.net, images, self.test_masks, self.input_size, self.scales, self.sigma
        )
