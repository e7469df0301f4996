"""Adapter from the Meta-RIAD core to the fsad-bench Method contract.

meta_fit runs MAML over the other categories; fit runs the inner loop on the K support
images from the meta-learned initialisation (a fresh copy every time), re-estimates the
BatchNorm statistics on the support set and fixes the test masks; predict only reads.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar

import torch

from fsad_bench.method import (
    MetaTrainSet,
    MethodBase,
    MethodInfo,
    NotFittedError,
    episode_generator,
)
from fsad_bench.params import Field, Params, field_validator
from fsad_bench.records import Prediction
from fsad_methods.common.losses import ReconstructionLoss
from fsad_methods.common.reconstruction import resize, score_by_inpainting
from fsad_methods.common.unet import UNet
from fsad_methods.meta_riad.core import (
    MetaConfig,
    adapt_to_support,
    calibrate_batchnorm,
    load_parameters,
    meta_train,
    test_mask_sets,
)

PositiveInt = Annotated[int, Field(ge=1)]


class MetaRIADParams(Params):
    input_size: int = Field(64, ge=16, multiple_of=16, description="internal side, pixels")
    width: int = Field(8, ge=1, description="first U-Net block's channels")
    sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the map; 0: none")
    w_l2: float = Field(1.0, ge=0, description="loss weight")
    w_ssim: float = Field(1.0, ge=0, description="loss weight")
    w_gms: float = Field(1.0, ge=0, description="loss weight")
    density: tuple[float, float] = Field((0.2, 0.8), description="[low, high] masking density")
    meta_iterations: int = Field(200, ge=0, description="outer steps")
    meta_batch: int = Field(2, ge=1, description="tasks per outer step")
    meta_shots: int = Field(2, ge=1, description="support images per task")
    meta_queries: int = Field(2, ge=1, description="query images per task")
    inner_steps: int = Field(1, ge=0, description="inner SGD steps in meta-training")
    inner_lr: float = Field(0.05, gt=0, description="inner SGD step size")
    meta_lr: float = Field(3e-3, gt=0, description="outer Adam step size")
    first_order: bool = Field(False, description="first-order MAML")
    adapt_steps: int = Field(5, ge=0, description="inner SGD steps at fit")
    bn_passes: int = Field(4, ge=1, description="masked support passes for BatchNorm statistics")
    test_cells: tuple[PositiveInt, ...] = Field((1,), min_length=1, description="test cell sides")
    test_n_masks: int = Field(2, ge=1, description="disjoint test masks per cell size")
    test_repeats: int = Field(2, ge=1, description="test mask sets per cell size")

    @field_validator("density")
    @classmethod
    def _density_range(cls, density: tuple[float, float]) -> tuple[float, float]:
        low, high = density
        if not 0 < low <= high < 1:
            raise ValueError("must be [low, high] with 0 < low <= high < 1")
        return density


class MetaRIAD(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="meta_riad", version="1.1", produces_maps=True, needs_meta_train=True
    )
    params_type = MetaRIADParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Full-size network and budget in the spirit of the thesis (RIAD's 256 px, 64-wide
        # U-Net; Finn et al.'s 5 inner steps, meta-batch 4, Adam 1e-4 outer steps).
        "paper": {
            "input_size": 256,
            "width": 64,
            "meta_iterations": 10000,
            "meta_batch": 4,
            "meta_shots": 5,
            "meta_queries": 5,
            "inner_steps": 5,
            "inner_lr": 0.01,
            "meta_lr": 1e-4,
            "adapt_steps": 10,
            "test_repeats": 4,
        },
        "first_order": {"first_order": True},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "input_size": 32,
        "width": 4,
        "meta_iterations": 2,
        "meta_shots": 1,
        "meta_queries": 1,
        "adapt_steps": 2,
        "bn_passes": 2,
        "test_repeats": 1,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.device = torch.device("cpu")
        self._meta_net: UNet | None = None
        self._net: UNet | None = None
        self._mask_sets: list[torch.Tensor] = []

    def to(self, device: str | torch.device) -> MetaRIAD:
        self.device = torch.device(device)
        return self

    @property
    def _loss(self) -> ReconstructionLoss:
        return ReconstructionLoss(self.params.w_l2, self.params.w_ssim, self.params.w_gms)

    @property
    def _density(self) -> tuple[float, float]:
        return self.params.density

    def meta_config(self) -> MetaConfig:
        p = self.params
        return MetaConfig(
            iterations=p.meta_iterations,
            meta_batch=p.meta_batch,
            shots=p.meta_shots,
            queries=p.meta_queries,
            inner_steps=p.inner_steps,
            inner_lr=p.inner_lr,
            meta_lr=p.meta_lr,
            first_order=p.first_order,
            density=self._density,
        )

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        net = UNet(self.params.width).to(self.device)
        size = self.params.input_size
        categories = {
            name: resize(imgs.to(self.device), size) for name, imgs in tasks.images.items()
        }
        meta_train(net, self._loss, categories, self.meta_config(), episode_generator())
        self._meta_net, self._net = net, None

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        if self._meta_net is None:
            raise NotFittedError("meta_riad: call meta_fit before meta_state_dict")
        return {k: v.detach().clone() for k, v in self._meta_net.state_dict().items()}

    def load_meta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        net = UNet(self.params.width)
        net.load_state_dict(state)
        self._meta_net, self._net = net.to(self.device), None

    def fit(self, support: torch.Tensor) -> None:
        if self._meta_net is None:
            raise NotFittedError("meta_riad: call meta_fit or load_meta_state_dict before fit")
        p, generator = self.params, episode_generator()
        support = resize(support.to(self.device), p.input_size)
        net = copy.deepcopy(self._meta_net)  # fit(A) then fit(B) equals fit(B)
        adapted = adapt_to_support(
            net, self._loss, support, p.adapt_steps, p.inner_lr, self._density, generator
        )
        load_parameters(net, adapted)
        calibrate_batchnorm(net, support, p.bn_passes, self._density, generator)
        self._mask_sets = test_mask_sets(
            p.input_size, p.test_cells, p.test_n_masks, p.test_repeats, generator
        )
        self._net = net

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._net is None:
            raise NotFittedError("meta_riad: call fit(support) before predict")
        scores, maps = score_by_inpainting(
            self._net,
            images.to(self.device),
            self._mask_sets,
            self.params.input_size,
            sigma=self.params.sigma,
        )
        return Prediction(scores=scores, maps=maps)
