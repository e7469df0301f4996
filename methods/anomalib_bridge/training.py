"""anomalib's own training step on the K support images, without a Lightning Trainer.

A Trainer per episode would cost its own start-up (loggers, callbacks, checkpoint and
progress machinery, data loaders) on top of the model's work. LightningModule supports
running outside a Trainer when ``module._fabric`` is set: ``self.optimizers()``,
``manual_backward``, ``self.log`` and ``self.trainer.<attr>`` are then routed to that object.
``_Loop`` is that object: it owns the epoch/step counters and the batches, and does what
Lightning's fit loop does for these models:

- optimisers and schedulers come from the module's ``configure_optimizers``, parsed by
  Lightning's own helper; automatic optimisation is zero_grad, ``training_step``,
  ``module.backward`` (CFA overrides it), gradient clipping by norm when the module's
  ``trainer_arguments`` ask for it, ``step``; epoch-interval schedulers step after each
  epoch, step-interval ones after each step; manual optimisation is the module's own
  ``training_step``;
- hooks: ``setup``, ``on_fit_start``, ``on_train_start`` (CFA initialises its centroids),
  ``on_train_epoch_start``/``end`` (memory-bank models fit at the end of the epoch),
  ``on_train_end``, ``on_fit_end``;
- each epoch shuffles the support with ``torch.randperm`` from the global RNG (as a
  shuffling DataLoader draws its seed) and cuts it into batches of ``batch_size``; each batch
  is an ``ImageBatch`` of normal images with zero labels and zero masks, like anomalib's
  segmentation datamodules give.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class _DataModule:
    batches: list[Any]

    def train_dataloader(self) -> list[Any]:
        return self.batches


@dataclass
class _Loop:
    """What a LightningModule reaches through ``self.trainer`` and ``self.fabric`` here."""

    max_epochs: int
    max_steps: int
    datamodule: _DataModule
    global_step: int = 0
    current_epoch: int = 0
    logged: dict[str, float] = field(default_factory=dict)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    def log_dict(self, metrics: dict[str, Any], **_: Any) -> None:
        self.logged.update({k: float(v) for k, v in metrics.items()})


@dataclass(frozen=True)
class TrainLog:
    epochs: int
    steps: int  # optimiser steps (0 for models without an optimiser)
    images_seen: int
    last_logged: dict[str, float]


def _batches(images: Tensor, batch_size: int) -> list[Any]:
    from anomalib.data import ImageBatch

    order = torch.randperm(len(images))
    batches = []
    for start in range(0, len(images), batch_size):
        chosen = images[order[start : start + batch_size]]
        n, _, h, w = chosen.shape
        batches.append(
            ImageBatch(
                image=chosen,
                gt_label=torch.zeros(n, dtype=torch.long),
                gt_mask=torch.zeros(n, h, w, dtype=torch.uint8),
            )
        )
    return batches


def _optimisation(module: Any) -> tuple[list[torch.optim.Optimizer], list[Any]]:
    from lightning.pytorch.core.optimizer import (
        _configure_optimizers,
        _configure_schedulers_automatic_opt,
        _configure_schedulers_manual_opt,
    )

    conf = module.configure_optimizers()
    if conf is None:
        return [], []
    optimizers, schedulers, monitor = _configure_optimizers(conf)
    if module.automatic_optimization:
        return optimizers, _configure_schedulers_automatic_opt(schedulers, monitor)
    return optimizers, _configure_schedulers_manual_opt(schedulers)


def _clip(module: Any, optimizer: torch.optim.Optimizer) -> None:
    value = module.trainer_arguments.get("gradient_clip_val") or 0
    if value > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, value)


def _loss(output: Any) -> Tensor | None:
    if isinstance(output, dict):
        return output.get("loss")
    return output if isinstance(output, Tensor) else None


@contextmanager
def quiet_progress() -> Iterator[None]:
    """anomalib's progress bars (coreset selection, CFA's centroids) off for an episode."""
    with ExitStack() as stack:
        for module in [m for n, m in list(sys.modules.items()) if n.startswith("anomalib")]:
            bar = getattr(module, "tqdm", None)
            if module is not None and isinstance(bar, type):
                module.tqdm = functools.partial(bar, disable=True)
                stack.callback(setattr, module, "tqdm", bar)
        yield


def train(module: nn.Module, images: Tensor, epochs: int, max_steps: int | None,
          batch_size: int) -> TrainLog:  # fmt: skip
    """Fit ``module`` on pre-processed ``images`` (N, 3, H, W) for ``epochs`` epochs, stopping
    early after ``max_steps`` training steps when given."""
    with quiet_progress():
        return _train(module, images, epochs, max_steps, batch_size)


def _train(module: nn.Module, images: Tensor, epochs: int, max_steps: int | None,
           batch_size: int) -> TrainLog:  # fmt: skip
    first = _batches(images, batch_size)
    loop = _Loop(epochs, max_steps if max_steps is not None else -1, _DataModule(first))
    module._fabric = loop  # type: ignore[assignment]
    module._trainer = loop  # type: ignore[assignment]  # global_step/current_epoch read it
    seen = steps = 0
    try:
        optimizers, schedulers = _optimisation(module)
        module._fabric_optimizers = optimizers  # type: ignore[assignment]
        automatic = module.automatic_optimization and bool(optimizers)
        module.train()
        module.setup("fit")
        module.on_fit_start()
        module.on_train_start()
        for epoch in range(epochs):
            loop.current_epoch = epoch
            batches = first if epoch == 0 else _batches(images, batch_size)
            loop.datamodule.batches = batches
            module.on_train_epoch_start()
            for index, batch in enumerate(batches):
                if automatic:
                    optimizer = optimizers[0]
                    optimizer.zero_grad()
                    loss = _loss(module.training_step(batch, index))
                    if loss is not None:
                        module.backward(loss)
                        _clip(module, optimizer)
                        optimizer.step()
                        steps += 1
                else:
                    module.training_step(batch, index)
                    steps += bool(optimizers)
                loop.global_step = steps
                seen += len(batch.image)
                for config in schedulers:
                    if automatic and config.interval == "step":
                        config.scheduler.step()
                if 0 <= loop.max_steps <= steps:
                    break
            module.on_train_epoch_end()
            for config in schedulers:
                if automatic and config.interval == "epoch":
                    config.scheduler.step()
            if 0 <= loop.max_steps <= steps:
                epochs = epoch + 1
                break
        module.on_train_end()
        module.on_fit_end()
    finally:
        module._fabric = None  # type: ignore[assignment]
        module._trainer = None  # type: ignore[assignment]
        module._fabric_optimizers = []  # type: ignore[assignment]
    module.eval()
    return TrainLog(epochs, steps, seen, dict(loop.logged))
