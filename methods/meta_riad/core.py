"""Meta-RIAD: MAML (Finn et al., 2017) over RIAD's inpainting U-Net; pure torch.

Each task is one category (1-way K-shot): a support and a query set of its normal images.
The inner loop takes SGD steps on the support inpainting loss; the outer update moves the
initialisation so that, after those steps, the query loss is low. Everything runs on a
parameter dict through ``torch.func.functional_call``; the second-order gradient is the
nested ``torch.func.grad`` of the unrolled inner loop, first-order MAML instead takes the
query gradient at the adapted parameters.

BatchNorm: inside the functional passes every BatchNorm layer normalises with the
statistics of the batch it is given (the task's masked support or query images, as in
Finn et al.'s code) and the running buffers are neither read nor written, so the
transforms never mutate module state. After adaptation the running statistics are
re-estimated from the support images alone (``calibrate_batchnorm``); predict runs in eval
mode on those, so a test image never influences another one's score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

from fsad_methods.common.reconstruction import grid_masks, random_pixel_masks

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@contextmanager
def batch_statistics(net: nn.Module) -> Iterator[nn.Module]:
    """Train mode with every BatchNorm on batch statistics and its buffers left untouched."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training, tracked = net.training, [m.track_running_stats for m in norms]
    net.train()
    for m in norms:
        m.track_running_stats = False
    try:
        yield net
    finally:
        for m, flag in zip(norms, tracked, strict=True):
            m.track_running_stats = flag
        net.train(was_training)


def parameters_of(net: nn.Module) -> Params:
    return {name: p.detach() for name, p in net.named_parameters()}


def masked(images: Tensor, masks: Tensor) -> Tensor:
    """Hidden pixels (mask True) are set to 0 in every channel."""
    return images * (~masks)[:, None].to(images.dtype)


def inpaint_loss(
    net: nn.Module, loss_fn: LossFn, params: Params, images: Tensor, masks: Tensor
) -> Tensor:
    """Reconstruction loss of the whole image from its masked copy (call in batch_statistics)."""
    return loss_fn(images, functional_call(net, params, (masked(images, masks),)))


def adapt(
    net: nn.Module,
    loss_fn: LossFn,
    params: Params,
    images: Tensor,
    step_masks: Sequence[Tensor],
    lr: float,
) -> Params:
    """Inner loop: one SGD step per entry of ``step_masks`` (each (K,H,W)).

    Differentiable in ``params`` when called under an outer ``torch.func.grad``.
    """
    step = grad(lambda p, m: inpaint_loss(net, loss_fn, p, images, m))
    for masks in step_masks:
        grads = step(params, masks)
        params = {name: p - lr * grads[name] for name, p in params.items()}
    return params


@dataclass(frozen=True)
class Task:
    """One category's support and query images, with the masks drawn for them."""

    support: Tensor  # (K,3,H,W)
    query: Tensor  # (Q,3,H,W)
    support_masks: Tensor  # (steps,K,H,W): one fresh mask per image and inner step
    query_masks: Tensor  # (Q,H,W)


def maml_gradient(
    net: nn.Module,
    loss_fn: LossFn,
    params: Params,
    task: Task,
    lr: float,
    first_order: bool = False,
) -> tuple[Tensor, Params]:
    """Query loss after adaptation and its gradient with respect to the initialisation."""

    def query_loss(p: Params) -> tuple[Tensor, Tensor]:
        loss = inpaint_loss(net, loss_fn, p, task.query, task.query_masks)
        return loss, loss.detach()

    with batch_statistics(net):
        if first_order:  # the query gradient at the adapted parameters stands in
            adapted = adapt(net, loss_fn, params, task.support, task.support_masks, lr)
            grads, loss = grad(query_loss, has_aux=True)(adapted)
        else:  # differentiate through the unrolled inner loop (nested torch.func.grad)

            def unrolled(p: Params) -> tuple[Tensor, Tensor]:
                return query_loss(adapt(net, loss_fn, p, task.support, task.support_masks, lr))

            grads, loss = grad(unrolled, has_aux=True)(params)
    return loss, grads


