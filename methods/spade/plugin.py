"""Adapter from the SPADE core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from fsad_bench.features.backbones import (
    BackboneMethod,
    BackboneParams,
)
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError
from fsad_bench.params import Field
from fsad_bench.records import Prediction
from fsad_methods.spade.core import SPADEModel

# strides 4, 8, 16 form the pixel pyramid (the paper's ResNet layer1..layer3) and the
# stride-32 stage, globally averaged, describes the image (the paper's pooled layer4)
DEFAULT_LAYERS = (1, 2, 3, 4)
PixelMatching = Literal["concat", "per_layer"]  # fsad_methods.spade.core.PIXEL_MATCHING


class SPADEParams(BackboneParams):
    layers: tuple[int, ...] | None = Field(
        None,
        min_length=2,
        description="stage indices: the pixel pyramid, then the image-level stage; "
        "null: 1, 2, 3, 4",
    )
    k_images: int = Field(50, ge=1, description="nearest support images (at most K are used)")
    k_pixels: int = Field(1, ge=1, description="nearest gallery features per test position")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")
    pixel_matching: PixelMatching = Field(
        "concat", description="concat: one kNN on the joined pyramid; per_layer: one per level"
    )


class SPADE(BackboneMethod, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="spade", version="1.0", produces_maps=True, needs_meta_train=False
    )
    default_layers = DEFAULT_LAYERS
    params_type = SPADEParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18"},
        "wrn50": {"backbone": "wide_resnet50_2"},
        "paper": {"backbone": "wide_resnet50_2"},
        "per_layer": {"pixel_matching": "per_layer"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: SPADEModel | None = None

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        p = self.params
        model = SPADEModel(
            extractor,
            k_images=p.k_images,
            k_pixels=p.k_pixels,
            sigma=p.sigma,
            pixel_matching=p.pixel_matching,
        )
        model.fit(support.to(self.device))  # deterministic: no random draws
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("spade: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        extractor, _ = self._extractor()
        return {
            **self._backbone_provenance(),
            "layers": extractor.layers,
            "strides": extractor.feature_strides,
        }
