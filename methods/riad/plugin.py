"""Adapter from the RIAD core to the fsad-bench Method contract.

meta_fit pretrains the inpainting U-Net on the other categories' normal images; fit
fine-tunes a fresh copy of that pretrained net on the K support images.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import torch

from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    PretrainedState,
    episode_generator,
)
from fsad_bench.params import Field, Params
from fsad_bench.records import Prediction
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.riad.core import RIADModel

PositiveInt = Annotated[int, Field(ge=1)]


class RIADParams(Params):
    input_size: int = Field(64, ge=16, multiple_of=16, description="internal side, pixels")
    width: int = Field(16, ge=1, description="first U-Net block's channels")
    cells: tuple[PositiveInt, ...] = Field((2, 4, 8, 16), min_length=1, description="cell sides")
    n_masks: int = Field(3, ge=1, description="disjoint masks per cell size")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")
    w_l2: float = Field(1.0, ge=0, description="loss weight")
    w_ssim: float = Field(1.0, ge=0, description="loss weight")
    w_gms: float = Field(1.0, ge=0, description="loss weight")
    batch_size: int = Field(8, ge=1, description="images per step")
    pretrain_steps: int = Field(300, ge=0, description="meta_fit Adam steps")
    pretrain_lr: float = Field(1e-3, gt=0, description="meta_fit Adam step size")
    fit_steps: int = Field(50, ge=0, description="fit Adam steps on the support images")
    fit_lr: float = Field(1e-4, gt=0, description="fit Adam step size")


class RIAD(PretrainedState, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="riad", version="1.1", produces_maps=True, needs_meta_train=True
    )
    params_type = RIADParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Zavrtanik et al.: 256x256 inputs, a 64-wide U-Net, Adam at 1e-4. Their 300 epochs
        # over a full MVTec category become a step budget here.
        "paper": {
            "input_size": 256,
            "width": 64,
            "batch_size": 8,
            "pretrain_steps": 20000,
            "pretrain_lr": 1e-4,
            "fit_steps": 500,
            "fit_lr": 1e-4,
        },
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 32,
        "width": 4,
        "cells": [2, 4, 8],
        "pretrain_steps": 3,
        "fit_steps": 2,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._pretrained: dict[str, torch.Tensor] | None = None
        self._model: RIADModel | None = None

    def to(self, device: str | torch.device) -> RIAD:
        self.device = torch.device(device)
        return self

    def _new_model(self) -> RIADModel:
        p = self.params
        loss = ReconstructionLoss(p.w_l2, p.w_ssim, p.w_gms)
        model = RIADModel(p.width, p.input_size, p.cells, p.n_masks, sigma=p.sigma, loss_fn=loss)
        model.net.to(self.device)
        return model

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        model = self._new_model()
        images = torch.cat([imgs for _, imgs in sorted(tasks.images.items())]).to(self.device)
        p = self.params
        model.train(images, p.pretrain_steps, p.pretrain_lr, p.batch_size, episode_generator())
        self._pretrained = model.state_dict()
        self._model = None

    def fit(self, support: torch.Tensor) -> None:
        if self._pretrained is None:
            raise NotFittedError("riad: call meta_fit (pretraining) or load_meta_state_dict first")
        model = self._new_model()  # a fresh copy: fit(A) then fit(B) equals fit(B)
        model.net.load_state_dict(self._pretrained)
        generator = episode_generator()
        p = self.params
        model.train(support.to(self.device), p.fit_steps, p.fit_lr, p.batch_size, generator)
        model.draw_test_masks(generator)
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("riad: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)
