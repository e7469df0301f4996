"""The method contract every plugin implements, built-in or external.

Plugins receive tensors only (never paths, labels or the test set while fitting), so the
train/test wall is enforced by construction in the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from fsad_bench.params import NoParams, Params

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from fsad_bench.records import Prediction


class NotFittedError(RuntimeError):
    """predict() called before fit(): a contract error, not a data error."""


@dataclass(frozen=True)
class MethodInfo:
    name: str  # explicit registry name, never derived from a class name
    version: str
    produces_maps: bool  # False -> pixel metrics are "not applicable", not missing
    needs_meta_train: bool
    min_k: int = 1
    deterministic: bool = True


@dataclass(frozen=True)
class MetaTrainSet:
    """Normal training images of the M-1 categories other than ``held_out``.

    ``data_hash`` identifies the images so meta-trained weights can be cached safely.
    """

    images: Mapping[str, Tensor]
    held_out: str
    data_hash: str
    seed: int
    k: int | None = None  # the episode's K, for methods whose tasks have K shots (meta_uses_k)


@runtime_checkable
class Method(Protocol):
    """The plugin contract.

    Methods with ``info.needs_meta_train`` also implement ``meta_state_dict() -> dict`` and
    ``load_meta_state_dict(state)`` (tensors only: it is saved with torch.save and loaded
    with ``weights_only=True``) so the runner can cache meta-training across K. Optional:
    ``params_type`` (a ``fsad_bench.params.Params`` subclass: the runner checks values
    before any episode), ``preflight()`` (raise an ``FsadError`` when this machine lacks
    something the method needs), ``to(device)``, ``provenance() -> dict`` (e.g. which
    backbone weights were used; it is stored in every record) and ``conformance_params``
    (a dict of cheap settings for the conformance suite's tiny data).
    """

    info: ClassVar[MethodInfo]
    presets: ClassVar[Mapping[str, Mapping[str, Any]]]

    def __init__(self, **params: Any) -> None: ...

    def get_params(self) -> dict[str, Any]:
        """JSON-serialisable parameters that rebuild an equivalent method."""
        ...

    def meta_fit(self, tasks: MetaTrainSet) -> None: ...

    def fit(self, support: Tensor) -> None:
        """Adapt to (K,3,H,W) normal images in [0,1]; resets any earlier episode state."""
        ...

    def predict(self, images: Tensor) -> Prediction:
        """Scores (B,), higher = more anomalous; maps (B,H,W) at input size, or None."""
        ...


class MethodBase:
    """Optional convenience base: typed parameters, validation and get_params.

    Subclasses set ``params_type`` to their ``fsad_bench.params.Params`` subclass; unknown
    names, wrong types and out-of-range values fail loudly (``ParamError``) instead of being
    ignored, which is how silently unapplied settings (e.g. a seed nobody uses) get caught.
    ``preflight`` is where a plugin checks what it needs from this machine (weights files);
    the runner calls it once in the parent before any episode.
    """

    info: ClassVar[MethodInfo]
    params_type: ClassVar[type[Params]] = NoParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: Any = self.params_type.parse(params, self.info.name)

    def get_params(self) -> dict[str, Any]:
        return self.params.to_dict()

    def preflight(self) -> None:
        """Raise an ``FsadError`` naming what is missing (a weights file, a data source)."""

    def meta_uses_k(self) -> bool:
        """Whether meta_fit reads ``tasks.k`` (e.g. K-shot tasks, as K is met at test time):
        its meta-training is then seeded and cached per K instead of once for every K."""
        return False

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        if self.info.needs_meta_train:
            raise NotImplementedError(f"{self.info.name} declares needs_meta_train but no meta_fit")


def method_defaults(cls: type) -> dict[str, Any]:
    """A plugin class's default parameters (empty for plugins without ``params_type``)."""
    params_type = getattr(cls, "params_type", None)
    return params_type.defaults() if params_type is not None else {}


class PretrainedState:
    """The meta-cache hooks for a plugin that keeps its meta-trained weights as one flat
    tensor dict in ``self._pretrained`` and builds ``self._model`` from it at fit."""

    _pretrained: dict[str, Tensor] | None
    _model: Any

    def meta_state_dict(self) -> dict[str, Tensor]:
        if self._pretrained is None:
            name = self.info.name  # type: ignore[attr-defined]
            raise NotFittedError(f"{name}: call meta_fit before meta_state_dict")
        return dict(self._pretrained)

    def load_meta_state_dict(self, state: dict[str, Tensor]) -> None:
        self._pretrained = {k: v.detach().clone() for k, v in state.items()}
        self._model = None


def episode_generator() -> torch.Generator:
    """A private generator drawn from torch's global RNG, which the runner seeds before every
    meta_fit/fit/predict: the episode seed then reaches a plugin's own sampling (masks,
    coresets, augmentations) without the plugin consuming the global stream further."""
    import torch  # here, not at module level: `fsad-bench list` must stay torch-free

    return torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,))))
