"""Adapter from the CutPaste core to the fsad-bench Method contract.

fit fine-tunes fresh copies of the pretrained backbone on the CutPaste proxy task built
from the K support images (an image-level model for the image score, a patch-level model
for the maps) and fits the Gaussian densities; predict scores by Mahalanobis distance.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator

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
from fsad_methods.cutpaste.augment import REFERENCE_SIDE, CutPasteAugment, Jitter
from fsad_methods.cutpaste.core import (
    CutPasteModel,
    Density,
    PatchGrid,
    ProxyTask,
    Schedule,
)

PAPER_HEAD = (512,) * 8 + (128,)  # the official head_dims: eight 512-wide layers, then 128


class CutPasteParams(BackboneParams):
    layer: int = Field(4, ge=1, le=4, description="stage pooled into the representation")
    variant: Literal["3way", "binary", "scar"] = Field(
        "3way", description="proxy classes: CutPaste and Scar (3way), CutPaste, or Scar"
    )
    detection: Literal["image", "patch"] = Field(
        "image", description="image score from the image-level model, or the top patch score"
    )
    input_size: int = Field(128, ge=32, description="side the images are resized to, px")
    patch_size: int = Field(32, ge=8, description="side of the patch-level model's patches, px")
    patch_stride: int = Field(8, ge=1, description="stride of the dense patch scores, px")
    head: tuple[int, ...] = Field(PAPER_HEAD, description="widths of the MLP projection head")
    steps: int = Field(60, ge=0, description="SGD updates of the image-level model")
    batch_size: int = Field(8, ge=1, description="images per update (each in every class)")
    patch_steps: int = Field(60, ge=0, description="SGD updates of the patch-level model")
    patch_batch_size: int = Field(16, ge=1, description="patches per update (each in every class)")
    lr: float = Field(0.03, gt=0, description="SGD learning rate, cosine-decayed to 0")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(3e-5, ge=0, description="SGD weight decay")
    area_ratio: tuple[float, float] = Field(
        (0.02, 0.15), description="CutPaste patch area as a share of the image, min and max"
    )
    aspect_ratio: float = Field(0.3, gt=0, lt=1, description="patch aspect in (r,1) or (1,1/r)")
    scar_width: tuple[int, int] = Field((2, 16), description="scar width range, px at 256 px")
    scar_length: tuple[int, int] = Field((10, 25), description="scar length range, px at 256 px")
    scar_rotation: float = Field(45.0, ge=0, le=180, description="scar rotation range, degrees")
    patch_jitter: float = Field(0.1, ge=0, le=0.5, description="colour jitter of the pasted patch")
    translate: float = Field(0.1, ge=0, lt=1, description="random shift of every sample, share")
    jitter: float = Field(0.1, ge=0, le=0.5, description="colour jitter of every sample")
    normalise: bool = Field(True, description="L2-normalise representations before the GDE")
    gde_eps: float = Field(1e-3, gt=0, description="ridge added to the GDE covariance")
    density_views: int = Field(0, ge=0, description="augmented copies per support in the GDE")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map, px; 0: none")

    @model_validator(mode="after")
    def _consistent(self) -> CutPasteParams:
        if self.patch_size > self.input_size or (self.input_size - self.patch_size) % (
            self.patch_stride
        ):
            raise ValueError(
                f"patch_size={self.patch_size} and patch_stride={self.patch_stride} must tile "
                f"input_size={self.input_size}: (input_size - patch_size) must be a multiple "
                "of patch_stride"
            )
        for name in ("area_ratio", "scar_width", "scar_length"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name}={[low, high]} must be an increasing pair above 0")
        if any(width < 1 for width in self.head):
            raise ValueError(f"head={list(self.head)} must list positive layer widths")
        if self.area_ratio[1] >= 1:
            raise ValueError(f"area_ratio={list(self.area_ratio)} must stay below 1")
        return self


class CutPaste(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="cutpaste", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = CutPasteParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        # ResNet-18, 256 px, 64 px patches every 4 px, batch 32 images (96 inputs for 3-way),
        # SGD 0.03 / momentum 0.9 / weight decay 3e-5, cosine decay, 256 epochs of 256 updates
        "paper": {
            "backbone": "resnet18",
            "input_size": 256,
            "patch_size": 64,
            "patch_stride": 4,
            "steps": 256 * 256,
            "batch_size": 32,
            "patch_steps": 256 * 256,
            "patch_batch_size": 32,
        },
        "binary": {"variant": "binary"},
        "scar": {"variant": "scar"},
        "patch_detection": {"detection": "patch"},
        "r18": {"backbone": "resnet18"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 64,
        "patch_size": 32,
        "patch_stride": 16,
        "head": [32],
        "steps": 3,
        "batch_size": 2,
        "patch_steps": 3,
        "patch_batch_size": 4,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._model: CutPasteModel | None = None

    def to(self, device: str | torch.device) -> CutPaste:
        self.device = torch.device(device)
        return self

    def preflight(self) -> None:
        check_backbone(self.params.backbone, self.params.weights, (self.params.layer,))

    def _extractor(self) -> tuple[FeatureExtractor, WeightsSource]:
        p = self.params
        return cached_feature_extractor(p.backbone, p.weights, (p.layer,), str(self.device))

    def _build(self) -> CutPasteModel:
        p = self.params
        extractor, _ = self._extractor()
        task = ProxyTask(
            variant=p.variant,
            cutpaste=CutPasteAugment(
                area_ratio=p.area_ratio,
                aspect_ratio=p.aspect_ratio,
                scar_width=p.scar_width,
                scar_length=p.scar_length,
                scar_rotation=p.scar_rotation,
                jitter=Jitter(p.patch_jitter),
                scale=p.input_size / REFERENCE_SIDE,
            ),
            translate=p.translate,
            jitter=p.jitter,
        )
        sgd = {"lr": p.lr, "momentum": p.momentum, "weight_decay": p.weight_decay}
        return CutPasteModel(
            BackboneStages(extractor, trainable=True),
            feature_dim=extractor.feature_channels[-1],
            input_size=p.input_size,
            patches=PatchGrid(p.input_size, p.patch_size, p.patch_stride),
            task=task,
            head=p.head,
            image_schedule=Schedule(p.steps, p.batch_size, **sgd),
            patch_schedule=Schedule(p.patch_steps, p.patch_batch_size, **sgd),
            density=Density(p.normalise, p.gde_eps),
            density_views=p.density_views,
            sigma=p.sigma,
            detection=p.detection,
        )

    def fit(self, support: torch.Tensor) -> None:
        model = self._build()
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        model.fit(support.to(self.device), episode_generator())
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("cutpaste: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores.cpu(), maps=maps.cpu())

    def provenance(self) -> dict[str, Any]:
        extractor, source = self._extractor()
        losses = self._model.losses if self._model else {}
        return {
            "backbone": self.params.backbone,
            "backbone_init": "random" if source.kind == "random" else "pretrained",
            "weights": source.describe(),
            "representation_dim": extractor.feature_channels[-1],
            "final_loss": {k: round(v[-1], 6) for k, v in losses.items() if v},
        }
