"""AnoGrad: GradCon (Kwon et al., ECCV 2020) in pure torch; no harness imports.

A convolutional autoencoder is trained with ``MSE + alpha * L_grad``, where ``L_grad`` is the
negative cosine similarity, averaged over the decoder layers, between the current gradient
of the reconstruction loss with respect to each decoder weight and the running average of
those gradients over training. Normal images then need model updates that agree with the
ones training made; an anomaly asks for a different update. The image score is
``MSE + beta * L_grad`` of that image alone (its own backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

DEPTH = 4  # stride-2 layers on each side: inputs must be a multiple of 2**DEPTH pixels


class ConvAutoencoder(nn.Module):
    """GradCon's CAE: four 4x4 stride-2 convolutions down, four transposed ones up.

    Channels w, w, 2w, 2w (w=32 in the paper), ReLU between layers, sigmoid output; the
    kernel 4 / stride 2 / padding 1 layers halve and double the side exactly.
    """

    def __init__(self, width: int = 32, channels: int = 3) -> None:
        super().__init__()
        widths = [channels, width, width, 2 * width, 2 * width]
        down: list[nn.Module] = []
        for i in range(DEPTH):
            down += [nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1), nn.ReLU()]
        up: list[nn.Module] = []
        for i in range(DEPTH, 0, -1):
            up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 4, stride=2, padding=1))
            up.append(nn.ReLU() if i > 1 else nn.Sigmoid())
        self.down, self.up = nn.Sequential(*down), nn.Sequential(*up)

    def decoder_weights(self) -> list[str]:
        """Names of the parameters whose gradients GradCon constrains."""
        return [
            f"up.{i}.weight" for i, m in enumerate(self.up) if isinstance(m, nn.ConvTranspose2d)
        ]

    def forward(self, x: Tensor) -> Tensor:
        side = 2**DEPTH
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(
                f"autoencoder input side must be a multiple of {side}, got {x.shape[-2:]}"
            )
        return self.up(self.down(x))


@dataclass
class ReferenceGradient:
    """Running average of the decoder-weight gradients seen during training."""

    mean: dict[str, Tensor] = field(default_factory=dict)
    count: int = 0

    def update(self, grads: dict[str, Tensor]) -> None:
        self.count += 1
        for name, g in grads.items():
            g = g.detach()
            previous = self.mean.get(name, torch.zeros_like(g))
            self.mean[name] = previous + (g - previous) / self.count

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"mean.{k}": v.clone() for k, v in self.mean.items()}
        return state | {"count": torch.tensor(self.count)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ReferenceGradient:
        mean = {k.removeprefix("mean."): v.clone() for k, v in state.items() if k != "count"}
        return cls(mean, int(state["count"]))


def gradient_loss(grads: dict[str, Tensor], reference: ReferenceGradient) -> Tensor:
    """``-mean_i cos(grad_i, reference_i)`` over the decoder layers (GradCon's L_grad)."""
    sims = [
        F.cosine_similarity(g.flatten(), reference.mean[name].flatten(), dim=0)
        for name, g in grads.items()
    ]
    return -torch.stack(sims).mean()


def train_gradcon(
    model: ConvAutoencoder,
    images: Tensor,
    reference: ReferenceGradient,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    alpha: float,
    generator: torch.Generator,
) -> list[float]:
    """Adam on ``MSE + alpha * L_grad``; ``reference`` is updated in place every step.

    L_grad is differentiated through the reconstruction gradient (create_graph), as in
    GradCon; it is left out while the reference is still empty.
    """
    names = model.decoder_weights()
    weights = [dict(model.named_parameters())[n] for n in names]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        index = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        batch = images[index]
        mse = F.mse_loss(model(batch), batch)
        grads = dict(zip(names, torch.autograd.grad(mse, weights, create_graph=True), strict=True))
        loss = mse + alpha * gradient_loss(grads, reference) if reference.count else mse
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        reference.update(grads)
        history.append(float(loss.detach()))
    model.eval()
    return history


def gradcon_scores(
    model: ConvAutoencoder, images: Tensor, reference: ReferenceGradient, beta: float
) -> Tensor:
    """(B,3,H,W) -> (B,) ``MSE + beta * L_grad``, each image with its own gradient.

    ``vmap(grad(...))`` gives per-image gradients in one pass, so a batch scores exactly
    like its images one at a time. Autograd is switched back on here because the harness
    predicts under ``torch.inference_mode``; inputs are cloned out of inference mode.
    """
    if not reference.count:
        raise RuntimeError("the reference gradient is empty: train before scoring")
    names = model.decoder_weights()
    with torch.inference_mode(False), torch.enable_grad():
        images = images.clone()
        params = {n: p.detach() for n, p in model.named_parameters()}
        frozen = {n: p for n, p in params.items() if n not in names}
        decoder = {n: params[n] for n in names}

        def mse(dec: dict[str, Tensor], image: Tensor) -> Tensor:
            recon = functional_call(model, frozen | dec, (image[None],))
            return F.mse_loss(recon, image[None])

        def score(dec: dict[str, Tensor], image: Tensor) -> Tensor:
            grads, loss = grad_and_value(mse)(dec, image)
            return loss + beta * gradient_loss(grads, reference)

        model.eval()
        scores = vmap(score, in_dims=(None, 0))(decoder, images)
    return scores.detach()
