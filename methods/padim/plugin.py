"""Adapter from the PaDiM core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from fsad_bench.features.backbones import (
    BackboneMethod,
    BackboneParams,
    FeatureExtractor,
)
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError
from fsad_bench.params import Field
from fsad_bench.records import Prediction
from fsad_methods.padim.core import PaDiMModel, random_channels

DEFAULT_LAYERS = (1, 2, 3)  # strides 4, 8, 16 on every backbone here (ResNet layer1..layer3)
Covariance = Literal["eps", "ledoit_wolf"]  # fsad_methods.common.gaussian.COVARIANCES


class PaDiMParams(BackboneParams):
    layers: tuple[int, ...] | None = Field(None, description="stage indices; null: 1, 2, 3")
    d: int | None = Field(100, ge=1, description="channels kept; null keeps all")
    # fixes WHICH d channels: part of the method, not the episode seed
    channel_seed: int = Field(0, ge=0, description="seed of the channel subset")
    covariance: Covariance = Field("eps", description="eps: sample + eps I; ledoit_wolf")
    eps: float = Field(0.01, gt=0, description="ridge added to every covariance")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")


class PaDiM(BackboneMethod, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="padim", version="1.0", produces_maps=True, needs_meta_train=False
    )
    default_layers = DEFAULT_LAYERS
    params_type = PaDiMParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18", "d": 100},
        "wrn50": {"backbone": "wide_resnet50_2", "d": 550},
        "ledoit_wolf": {"covariance": "ledoit_wolf"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {"d": 32}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: PaDiMModel | None = None

    def _channels(self, extractor: FeatureExtractor) -> torch.Tensor | None:
        total = sum(extractor.feature_channels)
        return random_channels(total, self.params.d, self.params.channel_seed)

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        model = PaDiMModel(
            extractor,
            channels=self._channels(extractor),
            covariance=self.params.covariance,
            eps=self.params.eps,
            sigma=self.params.sigma,
        )
        model.fit(support.to(self.device))
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("padim: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        extractor, _ = self._extractor()
        total = sum(extractor.feature_channels)
        channels = self._channels(extractor)
        return {
            **self._backbone_provenance(),
            "layers": extractor.layers,
            "strides": extractor.feature_strides,
            "channels": f"{total if channels is None else len(channels)} of {total}",
        }
