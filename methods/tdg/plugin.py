"""Adapter from the TDG core to the fsad-bench Method contract.

fit trains the whole pyramid of patch-GANs on the K support images from scratch (no
meta-training); predict uses the discriminators only. Maps are the per-patch votes against
the correct transformation, mapped back and averaged over transformations and scales.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import model_validator

from fsad_bench.method import MethodBase, MethodInfo, NotFittedError, episode_generator
from fsad_bench.params import Field, Params
from fsad_bench.records import Prediction
from fsad_methods.common.gan import receptive_field
from fsad_methods.tdg.core import KERNEL, TDGConfig
from fsad_methods.tdg.core import TDG as TDGModel

TransformSet = Literal["rotations", "rgb54"]  # fsad_methods.tdg.transforms.TRANSFORM_SETS
SupportViews = Literal["none", "regad"]  # fsad_methods.tdg.core.SUPPORT_VIEWS

# The official code's schedule (config_few_shot.py, main_train.py, MVTec loader): 54
# transformations, finest scale 64 px, coarsest 25 px, ratio 0.75 (5 scales), 32 channels,
# 5 layers, 5000 iterations per scale of 3 D and 3 G steps on all K x 54 pairs, Adam 5e-4
# (beta1 0.5) decayed 10x after 500 (D) and 1000 (G) iterations, reconstruction weight 100,
# noise amplitude 0.1, votes from the lowest 10 % of patches.
OFFICIAL: dict[str, Any] = {
    "transforms": "rgb54",
    "image_size": 64,
    "min_size": 25,
    "width": 32,
    "iterations": 5000,
    "d_steps": 3,
    "g_steps": 3,
    "pairs_per_step": 0,
}
# "TDG+": RegAD's 22 augmented views per support. All K x 22 x 54 pairs cannot share one
# batch (the authors needed two GPUs for 10 x 54 at once), so each step draws as many pairs
# as their largest batch, 540.
REGAD_VIEWS: dict[str, Any] = {"support_views": "regad"}
PAPER_PAIRS = 540


class TDGParams(Params):
    """The defaults are a CPU schedule: 3 scales (20, 25, 32 px), 16 channels, 4 rotations,
    200 iterations per scale of one D and one G step on 16 random (image, rotation) pairs."""

    transforms: TransformSet = Field("rotations", description="the transformation set")
    image_size: int = Field(32, ge=1, description="side of the finest scale, pixels")
    min_size: int = Field(20, ge=1, description="side of the coarsest scale, pixels")
    scale_factor: float = Field(0.75, gt=0, lt=1, description="largest ratio between scales")
    width: int = Field(16, ge=1, description="conv channels at scales 0-3")
    num_layers: int = Field(5, ge=1, description="convolutions per network")
    iterations: int = Field(200, ge=1, description="iterations per scale")
    d_steps: int = Field(1, ge=0, description="discriminator updates per iteration")
    g_steps: int = Field(1, ge=0, description="generator updates per iteration")
    lr_d: float = Field(5e-4, gt=0, description="discriminator Adam learning rate")
    lr_g: float = Field(5e-4, gt=0, description="generator Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    lr_gamma: float = Field(0.1, gt=0, description="learning-rate factor at the decay")
    d_decay_at: float = Field(0.1, ge=0, description="share of iterations before D's decay")
    g_decay_at: float = Field(0.2, ge=0, description="share of iterations before G's decay")
    alpha: float = Field(100.0, ge=0, description="reconstruction weight")
    noise_amp: float = Field(0.1, ge=0, description="noise relative to the coarser error")
    pairs_per_step: int = Field(16, ge=0, description="pairs per step; 0: all K x T")
    fraction: float = Field(0.1, gt=0, le=1, description="share of lowest patches per vote")
    support_views: SupportViews = Field("none", description="regad: RegAD's 22 views (TDG+)")

    @model_validator(mode="after")
    def _pyramid_fits(self) -> TDGParams:
        patch = receptive_field(self.num_layers, KERNEL)
        if self.min_size < patch:
            raise ValueError(
                f"min_size={self.min_size} is smaller than the discriminator's {patch}-pixel "
                f"patch; use min_size >= {patch} or fewer num_layers"
            )
        if self.min_size > self.image_size:
            raise ValueError(
                f"min_size={self.min_size} exceeds image_size={self.image_size}; "
                "the coarsest scale must not be larger than the finest"
            )
        return self


class TDG(MethodBase):
    info: ClassVar[MethodInfo] = MethodInfo(
        name="tdg", version="1.0", produces_maps=True, needs_meta_train=False
    )
    params_type = TDGParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {},
        # TDG+ as RegAD ran it: the configuration its published MVTec figures pair with
        "paper": {**OFFICIAL, **REGAD_VIEWS, "pairs_per_step": PAPER_PAIRS},
        "paper_plain": dict(OFFICIAL),  # the ICCV paper's own setting
        "plus": dict(REGAD_VIEWS),
        "rgb54": {"transforms": "rgb54", "pairs_per_step": 32},
    }
    conformance_params: ClassVar[dict[str, Any]] = {
        "image_size": 24,
        "min_size": 16,
        "width": 8,
        "num_layers": 4,
        "iterations": 30,
        "pairs_per_step": 8,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.config = TDGConfig(**self.params.model_dump())
        self.device = torch.device("cpu")
        self._model: TDGModel | None = None

    def to(self, device: str | torch.device) -> TDG:
        self.device = torch.device(device)
        return self

    def fit(self, support: torch.Tensor) -> None:
        # the runner seeds torch per episode; drawing from it makes that seed apply here
        generator = episode_generator()
        self._model = TDGModel(self.config, self.device).fit(support, generator)

    def predict(self, images: torch.Tensor) -> Prediction:
        if self._model is None:
            raise NotFittedError("tdg: call fit(support) before predict")
        scores, maps = self._model.score(images)
        return Prediction(scores=scores.cpu(), maps=maps.cpu())

    def provenance(self) -> dict[str, Any]:
        sizes = self.config.sizes
        return {"scales": sizes, "transforms": self.config.transforms}
