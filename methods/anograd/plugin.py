"""Adapter from the AnoGrad (GradCon) core to the fsad-bench Method contract.

meta_fit pretrains the autoencoder and its reference gradient on the other categories;
fit restores that state and fine-tunes on the K support images. Image scores only: the
gradient score has no spatial layout, so produces_maps is False.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    PretrainedState,
    episode_generator,
)
from fsad_bench.params import Field, Params
from fsad_bench.records import Prediction
from fsad_methods.anograd.core import (
    ConvAutoencoder,
    ReferenceGradient,
    gradcon_scores,
    train_gradcon,
)
from fsad_methods.common.reconstruction import resize


class AnoGradParams(Params):
    input_size: int = Field(64, ge=16, multiple_of=16, description="internal side, pixels")
    width: int = Field(32, ge=1, description="w, the autoencoder's base channels")
    alpha: float = Field(0.03, ge=0, description="weight of the gradient loss in training")
    # None: 4 * alpha, GradCon's ratio (0.12 for alpha 0.03)
    beta: float | None = Field(None, ge=0, description="weight of it in the score; null: 4 alpha")
    batch_size: int = Field(16, ge=1, description="training batch")
    pretrain_steps: int = Field(500, ge=0, description="meta_fit Adam steps")
    pretrain_lr: float = Field(1e-3, gt=0, description="meta_fit Adam step size")
    fit_steps: int = Field(50, ge=0, description="fit Adam steps on the support images")
    fit_lr: float = Field(1e-4, gt=0, description="fit Adam step size")
    fit_reference: Literal["reset", "continue"] = Field(
        "reset", description="restart the reference gradient at fit, or keep averaging into it"
    )


class AnoGrad(PretrainedState, MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="anograd", version="1.1", produces_maps=False, needs_meta_train=True
    )
    params_type = AnoGradParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Kwon et al.: Adam at 1e-3, batch 64, alpha 0.03, beta 0.12, w=32 (28/32 px inputs)
        "paper": {"input_size": 128, "batch_size": 64, "pretrain_steps": 20000, "fit_steps": 200},
        "continue_reference": {"fit_reference": "continue"},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 32,
        "width": 8,
        "pretrain_steps": 20,
        "fit_steps": 20,
        "fit_lr": 1e-3,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._pretrained: dict[str, torch.Tensor] | None = None
        self._model: ConvAutoencoder | None = None
        self._reference: ReferenceGradient | None = None

    @property
    def beta(self) -> float:
        beta = self.params.beta
        return 4 * self.params.alpha if beta is None else beta

    def to(self, device: str | torch.device) -> AnoGrad:
        self.device = torch.device(device)
        return self

    def _train(
        self,
        model: ConvAutoencoder,
        images: torch.Tensor,
        reference: ReferenceGradient,
        steps: int,
        lr: float,
    ) -> None:
        images = resize(images.to(self.device), self.params.input_size)
        train_gradcon(
            model,
            images,
            reference,
            steps=steps,
            lr=lr,
            batch_size=self.params.batch_size,
            alpha=self.params.alpha,
            generator=episode_generator(),
        )

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        model, reference = ConvAutoencoder(self.params.width).to(self.device), ReferenceGradient()
        images = torch.cat([imgs for _, imgs in sorted(tasks.images.items())])
        self._train(model, images, reference, self.params.pretrain_steps, self.params.pretrain_lr)
        state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
        self._pretrained = state | {f"ref.{k}": v for k, v in reference.state_dict().items()}
        self._model = None

    def _restore(self) -> tuple[ConvAutoencoder, ReferenceGradient]:
        """A fresh copy of the pretrained state, so fit(A) then fit(B) equals fit(B)."""
        assert self._pretrained is not None
        parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ref": {}}
        for key, value in self._pretrained.items():
            part, _, name = key.partition(".")
            parts[part][name] = value.clone()
        model = ConvAutoencoder(self.params.width)
        model.load_state_dict(parts["model"])
        return model.to(self.device), ReferenceGradient.from_state_dict(parts["ref"])

    def fit(self, support: torch.Tensor) -> None:
        if self._pretrained is None:
            raise NotFittedError("anograd: call meta_fit or load_meta_state_dict before fit")
        model, reference = self._restore()
        if self.params.fit_reference == "reset":
            reference = ReferenceGradient()  # the reference then describes this category only
        self._train(model, support, reference, self.params.fit_steps, self.params.fit_lr)
        if not reference.count:  # fit_steps = 0: fall back on the pretraining reference
            reference = self._restore()[1]
        self._model, self._reference = model, reference

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None or self._reference is None:
            raise NotFittedError("anograd: call fit(support) before predict")
        small = resize(images.to(self.device), self.params.input_size)
        return Prediction(scores=gradcon_scores(self._model, small, self._reference, self.beta))
