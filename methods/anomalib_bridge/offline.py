"""Building an anomalib model with no network: its weight requests are answered from disk.

anomalib asks ``timm.create_model(name, pretrained=True)`` (TimmFeatureExtractor, FastFlow)
or torchvision (CFA) for ImageNet weights, which would download them. Inside
``offline_build`` those calls are served with the bridge's resolved weights: timm gets them
through its own ``pretrained_cfg_overlay={"state_dict": ...}`` path (its loader filters and
adapts them as for a hub checkpoint) and every tensor of the built model is then checked to
be the file's. A request for any other pretrained model, anomalib's own downloader and torch
hub downloads (torchvision weights some other models ask for; a file already in the torch hub
cache still loads) fail with one line instead of reaching for the network. Random-init
requests (``pretrained=False``, e.g. STFPM's student) pass through and draw from the global
RNG that the runner seeded. The patches are undone on exit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from fsad_bench.errors import WeightsError
from fsad_bench.features.backbones import RANDOM_INIT_SEED, read_state_dict
from fsad_methods.anomalib_bridge.backbone import Backbone, timm_state_dict


def _base(name: str) -> str:
    return name.split(".", 1)[0]


def check_loaded(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Every tensor of ``model`` must be present in ``state`` and equal to it."""
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in state:
            raise WeightsError(f"{what}: the weights file has no tensor {key}")
        if value.shape == state[key].shape and not torch.equal(value, state[key].to(value)):
            raise WeightsError(f"{what}: tensor {key} differs from the weights file after loading")


@contextmanager
def _patched(owner: Any, attr: str, value: Any) -> Iterator[None]:
    original = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def _timm_factory(
    original: Any, backbone: Backbone | None, aliases: Mapping[str, str], random_any: bool
) -> Any:
    def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        name = aliases.get(model_name, model_name)
        if not pretrained:
            return original(name, pretrained=False, **kwargs)
        if random_any and backbone is None:  # weights=random for a model's own backbone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                return original(name, pretrained=False, **kwargs)
        if backbone is None or _base(name) != _base(backbone.timm_name):
            served = backbone.timm_name if backbone else "none"
            raise WeightsError(
                f"anomalib asked timm for pretrained {model_name!r}, which the bridge does not "
                f"serve offline (it serves the configured backbone: {served}); set "
                "--param anomalib.backbone=NAME or pass the model's backbone in model_args"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # what a random backbone is, run to run
            if not backbone.pretrained:
                return original(backbone.timm_name, pretrained=False, **kwargs)
            state = timm_state_dict(backbone)
            kwargs["pretrained_cfg_overlay"] = {"state_dict": state}
            # a feature-only model has no head: timm logs the head's tensors as unexpected
            builder_log = logging.getLogger("timm.models._builder")
            level = builder_log.level
            builder_log.setLevel(logging.ERROR)
            try:
                model = original(backbone.timm_name, pretrained=True, **kwargs)
            finally:
                builder_log.setLevel(level)
        check_loaded(model, state, f"timm {backbone.timm_name}")  # what was not loaded fails
        return model

    return create_model


def _torchvision_factory(backbone: Backbone | None) -> Any:
    """CFA's ``get_feature_extractor(name, return_nodes)`` without torchvision's download."""

    def get_feature_extractor(name: str, return_nodes: list[str]) -> nn.Module:
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        if backbone is None or name != backbone.name:
            raise WeightsError(f"CFA asked torchvision for {name!r}; set anomalib.backbone={name}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = getattr(torchvision.models, name)(weights=None)
        if backbone.pretrained:
            state = read_state_dict(backbone.source, model.state_dict())
            model.load_state_dict(state, strict=True)
            check_loaded(model, state, f"torchvision {name}")
        extractor = create_feature_extractor(model=model, return_nodes=return_nodes)
        return extractor.eval()

    return get_feature_extractor


def _refuse_hub_download(url: str, *args: Any, **kwargs: Any) -> None:
    target = f"{torch.hub.get_dir()}/checkpoints/{url.rsplit('/', 1)[-1]}"
    raise WeightsError(
        f"anomalib asked torch hub to download {url}; the bridge runs offline: place that file "
        f"at {target} (torch hub then reads it from there), or use weights=random"
    )


def _refuse_download(*args: Any, **kwargs: Any) -> None:
    what = next((getattr(a, "name", None) for a in args if hasattr(a, "name")), "a file")
    raise WeightsError(
        f"anomalib tried to download {what}; the bridge runs offline: pass the local copy "
        "through anomalib.model_args (e.g. a dataset or weights path argument of the model)"
    )


@contextmanager
def offline_build(
    backbone: Backbone | None, aliases: Mapping[str, str] | None = None, random_any: bool = False
) -> Iterator[None]:
    """Inside: anomalib's weight requests are served from ``backbone`` (or, with
    ``random_any`` and no backbone, random-init with a fixed seed); downloads fail."""
    import timm

    factory = _timm_factory(timm.create_model, backbone, aliases or {}, random_any)
    with ExitStack() as stack:
        stack.enter_context(_patched(timm, "create_model", factory))
        # torchvision's and torch hub's weights: a cached file loads, a download fails
        stack.enter_context(_patched(torch.hub, "download_url_to_file", _refuse_hub_download))
        cfa = sys.modules.get("anomalib.models.image.cfa.torch_model")
        if cfa is not None:
            stack.enter_context(
                _patched(cfa, "get_feature_extractor", _torchvision_factory(backbone))
            )
        for module in [m for n, m in list(sys.modules.items()) if n.startswith("anomalib")]:
            if module is not None and callable(getattr(module, "download_and_extract", None)):
                stack.enter_context(_patched(module, "download_and_extract", _refuse_download))
        yield
