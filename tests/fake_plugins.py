"""Plugins that misbehave or spy, registered in-process by tests (never installed)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import create_model

from fsad_bench.method import MetaTrainSet, MethodBase, MethodInfo, NotFittedError
from fsad_bench.params import Params
from fsad_bench.records import Prediction


def _params(name: str, **defaults: Any) -> type[Params]:
    """A one-field parameter set for a fake plugin, typed by its default."""
    return create_model(name, __base__=Params, **{k: (type(v), v) for k, v in defaults.items()})


class MeanDistance(MethodBase):
    """Distance of each pixel to the support mean: tiny, deterministic, produces maps."""

    info: ClassVar[MethodInfo] = MethodInfo("meandist", "0", True, False)

    def fit(self, support: torch.Tensor) -> None:
        self.mean = support.mean(dim=0)

    def predict(self, images: torch.Tensor) -> Prediction:
        if not hasattr(self, "mean"):
            raise NotFittedError("fit first")
        maps = (images - self.mean).abs().mean(dim=1)
        return Prediction(maps.flatten(1).max(dim=1).values, maps)


class NanScores(MeanDistance):
    info: ClassVar[MethodInfo] = MethodInfo("nanscores", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        return Prediction(torch.full_like(pred.scores, float("nan")), pred.maps)


class Raises(MeanDistance):
    info: ClassVar[MethodInfo] = MethodInfo("raises", "0", True, False)

    def fit(self, support: torch.Tensor) -> None:
        if len(support) > 1:
            raise RuntimeError("cannot cope with more than one shot")
        super().fit(support)


class MetaSpy(MeanDistance):
    """Records which categories meta_fit saw; the runner must never include the held-out one."""

    info: ClassVar[MethodInfo] = MethodInfo("metaspy", "0", True, True)
    seen: ClassVar[list[tuple[str, int, tuple[str, ...]]]] = []
    draws: ClassVar[list[float]] = []  # one draw of the runner-seeded RNG per meta_fit

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        MetaSpy.seen.append((tasks.held_out, tasks.seed, tuple(sorted(tasks.images))))
        MetaSpy.draws.append(torch.rand(()).item())
        self.prior = torch.stack([v.mean() for v in tasks.images.values()]).mean()

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        return {"prior": self.prior}

    def load_meta_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.prior = state["prior"]


class MetaSpyPerK(MetaSpy):
    """A meta-trained plugin whose tasks have the episode's K shots (meta_uses_k)."""

    info: ClassVar[MethodInfo] = MethodInfo("metaspyk", "0", True, True)
    ks: ClassVar[list[int | None]] = []

    def meta_uses_k(self) -> bool:
        return True

    def meta_fit(self, tasks: MetaTrainSet) -> None:
        MetaSpyPerK.ks.append(tasks.k)
        super().meta_fit(tasks)


class NeedsTwo(MeanDistance):
    """Fits need at least two support images (a covariance, say)."""

    info: ClassVar[MethodInfo] = MethodInfo("needstwo", "0", True, False, min_k=2)


class Hangs(MeanDistance):
    """A stuck plugin: fit never returns when given ``hang_k`` support images."""

    info: ClassVar[MethodInfo] = MethodInfo("hangs", "0", True, False)
    params_type = _params("HangParams", hang_k=2)

    def fit(self, support: torch.Tensor) -> None:
        import time

        while len(support) == self.params.hang_k:
            time.sleep(3600)
        super().fit(support)


