"""Adapter from the Meta-RIAD core to the fsad-bench Method contract.

meta_fit runs MAML over the other categories; fit runs the inner loop on the K support
images from the meta-learned initialisation (a fresh copy every time), re-estimates the
BatchNorm statistics on the support set and fixes the test masks; predict only reads.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    episode_generator,
)
from fsad_bench.records import Prediction
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.reconstruction import resize, score_by_inpainting
from fsad_methods.common.unet import UNet
from fsad_methods.meta_riad.core import (
    MetaConfig,
    adapt_to_support,
    calibrate_batchnorm,
    load_parameters,
    meta_train,
    test_mask_sets,
)


class MetaRIAD(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="meta_riad", version="1.1", produces_maps=True, needs_meta_train=True
    )
    defaults: ClassVar[dict[str, Any]] = {
        "input_size": 64,
        "width": 8,
        "sigma": 4.0,
        "w_l2": 1.0,
        "w_ssim": 1.0,
        "w_gms": 1.0,
        "density": [0.2, 0.8],
        "meta_iterations": 200,
        "meta_batch": 2,
        "meta_shots": 2,
        "meta_queries": 2,
        "inner_steps": 1,
        "inner_lr": 0.05,
        "meta_lr": 3e-3,
        "first_order": False,
        "adapt_steps": 5,
        "bn_passes": 4,
        "test_cells": [1],
        "test_n_masks": 2,
        "test_repeats": 2,
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Full-size network and budget in the spirit of the thesis (RIAD's 256 px, 64-wide
        # U-Net; Finn et al.'s 5 inner steps, meta-batch 4, Adam 1e-4 outer steps).
        "paper": {
            "input_size": 256,
            "width": 64,
            "meta_iterations": 10000,
            "meta_batch": 4,
            "meta_shots": 5,
            "meta_queries": 5,
            "inner_steps": 5,
            "inner_lr": 0.01,
            "meta_lr": 1e-4,
            "adapt_steps": 10,
            "test_repeats": 4,
        },
        "first_order": {"first_order": True},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 32,
        "width": 4,
        "meta_iterations": 2,
        "meta_shots": 1,
        "meta_queries": 1,
        "adapt_steps": 2,
        "bn_passes": 2,
        "test_repeats": 1,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if p["input_size"] % 16 or p["input_size"] < 16:
            raise ValueError(f"meta_riad: input_size={p['input_size']} must be a multiple of 16")
        low, high = p["density"]
        if not 0 < low <= high < 1:
            raise ValueError(f"meta_riad: density={p['density']} must be [low, high] in (0, 1)")
        self.device = torch.device("cpu")
        self._meta_net: UNet | None = None
        self._net: UNet | None = None
        self._mask_sets: list[torch.Tensor] = []

    def to(self, device: str | torch.device) -> MetaRIAD:
        self.device = torch.device(device)
        return self

    @property
    def _loss(self) -> ReconstructionLoss:
        return ReconstructionLoss(self.params["w_l2"], self.params["w_ssim"], self.params["w_gms"])

    @property
    def _density(self) -> tuple[float, float]:
        low, high = self.params["density"]
        return float(low), float(high)

    def meta_config(self) -> MetaConfig:
        p = self.params
        return MetaConfig(
            iterations=p["meta_iterations"],
            meta_batch=p["meta_batch"],
            shots=p["meta_shots"],
            queries=p["meta_queries"],
            inner_steps=p["inner_steps"],
            inner_lr=p["inner_lr"],
            meta_lr=p["meta_lr"],
            first_order=p["first_order"],
            density=self._density,
        )

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        net = UNet(self.params["width"]).to(self.device)
        size = self.params["input_size"]
        categories = {
            name: resize(imgs.to(self.device), size) for name, imgs in tasks.images.items()
        }
        meta_train(net, self._loss, categories, self.meta_config(), episode_generator())
        self._meta_net, self._net = net, None

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        if self._meta_net is None:
            raise NotFittedError("meta_riad: call meta_fit before meta_state_dict")
        return {k: v.detach().clone() for k, v in self._meta_net.state_dict().items()}

    def load_meta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        net = UNet(self.params["width"])
        net.load_state_dict(state)
        self._meta_net, self._net = net.to(self.device), None

    def fit(self, support: torch.Tensor) -> None:
        if self._meta_net is None:
            raise NotFittedError("meta_riad: call meta_fit or load_meta_state_dict before fit")
        p, generator = self.params, episode_generator()
        support = resize(support.to(self.device), p["input_size"])
        net = copy.deepcopy(self._meta_net)  # fit(A) then fit(B) equals fit(B)
        adapted = adapt_to_support(
            net, self._loss, support, p["adapt_steps"], p["inner_lr"], self._density, generator
        )
        load_parameters(net, adapted)
        calibrate_batchnorm(net, support, p["bn_passes"], self._density, generator)
        self._mask_sets = test_mask_sets(
            p["input_size"], p["test_cells"], p["test_n_masks"], p["test_repeats"], generator
        )
        self._net = net

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._net is None:
            raise NotFittedError("meta_riad: call fit(support) before predict")
        scores, maps = score_by_inpainting(
            self._net,
            images.to(self.device),
            self._mask_sets,
            self.params["input_size"],
            sigma=self.params["sigma"],
        )
        return Prediction(scores=scores, maps=maps)
