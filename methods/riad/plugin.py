"""Adapter from the RIAD core to the fsad-bench Method contract.

meta_fit pretrains the inpainting U-Net on the other categories' normal images; fit
fine-tunes a fresh copy of that pretrained net on the K support images.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    PretrainedState,
    episode_generator,
)
from fsad_bench.records import Prediction
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.riad.core import RIADModel


class RIAD(PretrainedState, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="riad", version="1.1", produces_maps=True, needs_meta_train=True
    )
    defaults: ClassVar[dict[str, Any]] = {
        "input_size": 64,
        "width": 16,
        "cells": [2, 4, 8, 16],
        "n_masks": 3,
        "sigma": 4.0,
        "w_l2": 1.0,
        "w_ssim": 1.0,
        "w_gms": 1.0,
        "batch_size": 8,
        "pretrain_steps": 300,
        "pretrain_lr": 1e-3,
        "fit_steps": 50,
        "fit_lr": 1e-4,
    }
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
        size = self.params["input_size"]
        if size % 16 or size < 16:
            raise ValueError(f"riad: input_size={size} must be a positive multiple of 16")
        self.device = torch.device("cpu")
        self._pretrained: dict[str, torch.Tensor] | None = None
        self._model: RIADModel | None = None

    def to(self, device: str | torch.device) -> RIAD:
        self.device = torch.device(device)
        return self

    def _new_model(self) -> RIADModel:
        p = self.params
        loss = ReconstructionLoss(p["w_l2"], p["w_ssim"], p["w_gms"])
        model = RIADModel(
            p["width"], p["input_size"], p["cells"], p["n_masks"], sigma=p["sigma"], loss_fn=loss
        )
        model.net.to(self.device)
        return model

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        model = self._new_model()
        images = torch.cat([imgs for _, imgs in sorted(tasks.images.items())]).to(self.device)
        model.train(
            images,
            self.params["pretrain_steps"],
            self.params["pretrain_lr"],
            self.params["batch_size"],
            episode_generator(),
        )
        self._pretrained = model.state_dict()
        self._model = None

    def fit(self, support: torch.Tensor) -> None:
        if self._pretrained is None:
            raise NotFittedError("riad: call meta_fit (pretraining) or load_meta_state_dict first")
        model = self._new_model()  # a fresh copy: fit(A) then fit(B) equals fit(B)
        model.net.load_state_dict(self._pretrained)
        generator = episode_generator()
        model.train(
            support.to(self.device),
            self.params["fit_steps"],
            self.params["fit_lr"],
            self.params["batch_size"],
            generator,
        )
        model.draw_test_masks(generator)
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("riad: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)
