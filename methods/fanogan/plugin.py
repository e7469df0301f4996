"""Adapter from the f-AnoGAN core to the fsad-bench Method contract.

fit trains the WGAN-GP and then the izif encoder from scratch on the K support images
(RegAD's augmented views by default); predict scores by the image and critic-feature
residuals of the reconstruction G(E(x)) and maps by the pixel residual.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.params import Field, Params, field_validator
from fsad_bench.records import Prediction
from fsad_methods.fanogan.core import (
    EncoderSchedule,
    FAnoGANConfig,
    GANSchedule,
    num_blocks,
    parameter_count,
)
from fsad_methods.fanogan.core import (
    FAnoGAN as FAnoGANModel,
)


class FAnoGANParams(Params):
    image_size: int = Field(32, ge=8, description="side of the GAN's images, a power of two")
    dim: int = Field(8, ge=1, description="base channel width of G, D and E (official: 64)")
    z_dim: int = Field(128, ge=1, description="latent dimension")
    gan_iterations: int = Field(200, ge=0, description="generator updates")
    critic_iters: int = Field(5, ge=1, description="critic updates per generator update")
    batch_size: int = Field(16, ge=1, description="images per GAN update (drawn with replacement)")
    lr: float = Field(1e-4, gt=0, description="Adam step size of G and D")
    beta1: float = Field(0.0, ge=0, lt=1, description="Adam beta1 of G and D")
    beta2: float = Field(0.9, ge=0, lt=1, description="Adam beta2 of G and D")
    gp_weight: float = Field(10.0, ge=0, description="gradient penalty weight lambda")
    encoder_iterations: int = Field(300, ge=0, description="izif encoder updates")
    encoder_batch_size: int = Field(16, ge=1, description="images per encoder update")
    encoder_lr: float = Field(5e-5, gt=0, description="RMSProp step size of the encoder")
    kappa: float = Field(1.0, ge=0, description="weight of the critic-feature residual")
    support_views: Literal["regad", "none"] = Field(
        "regad", description="train on RegAD's 22 views of each support, or on the supports"
    )
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the residual map, px")

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        try:
            num_blocks(size)
        except ValueError:
            raise ValueError("must be a power of two (8, 16, 32, 64, 128, ...)") from None
        return size


# The official configuration (wgangp_64x64.py, z_encoding_izif.py): 64 px, DIM 64, z 128,
# batch 64, 5 critic iterations, lambda 10, Adam 1e-4 (0, 0.9); encoder 50000 RMSProp
# iterations at 5e-5, kappa 1. The GAN ran 7 epochs of a large OCT set; for a K-shot set
# "epochs" mean little, so `paper` takes 25000 generator iterations (125000 critic
# updates), our guess at a comparable number of updates.
PAPER: dict[str, Any] = {
    "image_size": 64,
    "dim": 64,
    "batch_size": 64,
    "gan_iterations": 25000,
    "encoder_iterations": 50000,
    "encoder_batch_size": 64,
}


class FAnoGAN(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="fanogan", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = FAnoGANParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        "paper": dict(PAPER),
        "paper_plain": {**PAPER, "support_views": "none"},
        "plain": {"support_views": "none"},
        "px64": {"image_size": 64},
        # the paper's "izi" encoder: image residual only, in training and in the score
        "izi": {"kappa": 0.0},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "image_size": 16,
        "dim": 4,
        "z_dim": 16,
        "gan_iterations": 10,
        "critic_iters": 2,
        "batch_size": 8,
        "encoder_iterations": 40,
        "encoder_batch_size": 8,
        "encoder_lr": 1e-3,
        "support_views": "none",
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._model: FAnoGANModel | None = None

    def config(self) -> FAnoGANConfig:
        p = self.params
        return FAnoGANConfig(
            image_size=p.image_size,
            dim=p.dim,
            z_dim=p.z_dim,
            gan=GANSchedule(
                iterations=p.gan_iterations,
                critic_iters=p.critic_iters,
                batch_size=p.batch_size,
                lr=p.lr,
                betas=(p.beta1, p.beta2),
                gp_weight=p.gp_weight,
            ),
            encoder=EncoderSchedule(
                p.encoder_iterations, p.encoder_batch_size, p.encoder_lr, p.kappa
            ),
            support_views=p.support_views,
            sigma=p.sigma,
        )

    def to(self, device: str | torch.device) -> FAnoGAN:
        self.device = torch.device(device)
        return self

    def fit(self, support: torch.Tensor) -> None:
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        model = FAnoGANModel(self.config(), self.device)
        self._model = model.fit(support, episode_generator())

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("fanogan: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores.cpu(), maps=maps.cpu())

    def provenance(self) -> dict[str, Any]:
        model = self._model
        if model is None or model.generator is None:
            return {"parameters": None}
        nets = [model.generator, model.critic, model.encoder]
        last = {k: round(v[-1], 6) for k, v in model.log.items() if v}
        return {"parameters": parameter_count(nets), "final_loss": last}
