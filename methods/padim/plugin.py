"""Adapter from the PaDiM core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fsad_bench.features.backbones import FeatureExtractor, WeightsSource, cached_feature_extractor
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError
from fsad_bench.records import Prediction
from fsad_methods.common.gaussian import COVARIANCES
from fsad_methods.padim.core import PaDiMModel, random_channels

DEFAULT_LAYERS = (1, 2, 3)  # strides 4, 8, 16 on every backbone here (ResNet layer1..layer3)


class PaDiM(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="padim", version="1.0", produces_maps=True, needs_meta_train=False
    )
    defaults: ClassVar[dict[str, Any]] = {
        "backbone": "efficientnet_lite0",
        "weights": "pretrained",
        "layers": None,  # None: DEFAULT_LAYERS
        "d": 100,  # None keeps every channel
        "channel_seed": 0,  # fixes WHICH d channels: part of the method, not the episode seed
        "covariance": "eps",
        "eps": 0.01,
        "sigma": 4.0,
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18", "d": 100},
        "wrn50": {"backbone": "wide_resnet50_2", "d": 550},
        "ledoit_wolf": {"covariance": "ledoit_wolf"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {"d": 32}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["covariance"] not in COVARIANCES:
            raise ValueError(
                f"padim: covariance={self.params['covariance']!r}; choose one of {COVARIANCES}"
            )
        d = self.params["d"]
        if d is not None and (not isinstance(d, int) or d < 1):
            raise ValueError(f"padim: d={d!r} must be a positive integer or null (all channels)")
        if not self.params["eps"] > 0:
            raise ValueError(f"padim: eps={self.params['eps']!r} must be > 0")
        self.device = torch.device("cpu")
        self._model: PaDiMModel | None = None

    def to(self, device: str | torch.device) -> PaDiM:
        self.device = torch.device(device)
        return self

    def _extractor(self) -> tuple[FeatureExtractor, WeightsSource]:
        layers = self.params["layers"]
        return cached_feature_extractor(
            self.params["backbone"],
            self.params["weights"],
            tuple(layers) if layers is not None else DEFAULT_LAYERS,
            str(self.device),
        )

    def _channels(self, extractor: FeatureExtractor) -> torch.Tensor | None:
        total = sum(extractor.feature_channels)
        return random_channels(total, self.params["d"], self.params["channel_seed"])

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        model = PaDiMModel(
            extractor,
            channels=self._channels(extractor),
            covariance=self.params["covariance"],
            eps=self.params["eps"],
            sigma=self.params["sigma"],
        )
        model.fit(support.to(self.device))
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("padim: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        extractor, source = self._extractor()
        total = sum(extractor.feature_channels)
        channels = self._channels(extractor)
        return {
            "backbone": self.params["backbone"],
            "weights": source.describe(),
            "layers": extractor.layers,
            "strides": extractor.feature_strides,
            "channels": f"{total if channels is None else len(channels)} of {total}",
        }
