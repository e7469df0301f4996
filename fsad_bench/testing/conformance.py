"""The plugin conformance suite: the Method contract checked on any registered name.

Like scikit-learn's check_estimator: every built-in plugin runs it in CI, and external
authors run the same checks with ``fsad-bench check-plugin NAME`` or from pytest:

    @pytest.mark.parametrize(("method", "check"), conformance_cases(["mymethod"]))
    def test_conformance(method, check):
        run_check(method, check)

A plugin may declare ``conformance_params`` (a dict) to make itself fast on tiny data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fsad_bench.method import MetaTrainSet, NotFittedError
from fsad_bench.records import Prediction
from fsad_bench.registry import list_methods, resolve
from fsad_bench.testing.data import tiny_defect, tiny_normals
from fsad_bench.timing import seed_everything

SIZE = 64
K = 4
SEED = 1234


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    message: str = ""


def _build(name: str, params: dict[str, Any] | None = None) -> Any:
    cls = resolve(name).cls
    merged = {**getattr(cls, "conformance_params", {}), **(params or {})}
    return resolve(name, merged).build()


def _meta_set(held_out: str = "tiny") -> MetaTrainSet:
    images = {f"other{i}": tiny_normals(6, SIZE, seed=100 + i) for i in range(2)}
    return MetaTrainSet(images=images, held_out=held_out, data_hash="tiny", seed=SEED)


def _fitted(name: str, support: torch.Tensor, seed: int = SEED) -> Any:
    method = _build(name)
    seed_everything(seed)
    if method.info.needs_meta_train:
        method.meta_fit(_meta_set())
    seed_everything(seed)
    method.fit(support)
    return method


def _predict(method: Any, images: torch.Tensor, seed: int = SEED) -> Prediction:
    seed_everything(seed + 1)
    with torch.inference_mode():
        return method.predict(images)


def _test_images() -> torch.Tensor:
    defect, _ = tiny_defect(SIZE)
    return torch.cat([tiny_normals(3, SIZE, seed=7), defect])


def check_output_contract(name: str) -> None:
    """Scores (B,) float finite; maps (B,H,W) at input size iff produces_maps."""
    method = _fitted(name, tiny_normals(K, SIZE))
    images = _test_images()
    pred = _predict(method, images)
    assert isinstance(pred, Prediction), f"predict must return Prediction, got {type(pred)}"
    assert pred.scores.shape == (len(images),), f"scores shape {tuple(pred.scores.shape)}"
    assert pred.scores.dtype.is_floating_point, f"scores dtype {pred.scores.dtype}"
    assert torch.isfinite(pred.scores).all(), "scores contain NaN/inf"
    if method.info.produces_maps:
        assert pred.maps is not None, "produces_maps=True but maps is None"
        assert pred.maps.shape == (len(images), SIZE, SIZE), f"maps {tuple(pred.maps.shape)}"
        assert torch.isfinite(pred.maps).all(), "maps contain NaN/inf"
    else:
        assert pred.maps is None, "produces_maps=False but maps were returned"


def check_predict_before_fit(name: str) -> None:
    method = _build(name)
    try:
        method.predict(_test_images())
    except NotFittedError:
        return
    raise AssertionError("predict before fit must raise fsad_bench.method.NotFittedError")


def check_batch_invariance(name: str) -> None:
    """No test-set statistics: a batch scores the same as its images one at a time."""
    method = _fitted(name, tiny_normals(K, SIZE))
    images = _test_images()
    together = _predict(method, images)
    alone = [_predict(method, images[i : i + 1]) for i in range(len(images))]
    torch.testing.assert_close(
        together.scores, torch.cat([p.scores for p in alone]), rtol=1e-4, atol=1e-5
    )
    if together.maps is not None:
        torch.testing.assert_close(
            together.maps, torch.cat([p.maps for p in alone]), rtol=1e-4, atol=1e-5
        )


def check_fit_resets(name: str) -> None:
    """fit(A) then fit(B) must equal fit(B) alone: no state leaks between episodes."""
    a, b = tiny_normals(K, SIZE, seed=11), tiny_normals(K, SIZE, seed=22)
    method = _fitted(name, a)
    seed_everything(SEED)
    method.fit(b)
    fresh = _fitted(name, b)
    images = _test_images()
    torch.testing.assert_close(
        _predict(method, images).scores, _predict(fresh, images).scores, rtol=1e-4, atol=1e-5
    )


def check_deterministic(name: str) -> None:
    """Same seed, same output (only for methods that declare deterministic=True)."""
    if not _build(name).info.deterministic:
        return
    images = _test_images()
    first = _predict(_fitted(name, tiny_normals(K, SIZE)), images)
    second = _predict(_fitted(name, tiny_normals(K, SIZE)), images)
    assert torch.equal(first.scores, second.scores), "same seed gave different scores"


def check_min_k(name: str) -> None:
    method = _build(name)
    fitted = _fitted(name, tiny_normals(method.info.min_k, SIZE))
    assert torch.isfinite(_predict(fitted, _test_images()).scores).all(), "non-finite at min_k"


def check_params_roundtrip(name: str) -> None:
    method = _build(name)
    params = json.loads(json.dumps(method.get_params()))
    rebuilt = resolve(name, params).build()
    assert rebuilt.get_params() == method.get_params(), "params did not round-trip via JSON"


def check_detects_defect(name: str) -> None:
    """On a tiny category the defect image scores above every support image."""
    support = tiny_normals(K, SIZE)
    method = _fitted(name, support)
    defect, mask = tiny_defect(SIZE)
    defect_score = float(_predict(method, defect).scores[0])
    support_scores = _predict(method, support).scores
    assert defect_score > float(support_scores.max()), (
        f"defect scored {defect_score:.4g}, support max {float(support_scores.max()):.4g}"
    )


def check_meta_state_roundtrip(name: str) -> None:
    """Meta-trained methods: cached meta state reproduces the same scores."""
    method = _build(name)
    if not method.info.needs_meta_train:
        return
    seed_everything(SEED)
    method.meta_fit(_meta_set())
    state = method.meta_state_dict()
    clone = _build(name)
    clone.load_meta_state_dict(state)
    support, images = tiny_normals(K, SIZE), _test_images()
    for m in (method, clone):
        seed_everything(SEED)
        m.fit(support)
    torch.testing.assert_close(_predict(method, images).scores, _predict(clone, images).scores)


CHECKS: dict[str, Callable[[str], None]] = {
    "output_contract": check_output_contract,
    "predict_before_fit": check_predict_before_fit,
    "batch_invariance": check_batch_invariance,
    "fit_resets": check_fit_resets,
    "deterministic": check_deterministic,
    "min_k": check_min_k,
    "params_roundtrip": check_params_roundtrip,
    "detects_defect": check_detects_defect,
    "meta_state_roundtrip": check_meta_state_roundtrip,
}


def conformance_cases(names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(method, check) pairs for pytest.mark.parametrize over every registered plugin."""
    names = list(names) if names is not None else list(list_methods())
    return [(name, check) for name in names for check in CHECKS]


def run_check(name: str, check: str) -> None:
    CHECKS[check](name)


def run_checks(name: str) -> list[CheckResult]:
    """Every check on one plugin; an unknown or unimportable name raises PluginError once
    (one line for the user) instead of failing each check with the same message."""
    resolve(name)
    results = []
    for check, func in CHECKS.items():
        try:
            func(name)
            results.append(CheckResult(check, True))
        except Exception as exc:  # noqa: BLE001 - reported per check
            results.append(CheckResult(check, False, f"{type(exc).__name__}: {exc}"))
    return results