class WrongShapeMaps(MeanDistance):
    info: ClassVar[MethodInfo] = MethodInfo("wrongmaps", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        return Prediction(pred.scores, pred.maps[:, ::2, ::2])


class InfScores(MeanDistance):
    info: ClassVar[MethodInfo] = MethodInfo("infscores", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        return Prediction(pred.scores + float("inf"), pred.maps)


class Dies(MeanDistance):
    """Kills its own process (like a segfault or the OOM killer) when given two shots."""

    info: ClassVar[MethodInfo] = MethodInfo("dies", "0", True, False)

    def fit(self, support: torch.Tensor) -> None:
        import os

        if len(support) == 2:
            os._exit(3)
        super().fit(support)


class Leaks(MeanDistance):
    """Keeps ``leak_mb`` of touched memory alive in a module global at every two-shot fit,
    as a plugin with a cache that never empties would."""

    info: ClassVar[MethodInfo] = MethodInfo("leaks", "0", True, False)
    params_type = _params("LeakParams", leak_mb=600)
    kept: ClassVar[list[Any]] = []

    def fit(self, support: torch.Tensor) -> None:
        import time

        import numpy as np

        if len(support) == 2:
            Leaks.kept.append(np.ones(int(self.params.leak_mb) * 2**17))  # 8-byte floats
            time.sleep(1.0)  # the runner samples memory a few times a second
        super().fit(support)


class Scribbles(MeanDistance):
    """Scores correctly, then writes zeros into the test images it was given."""

    info: ClassVar[MethodInfo] = MethodInfo("scribbles", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        images.zero_()
        return pred


class Naps(MeanDistance):
    """A slow but well-behaved plugin: fit sleeps ``nap_s`` seconds."""

    info: ClassVar[MethodInfo] = MethodInfo("naps", "0", True, False)
    params_type = _params("NapParams", nap_s=1.5)

    def fit(self, support: torch.Tensor) -> None:
        import time

        time.sleep(self.params.nap_s)
        super().fit(support)


class ScoresOnly(MeanDistance):
    """Image scores only, like AnoGrad: pixel metrics must come out "not applicable"."""

    info: ClassVar[MethodInfo] = MethodInfo("scoresonly", "0", False, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(super().predict(images).scores, None)


# Fakes for the conformance suite's own tests (tests/test_conformance.py registers them one
# at a time; they are not in FAKES).


class Jitters(MeanDistance):
    """Declares deterministic=False and means it: every predict shifts the scores a little."""

    info: ClassVar[MethodInfo] = MethodInfo("jitters", "0", True, False, deterministic=False)
    ticks: ClassVar[list[int]] = [0]

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        Jitters.ticks[0] += 1
        return Prediction(pred.scores + 1e-3 * Jitters.ticks[0], pred.maps)


class Accumulates(MeanDistance):
    """Leaks state between episodes: the mean is over every support it was ever fitted on."""

    info: ClassVar[MethodInfo] = MethodInfo("accumulates", "0", True, False)

    def fit(self, support: torch.Tensor) -> None:
        self.seen = [*getattr(self, "seen", []), support]
        self.mean = torch.cat(self.seen).mean(dim=0)


class AccumulatesLoose(Accumulates):
    """The same leak in a plugin that declares deterministic=False (but is reproducible)."""

    info: ClassVar[MethodInfo] = MethodInfo(
        "accumulatesloose", "0", True, False, deterministic=False
    )


class NoisyMaps(MeanDistance):
    """Claims determinism; its scores are reproducible but its maps drift at every call."""

    info: ClassVar[MethodInfo] = MethodInfo("noisymaps", "0", True, False)
    ticks: ClassVar[list[int]] = [0]

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        NoisyMaps.ticks[0] += 1
        return Prediction(pred.scores, pred.maps + 1e-3 * NoisyMaps.ticks[0])


class NumpyScores(MeanDistance):
    """Returns numpy arrays instead of tensors."""

    info: ClassVar[MethodInfo] = MethodInfo("numpyscores", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        return Prediction(pred.scores.numpy(), pred.maps)


class BatchCentred(MeanDistance):
    """Uses test-batch statistics: scores are centred on the batch mean."""

    info: ClassVar[MethodInfo] = MethodInfo("batchcentred", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        pred = super().predict(images)
        return Prediction(pred.scores - pred.scores.mean(), pred.maps)


class NanAtOneShot(MeanDistance):
    """Divides by the support's standard deviation, which is NaN for a single image."""

    info: ClassVar[MethodInfo] = MethodInfo("nanatoneshot", "0", True, False, min_k=1)

    def fit(self, support: torch.Tensor) -> None:
        super().fit(support)
        # the sample variance, written out: 0/0 = NaN for one image
        self.std = (((support - self.mean) ** 2).sum(dim=0) / (len(support) - 1)).sqrt()

    def predict(self, images: torch.Tensor) -> Prediction:
        if not hasattr(self, "mean"):
            raise NotFittedError("fit first")
        maps = ((images - self.mean).abs() / (self.std + 1e-3)).mean(dim=1)
        return Prediction(maps.flatten(1).max(dim=1).values, maps)


class Unguarded(MeanDistance):
    """predict before fit fails with an AttributeError instead of NotFittedError."""

    info: ClassVar[MethodInfo] = MethodInfo("unguarded", "0", True, False)

    def predict(self, images: torch.Tensor) -> Prediction:
        maps = (images - self.mean).abs().mean(dim=1)
        return Prediction(maps.flatten(1).max(dim=1).values, maps)


FAKES = {
    cls.info.name: f"fake_plugins:{cls.__name__}"
    for cls in (
        MeanDistance,
        NanScores,
        Raises,
        MetaSpy,
        MetaSpyPerK,
        NeedsTwo,
        Hangs,
        WrongShapeMaps,
        InfScores,
        ScoresOnly,
        Dies,
        Leaks,
        Scribbles,
        Naps,
    )
}
"""Registry name -> target of every fake above (see the ``fake_methods`` fixture)."""