def sample_task(
    images: Tensor,
    shots: int,
    queries: int,
    inner_steps: int,
    density: tuple[float, float],
    generator: torch.Generator,
) -> Task:
    """Disjoint support and query images of one category, with fresh pixel masks."""
    if len(images) < shots + queries:
        raise ValueError(f"a task needs {shots}+{queries} images, the category has {len(images)}")
    order = torch.randperm(len(images), generator=generator).to(images.device)
    support, query = images[order[:shots]], images[order[shots : shots + queries]]
    h, w = images.shape[-2:]
    step_masks = random_pixel_masks(inner_steps * shots, h, w, density, generator)
    return Task(
        support,
        query,
        step_masks.reshape(inner_steps, shots, h, w).to(images.device),
        random_pixel_masks(queries, h, w, density, generator).to(images.device),
    )


@dataclass(frozen=True)
class MetaConfig:
    iterations: int = 100
    meta_batch: int = 2
    shots: int = 2
    queries: int = 2
    inner_steps: int = 1
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    first_order: bool = False
    density: tuple[float, float] = (0.2, 0.8)


def meta_train(
    net: nn.Module,
    loss_fn: LossFn,
    categories: Mapping[str, Tensor],
    config: MetaConfig,
    generator: torch.Generator,
) -> list[float]:
    """Adam on the MAML objective, ``meta_batch`` categories per outer step.

    Returns the mean post-adaptation query loss of every outer step.
    """
    names = sorted(categories)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.meta_lr)
    history = []
    for _ in range(config.iterations):
        picks = torch.randint(len(names), (config.meta_batch,), generator=generator).tolist()
        params = parameters_of(net)
        total: Params = {name: torch.zeros_like(p) for name, p in params.items()}
        losses = []
        for index in picks:
            task = sample_task(
                categories[names[index]],
                config.shots,
                config.queries,
                config.inner_steps,
                config.density,
                generator,
            )
            loss, grads = maml_gradient(
                net, loss_fn, params, task, config.inner_lr, config.first_order
            )
            losses.append(float(loss))
            for name in total:
                total[name] += grads[name] / len(picks)
        for name, p in net.named_parameters():
            p.grad = total[name]
        optimizer.step()
        history.append(sum(losses) / len(losses))
    return history


def adapt_to_support(
    net: nn.Module,
    loss_fn: LossFn,
    support: Tensor,
    steps: int,
    lr: float,
    density: tuple[float, float],
    generator: torch.Generator,
) -> Params:
    """Meta-test inner loop: ``steps`` SGD steps on the support set, no outer graph kept."""
    k, _, h, w = support.shape
    masks = random_pixel_masks(steps * k, h, w, density, generator).reshape(steps, k, h, w)
    with batch_statistics(net):
        adapted = adapt(net, loss_fn, parameters_of(net), support, masks.to(support.device), lr)
    return {name: p.detach() for name, p in adapted.items()}


@torch.no_grad()
def calibrate_batchnorm(
    net: nn.Module,
    support: Tensor,
    passes: int,
    density: tuple[float, float],
    generator: torch.Generator,
) -> None:
    """Running statistics = the average over ``passes`` masked copies of the support set."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    net.train()
    k, _, h, w = support.shape
    for _ in range(passes):
        masks = random_pixel_masks(k, h, w, density, generator).to(support.device)
        net(masked(support, masks))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.eval()


def load_parameters(net: nn.Module, params: Mapping[str, Tensor]) -> None:
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name])


def test_mask_sets(
    size: int, cells: Sequence[int], n_masks: int, repeats: int, generator: torch.Generator
) -> list[Tensor]:
    """``repeats`` partitions per cell size; cell 1 = random pixel masks of density 1/n."""
    return [grid_masks(size, size, c, n_masks, generator) for _ in range(repeats) for c in cells]
