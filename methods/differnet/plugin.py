"""Adapter from the DifferNet core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import StrictInt, model_validator

from fsad_bench.features.backbones import (
    BackboneMethod,
    BackboneParams,
)
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.params import Field
from fsad_bench.records import Prediction
from fsad_methods.common.augment import ColorJitter, RandomRotation
from fsad_methods.differnet.core import DifferNetModel, FlowSpec, Schedule, Transforms

DEFAULT_LAYER = 4  # the last stage (stride 32), as DifferNet pools AlexNet's last conv block
MIN_SIDE = 8  # px of the smallest image scale
SupportViews = Literal["regad", "none"]

# DifferNet's published schedule (official config: 24 meta-epochs x 8 sub-epochs, Adam 2e-4,
# batches of 24 images x 4 transforms, 8 blocks of 2048-wide subnets, 448 px, 64 test copies)
PAPER = {
    "input_size": 448,
    "hidden": 2048,
    "epochs": 192,
    "feature_pool": None,
    "test_copies": 64,
}


class DifferNetParams(BackboneParams):
    # strict: a stage index, never a bool or a float
    layer: StrictInt | None = Field(None, ge=0, description="one stage index; null: the last")
    input_size: int = Field(256, ge=MIN_SIDE, description="square side, pixels")
    scales: int = Field(3, ge=1, description="image scales: input_size, /2, /4, ...")
    blocks: int = Field(8, ge=1, description="coupling blocks")
    hidden: int = Field(512, ge=1, description="width of the subnetworks' hidden layers")
    clamp: float = Field(3.0, gt=0, description="soft clamp alpha")
    epochs: int = Field(24, ge=1, description="training epochs")
    n_transforms: int = Field(4, ge=1, description="transformed copies per image and epoch")
    batch_size: int = Field(24, ge=1, description="images per step")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate")
    feature_pool: int | None = Field(
        2, ge=1, description="copies per image whose features are cached; null: fresh each epoch"
    )
    rotation: float = Field(180.0, ge=0, le=180, description="training rotations, degrees")
    brightness: float = Field(0.0, ge=0, description="ColorJitter strength; 0: off")
    contrast: float = Field(0.0, ge=0, description="ColorJitter strength; 0: off")
    saturation: float = Field(0.0, ge=0, description="ColorJitter strength; 0: off")
    support_views: SupportViews = Field(
        "regad", description="regad: RegAD's 22 views of each support; none: the supports"
    )
    test_copies: int = Field(8, ge=1, description="rotated copies scored per test image")
    grad_sigma: float = Field(3.0, ge=0, description="Gaussian blur of the gradient; 0: none")

    @model_validator(mode="after")
    def _smallest_scale(self) -> DifferNetParams:
        if self.input_size >> (self.scales - 1) < MIN_SIDE:
            raise ValueError(
                f"input_size={self.input_size} is too small for {self.scales} scales (the "
                f"smallest must be >= {MIN_SIDE} px): raise input_size or lower scales"
            )
        return self


class DifferNet(BackboneMethod, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="differnet", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = DifferNetParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18"},
        "paper": dict(PAPER),
        "plain": {"support_views": "none"},
        "paper_plain": {**PAPER, "support_views": "none"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 64,
        "scales": 2,
        "blocks": 2,
        "hidden": 64,
        "epochs": 4,
        "feature_pool": 2,
        "support_views": "none",
        "test_copies": 2,
        "lr": 1e-3,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: DifferNetModel | None = None

    def _build_parts(self) -> tuple[FlowSpec, Schedule, Transforms]:
        p = self.params
        flow = FlowSpec(blocks=p.blocks, hidden=p.hidden, clamp=p.clamp)
        schedule = Schedule(
            epochs=p.epochs,
            n_transforms=p.n_transforms,
            batch_size=p.batch_size,
            lr=p.lr,
            feature_pool=p.feature_pool,
        )
        transforms = Transforms(
            rotation=RandomRotation(p.rotation),
            jitter=ColorJitter(p.brightness, p.contrast, p.saturation),
            support_views=p.support_views == "regad",
            test_copies=p.test_copies,
        )
        return flow, schedule, transforms

    @property
    def _layers(self) -> tuple[int]:
        return (DEFAULT_LAYER if self.params.layer is None else self.params.layer,)

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        flow, schedule, transforms = self._build_parts()
        model = DifferNetModel(
            extractor,
            input_size=self.params.input_size,
            scales=self.params.scales,
            flow=flow,
            schedule=schedule,
            transforms=transforms,
            grad_sigma=self.params.grad_sigma,
        )
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        model.fit(support.to(self.device), episode_generator())
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("differnet: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        extractor, _ = self._extractor()
        return {
            **self._backbone_provenance(),
            "layer": extractor.layers,
            "feature_dim": self.params.scales * extractor.feature_channels[-1],
        }
