"""The table of bridged anomalib models: plain data, importable without torch or anomalib.

One row per preset (``anomalib.<name>``). Backbone families say which backbones a model can
take: ``timm`` models build their features with anomalib's ``TimmFeatureExtractor`` (or timm
directly) and accept any timm CNN, so they default to EfficientNet-Lite0, whose ImageNet
weights install with pip; ``resnet`` models have heads built for ResNet channel counts
(Reverse Distillation's decoder, CFA's descriptor) and need a ResNet; ``dinov2`` models need
DINOv2 weights; ``none`` models train from scratch.

Layers are backbone stage indices (stride 2**(i+1)): anomalib's ``layerN`` of a ResNet is
stage N, which the bridge hands to every backbone the same way.

Schedules: ``cpu_epochs`` is the default budget, sized so that one synthetic episode costs
tens of seconds on one CPU thread (measured in README.md). ``paper_*`` is the published
schedule in anomalib's own configs or the model's README/paper (``schedule_source``). With
K support images an epoch is ceil(K / batch_size) optimiser steps, so a published epoch
count trains far fewer steps here than on a full training set; that is the K-shot setting.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("timm", "resnet", "dinov2", "none")


@dataclass(frozen=True)
class BridgedModel:
    name: str  # preset name, explicit (never derived from the class name)
    cls: str  # class in anomalib.models
    family: str  # which backbones the model accepts, one of FAMILIES
    default_backbone: str | None  # the bridge's default; None for family "none"
    paper_backbone: str | None  # the model's published backbone (informative)
    layers: tuple[int, ...] | None  # anomalib's default layers as stage indices
    layer_arg: str | None  # the constructor argument taking them ("layers" or "layer")
    produces_maps: bool
    trains: bool  # False: features are collected, then fitted at the end of the epoch
    cpu_epochs: int
    paper_epochs: int | None
    paper_max_steps: int | None
    paper_batch_size: int
    schedule_source: str
    textures: bool = False  # needs an anomaly-source texture folder (DRAEM)
    patch: int = 1  # input side must be a multiple of this (ViT patch size)
    min_k: int = 1  # fewest support images anomalib's fit is defined for
    per_image: bool = False  # its maps use statistics of the whole test batch: score alone


_FIT = "one pass over the training images (memory bank / density fit, no optimiser)"
_A1 = "anomalib 1.x configs/model/{}.yaml (trainer.max_epochs)"

BRIDGED: dict[str, BridgedModel] = {
    m.name: m
    for m in (
        BridgedModel("patchcore", "Patchcore", "timm", "efficientnet_lite0", "wide_resnet50_2",
                     (2, 3), "layers", True, False, 1, 1, None, 32, _FIT),
        BridgedModel("padim", "Padim", "timm", "efficientnet_lite0", "resnet18",
                     (1, 2, 3), "layers", True, False, 1, 1, None, 32, _FIT, min_k=2),
        BridgedModel("dfm", "Dfm", "timm", "efficientnet_lite0", "resnet50",
                     (3,), "layer", True, False, 1, 1, None, 32, _FIT, min_k=2),
        BridgedModel("dfkde", "Dfkde", "timm", "efficientnet_lite0", "resnet18",
                     (4,), "layers", False, False, 1, 1, None, 32, _FIT, min_k=2),
        BridgedModel("stfpm", "Stfpm", "timm", "efficientnet_lite0", "resnet18",
                     (1, 2, 3), "layers", True, True, 30, 100, None, 32,
                     "anomalib examples/configs/model/stfpm.yaml (max_epochs 100); "
                     "STFPM paper: 100 epochs"),
        BridgedModel("fastflow", "Fastflow", "timm", "efficientnet_lite0", "resnet18",
                     (1, 2, 3), None, True, True, 50, 500, None, 32, _A1.format("fastflow")),
        BridgedModel("cflow", "Cflow", "timm", "efficientnet_lite0", "wide_resnet50_2",
                     (2, 3, 4), "layers", True, True, 10, 50, None, 16, _A1.format("cflow"),
                     per_image=True),
        BridgedModel("reverse_distillation", "ReverseDistillation", "resnet", "wide_resnet50_2",
                     "wide_resnet50_2", (1, 2, 3), "layers", True, True, 5, 200, None, 16,
                     "anomalib examples/configs/model/reverse_distillation.yaml (max_epochs "
                     "200); RD paper: 200 epochs, batch 16"),
        BridgedModel("supersimplenet", "Supersimplenet", "timm", "efficientnet_lite0",
                     "wide_resnet50_2", (2, 3), "layers", True, True, 20, 300, None, 32,
                     "anomalib 2.7.0 models/image/supersimplenet/README.md (300 epochs, "
                     "batch 32)"),
        BridgedModel("draem", "Draem", "none", None, None, None, None, True, True, 2, 700,
                     None, 8, "DRAEM paper: 700 epochs, batch 8 (anomalib's MultiStepLR "
                     "milestones 400/600 assume it)", textures=True),
        BridgedModel("ganomaly", "Ganomaly", "none", None, None, None, None, False, True, 5,
                     100, None, 32, "anomalib examples/configs/model/ganomaly.yaml "
                     "(max_epochs 100)"),
        BridgedModel("cfa", "Cfa", "resnet", "wide_resnet50_2", "wide_resnet50_2",
                     (1, 2, 3), None, True, True, 5, 30, None, 32, _A1.format("cfa")),
        BridgedModel("fre", "Fre", "timm", "efficientnet_lite0", "resnet50",
                     (3,), "layer", True, True, 50, 6, None, 32, _A1.format("fre")),
        BridgedModel("anomaly_dino", "AnomalyDINO", "dinov2", "vit_small_patch14_dinov2",
                     "vit_small_patch14_dinov2", None, None, True, False, 1, 1, None, 32, _FIT,
                     patch=14),
        BridgedModel("dinomaly", "Dinomaly", "dinov2", "vit_base_patch14_reg4_dinov2",
                     "vit_base_patch14_reg4_dinov2", None, None, True, True, 20, None, 5000, 16,
                     "anomalib 2.7.0 models/image/dinomaly/README.md (max_steps 5000, "
                     "batch 16)", patch=14),
    )
}  # fmt: skip


def get_model(name: str) -> BridgedModel | None:
    """The table row of a bridged model, or None for another anomalib model."""
    return BRIDGED.get(name)
