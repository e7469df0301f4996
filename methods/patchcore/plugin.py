"""Adapter from the PatchCore core to the fsad-bench Method contract."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from fsad_bench.backbones import cached_feature_extractor
from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.records import Prediction
from fsad_methods.patchcore.core import PatchCoreModel


class PatchCore(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="patchcore", version="1.1", produces_maps=True, needs_meta_train=False
    )
    defaults: ClassVar[dict[str, Any]] = {
        "backbone": "efficientnet_lite0",
        "weights": "pretrained",
        "layers": None,
        "coreset_ratio": 0.1,
        "projection_dim": 128,
        "num_neighbours": 1,
        "sigma": 4.0,
        "embed_dim": None,
        "count_padding": True,
    }
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "lite0": {"backbone": "efficientnet_lite0"},
        "r18": {"backbone": "resnet18"},
        "wrn50": {"backbone": "wide_resnet50_2", "embed_dim": 1024},
        "full_bank": {"coreset_ratio": 1.0},
        "ignore_padding": {"count_padding": False},
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._model: PatchCoreModel | None = None

    def to(self, device: str | torch.device) -> PatchCore:
        self.device = torch.device(device)
        return self

    def _extractor(self) -> tuple[torch.nn.Module, Any]:
        layers = self.params["layers"]
        return cached_feature_extractor(
            self.params["backbone"],
            self.params["weights"],
            tuple(layers) if layers is not None else None,
            str(self.device),
        )

    def fit(self, support: torch.Tensor) -> None:
        extractor, _ = self._extractor()
        model = PatchCoreModel(
            extractor,
            coreset_ratio=self.params["coreset_ratio"],
            projection_dim=self.params["projection_dim"],
            num_neighbours=self.params["num_neighbours"],
            sigma=self.params["sigma"],
            embed_dim=self.params["embed_dim"],
            count_padding=self.params["count_padding"],
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
        _, source = self._extractor()
        bank = self._model.bank_size if self._model else None
        return {
            "backbone": self.params["backbone"],
            "backbone_init": "random" if source.kind == "random" else "pretrained",
            "weights": source.describe(),
            "bank": bank,
        }
