"""Adapter from the raw-pixel k-NN core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fsad_bench.method import MethodBase, MethodInfo, NotFittedError
from fsad_bench.params import Field, Params, model_validator
from fsad_bench.records import Prediction
from fsad_methods.pixel_knn.core import PixelKNNModel


class PixelKNNParams(Params):
    downsample: int = Field(4, ge=1, description="images are average-pooled by this factor")
    patch_size: int = Field(3, ge=1, description="side of the raw RGB patches, odd")
    stride: int = Field(2, ge=1, description="test patch stride, at most patch_size")
    num_neighbours: int = Field(1, ge=1, description="k of the k-NN patch distance")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")

    @model_validator(mode="after")
    def _covering(self) -> PixelKNNParams:
        if self.patch_size % 2 != 1:
            raise ValueError(f"patch_size={self.patch_size} must be odd")
        if self.stride > self.patch_size:
            raise ValueError(
                f"stride={self.stride} must be at most patch_size={self.patch_size} so that "
                "the patches cover every pixel"
            )
        return self


class PixelKNN(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="pixel_knn", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = PixelKNNParams
    conformance_params: ClassVar[dict[str, Any]] = {"downsample": 2}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._model: PixelKNNModel | None = None

    def to(self, device: str | torch.device) -> PixelKNN:
        self.device = torch.device(device)
        return self

    def fit(self, support: torch.Tensor) -> None:
        model = PixelKNNModel(**self.params.to_dict())
        model.fit(support.to(self.device))
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("pixel_knn: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        """No backbone: raw pixels (the report says so instead of 'trained from scratch')."""
        return {
            "backbone": "none (raw RGB pixels)",
            "backbone_init": "none",
            "bank": self._model.bank_size if self._model else None,
        }
