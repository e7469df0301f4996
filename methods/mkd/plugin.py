"""Adapter from the MKD core to the fsad-bench Method contract.

fit trains a fresh student on the K support images (RegAD's augmented views by default) to
copy the frozen pretrained teacher's critical layers; predict scores with the distillation
loss and maps with its input gradient.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from fsad_bench.features.backbones import (
    BackboneParams,
    FeatureExtractor,
    WeightsSource,
    cached_feature_extractor,
    check_backbone,
)
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.params import Field
from fsad_bench.records import Prediction
from fsad_methods.common.encoders import BackboneStages
from fsad_methods.mkd.core import MKDModel, Schedule

# the last four blocks of VGG-16 (strides 4-32) in the paper; the same strides here
DEFAULT_LAYERS = (1, 2, 3, 4)
# backbones whose stage outputs pass through a ReLU (the student's outputs then do too);
# EfficientNet stages end in a linear projection, so a student copying them must not
RELU_STAGES = ("resnet18", "wide_resnet50_2")


class MKDParams(BackboneParams):
    layers: tuple[int, ...] = Field(DEFAULT_LAYERS, description="teacher stages distilled")
    input_size: int = Field(128, ge=32, multiple_of=32, description="internal side, px")
    width: int = Field(16, ge=1, description="channels of the student's inner convolutions")
    lamda: float = Field(0.5, ge=0, description="weight of the value (MSE) terms")
    epochs: int = Field(30, ge=0, description="passes over the training images")
    batch_size: int = Field(64, ge=1, description="images per Adam step")
    lr: float = Field(1e-3, gt=0, description="Adam step size")
    support_views: Literal["regad", "none"] = Field(
        "regad", description="train on RegAD's 22 views of each support, or on the supports"
    )
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the gradient map, px")
    normalise_map: bool = Field(True, description="scale each map by its 99th percentile")
    opening: bool = Field(True, description="3x3 grey opening of the map")


class MKD(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="mkd", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = MKDParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        # the official MVTec schedule: 128 px, 601 epochs, batch 64, Adam 1e-3, lambda 0.5
        "paper": {"epochs": 601},
        "paper_plain": {"epochs": 601, "support_views": "none"},
        "plain": {"support_views": "none"},
        "r18": {"backbone": "resnet18"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 64,
        "width": 8,
        "epochs": 15,
        "support_views": "none",
        "lr": 3e-3,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._model: MKDModel | None = None

    def to(self, device: str | torch.device) -> MKD:
        self.device = torch.device(device)
        return self

    def preflight(self) -> None:
        check_backbone(self.params.backbone, self.params.weights, self.params.layers)

    def _extractor(self) -> tuple[FeatureExtractor, WeightsSource]:
        p = self.params
        return cached_feature_extractor(p.backbone, p.weights, p.layers, str(self.device))

    def fit(self, support: torch.Tensor) -> None:
        p = self.params
        extractor, _ = self._extractor()
        model = MKDModel(
            BackboneStages(extractor, trainable=False),
            strides=extractor.feature_strides,
            channels=extractor.feature_channels,
            input_size=p.input_size,
            width=p.width,
            output_relu=p.backbone in RELU_STAGES,
            lamda=p.lamda,
            schedule=Schedule(p.epochs, p.batch_size, p.lr),
            support_views=p.support_views,
            sigma=p.sigma,
            normalise_map=p.normalise_map,
            opening=p.opening,
        )
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        model.fit(support.to(self.device), episode_generator())
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("mkd: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores.cpu(), maps=maps.cpu())

    def provenance(self) -> dict[str, Any]:
        extractor, source = self._extractor()
        losses = self._model.losses if self._model else []
        return {
            "teacher": self.params.backbone,
            "teacher_init": "random" if source.kind == "random" else "pretrained",
            "weights": source.describe(),
            "layers": extractor.layers,
            "strides": extractor.feature_strides,
            "channels": extractor.feature_channels,
            "final_loss": round(losses[-1], 6) if losses else None,
        }
