"""Adapter from the PatchCore core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fsad_bench.features.backbones import BackboneMethod, BackboneParams
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.params import Field
from fsad_bench.records import Prediction
from fsad_methods.patchcore.core import (
    FaissNearestNeighbours,
    GreedyCoresetSampler,
    PatchCoreModel,
)


class PatchCoreParams(BackboneParams):
    layers: tuple[int, ...] | None = Field(None, description="stage indices; null: strides 8+16")
    coreset_ratio: float = Field(0.1, gt=0, le=1, description="fraction of patches kept")
    projection_dim: int | None = Field(128, ge=1, description="random projection for the coreset")
    num_neighbours: int = Field(1, ge=1, description="k of the k-NN patch distance")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")
    embed_dim: int | None = Field(None, ge=1, description="channel pooling per layer")
    count_padding: bool = Field(True, description="3x3 average counts the zero padding")


class PatchCore(BackboneMethod, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="patchcore", version="1.1", produces_maps=True, needs_meta_train=False
    )
    params_type = PatchCoreParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18"},
        "wrn50": {"backbone": "wide_resnet50_2", "embed_dim": 1024},
        "full_bank": {"coreset_ratio": 1.0},
        "ignore_padding": {"count_padding": False},
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._model: PatchCoreModel | None = None

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        p = self.params
        model = PatchCoreModel(
            extractor,
            sampler=GreedyCoresetSampler(p.coreset_ratio, p.projection_dim),
            search=FaissNearestNeighbours(),
            num_neighbours=p.num_neighbours,
            sigma=p.sigma,
            embed_dim=p.embed_dim,
            count_padding=p.count_padding,
        )
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        generator = episode_generator()
        model.fit(support.to(self.device), generator)
        self._model = model

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("patchcore: call fit(support) before predict")
        scores, maps = self._model.score(images.to(self.device))
        return Prediction(scores=scores, maps=maps)

    def provenance(self) -> dict[str, Any]:
        return {
            **self._backbone_provenance(),
            "bank": self._model.bank_size if self._model else None,
        }
