"""The plugin conformance suite: the Method contract checked on any plugin.

Like scikit-learn's check_estimator: every built-in plugin runs it in CI, and external
authors run the same checks with ``fsad-bench check-plugin NAME`` or from pytest:

    @pytest.mark.parametrize(("method", "check"), conformance_cases(["mymethod"]))
    def test_conformance(method, check):
        run_check(method, check)

A method is a registry name, a ``name.preset``, a plugin class or an instance (checked with
its own parameters). A plugin may declare ``conformance_params`` (a dict) to make itself
fast on tiny data, and ``conformance_xfail`` (check name -> reason) for checks it is known
to fail: those are reported as expected failures, never hidden. Which checks apply is
read from ``MethodInfo`` (as scikit-learn reads estimator tags), not from if-chains.

Each check passes, fails with one sentence saying what is wrong and what it usually means,
or is skipped with a reason when it does not apply to the plugin (e.g. the meta-state
round trip for a method without meta-training). A broken output (wrong type or shape,
NaN/inf) is reported by ``output_contract``; the other checks do not repeat it under a
misleading name: comparisons treat NaN as equal to NaN, and checks that cannot be judged
on such output are skipped with a pointer to ``output_contract`` (or to ``deterministic``
when the output is not reproducible). For a plugin that declares ``deterministic=False``,
a comparison is made only if an identical repeat run agrees; otherwise it is skipped.
"""

from __future__ import annotations

import json
import unittest
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from fsad_bench.method import MetaTrainSet, MethodInfo, NotFittedError
from fsad_bench.records import Prediction
from fsad_bench.registry import available_presets, list_methods, resolve
from fsad_bench.run.seeding import seed_everything
from fsad_bench.testing.data import tiny_defect, tiny_normals

SIZE = 64
K = 4
SEED = 1234
RTOL, ATOL = 1e-4, 1e-5  # float32 kernels may round differently for another batch size
META_RTOL, META_ATOL = 1.3e-6, 1e-5  # torch.testing's float32 defaults: same batches, same code

STATUS_PASS, STATUS_FAIL, STATUS_SKIP = "pass", "fail", "skip"


class CheckFailed(AssertionError):
    """The plugin breaks the contract; the message is one sentence for its author."""


class CheckSkipped(unittest.SkipTest):
    """The check does not apply to this plugin, or cannot be judged; the message says why.

    A ``unittest.SkipTest``, so unittest (and pytest) runners report it as a skip."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``passed`` is False only for a failure (a skip did not fail);
    ``status`` is ``"pass"``, ``"fail"`` or ``"skip"``; for a skip, ``message`` is the reason."""

    check: str
    passed: bool
    message: str = ""
    skipped: bool = False

    @property
    def status(self) -> str:
        if self.skipped:
            return STATUS_SKIP
        return STATUS_PASS if self.passed else STATUS_FAIL


@dataclass(frozen=True)
class Subject:
    """What is checked: a plugin class and the parameters it is built with."""

    label: str
    cls: type
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def info(self) -> MethodInfo:
        """The built method's: a plugin may refine its info per instance (e.g. a bridge
        whose models differ in producing maps)."""
        return self.build().info

    def build(self, params: dict[str, Any] | None = None) -> Any:
        merged = {**getattr(self.cls, "conformance_params", {}), **self.params, **(params or {})}
        return self.cls(**merged)


Method = str | type | Any  # a registry name or name.preset, a plugin class, or an instance


def subject_of(method: Method) -> Subject:
    """A Subject for a name (``name`` or ``name.preset``), a class, or an instance; an
    unknown or unimportable name raises the registry's one-line PluginError."""
    if isinstance(method, Subject):
        return method
    if isinstance(method, str):
        resolved = resolve(method)
        return Subject(method, resolved.cls, dict(resolved.params))
    if isinstance(method, type):
        return Subject(method.info.name, method)
    return Subject(type(method).info.name, type(method), method.get_params())


def _build(subject: Subject, params: dict[str, Any] | None = None) -> Any:
    return subject.build(params)


def _info(subject: Subject) -> MethodInfo:
    return subject.info


def _meta_set(held_out: str = "tiny") -> MetaTrainSet:
    images = {f"other{i}": tiny_normals(6, SIZE, seed=100 + i) for i in range(2)}
    return MetaTrainSet(images=images, held_out=held_out, data_hash="tiny", seed=SEED)


def _fitted(subject: Subject, support: torch.Tensor, seed: int = SEED) -> Any:
    method = _build(subject)
    seed_everything(seed)
    if method.info.needs_meta_train:
        method.meta_fit(_meta_set())
    seed_everything(seed)
    method.fit(support)
    return method


def _raw_predict(method: Any, images: torch.Tensor, seed: int = SEED) -> Any:
    seed_everything(seed + 1)
    with torch.inference_mode():
        return method.predict(images)


def _test_images() -> torch.Tensor:
    defect, _ = tiny_defect(SIZE)
    return torch.cat([tiny_normals(3, SIZE, seed=7), defect])


def _typename(value: Any) -> str:
    kind = type(value)
    return (
        kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    )


def _form_problem(pred: Any, images: torch.Tensor) -> str | None:
    """What is wrong with the type or shape of predict's output for ``images``, or None."""
    batch, size = len(images), tuple(images.shape[-2:])
    if not isinstance(pred, Prediction):
        return f"predict must return fsad_bench.records.Prediction, got {_typename(pred)}"
    if not isinstance(pred.scores, torch.Tensor):
        return f"scores must be a torch.Tensor, got {_typename(pred.scores)}"
    if tuple(pred.scores.shape) != (batch,):
        return f"scores shape {tuple(pred.scores.shape)}, expected ({batch},)"
    if pred.maps is not None:
        if not isinstance(pred.maps, torch.Tensor):
            return f"maps must be a torch.Tensor or None, got {_typename(pred.maps)}"
        expected = (batch, *size)
        if tuple(pred.maps.shape) != expected:
            return f"maps shape {tuple(pred.maps.shape)}, expected {expected}"
    return None


def _nonfinite(pred: Prediction) -> str | None:
    """Which outputs contain NaN/inf, e.g. "scores contain NaN or inf (4 of 4 values)"."""
    problems = []
    for what, values in (("scores", pred.scores), ("maps", pred.maps)):
        if values is not None:
            bad = ~torch.isfinite(values)
            if bool(bad.any()):
                problems.append(
                    f"{what} contain NaN or inf ({int(bad.sum())} of {bad.numel()} values)"
                )
    return "; ".join(problems) or None


def _fails(check: str, subject: Subject) -> bool:
    """Whether ``check`` fails for this plugin (a skip is not a failure)."""
    try:
        _play(subject, check)
    except CheckSkipped:
        return False
    except Exception:  # noqa: BLE001 - that check reports it
        return True
    return False


def _unusable(
    subject: Subject, problem: str, hint: str = "", owner: str = "output_contract"
) -> NoReturn:
    """Output this check cannot judge: skip when ``owner`` (the check whose subject it is)
    already fails, so the fault is reported once under the right name; otherwise fail."""
    if _fails(owner, subject):
        raise CheckSkipped(f"cannot be judged: {problem}; see {owner}")
    raise CheckFailed(f"{problem}{hint}")


def _predict(subject: Subject, method: Any, images: torch.Tensor, seed: int = SEED) -> Prediction:
    """predict, for checks other than output_contract: a malformed output stops the check."""
    pred = _raw_predict(method, images, seed)
    problem = _form_problem(pred, images)
    if problem is not None:
        _unusable(subject, f"for a batch of {len(images)}: {problem}")
    return pred


def _mismatch(what: str, got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """How ``got`` differs from ``want`` beyond the tolerance (NaN equals NaN), or None."""
    if got is None and want is None:
        return None
    if got is None or want is None:
        return f"{what} are None in one output and not in the other"
    if got.shape != want.shape:
        return f"{what} shape {tuple(got.shape)} vs {tuple(want.shape)}"
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    close = torch.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    bad = ~close
    finite = bad & torch.isfinite(got) & torch.isfinite(want)
    text = f"{what} differ at {int(bad.sum())} of {bad.numel()} values"
    if bool(finite.any()):
        text += f" by up to {float((got - want).abs()[finite].max()):.3g}"
    if not bool(finite.eq(bad).all()):
        text += " (some are NaN/inf on one side only, see output_contract)"
    return text


def _differences(
    got: Prediction, want: Prediction, rtol: float = RTOL, atol: float = ATOL
) -> list[str]:
    found = [
        _mismatch("scores", got.scores, want.scores, rtol, atol),
        _mismatch("maps", got.maps, want.maps, rtol, atol),
    ]
    return [d for d in found if d]


def _explain(
    subject: Subject,
    found: list[str],
    repeat: Callable[[], list[str]],
    repeated: str,
    meaning: str,
) -> None:
    """Fail with ``meaning`` when ``found`` is not empty, unless repeating the same run
    (``repeat``, which returns its differences) shows the output is not reproducible:
    then the difference says nothing about this check's subject."""
    if not found:
        return
    noise = repeat()
    if noise:
        problem = f"{repeated} already differ ({'; '.join(noise)})"
        if not _info(subject).deterministic:
            raise CheckSkipped(
                f"{subject.label} declares deterministic=False and {problem}, so this comparison "
                "cannot be made"
            )
        _unusable(
            subject,
            problem,
            "; the output is not reproducible: draw randomness from torch's global RNG or "
            "episode_generator(), or declare deterministic=False",
            owner="deterministic",
        )
    raise CheckFailed(meaning.format("; ".join(found)))


def _cat(preds: list[Prediction]) -> Prediction:
    maps = [p.maps for p in preds]
    return Prediction(
        torch.cat([p.scores for p in preds]),
        None if any(m is None for m in maps) else torch.cat(maps),  # type: ignore[arg-type]
    )


def check_output_contract(subject: Subject) -> None:
    """Scores (B,) finite float tensor; maps (B,H,W) finite at input size iff produces_maps."""
    method = _fitted(subject, tiny_normals(K, SIZE))
    images = _test_images()
    pred = _raw_predict(method, images)
    problem = _form_problem(pred, images)
    if problem is not None:
        raise CheckFailed(problem)
    if method.info.produces_maps and pred.maps is None:
        raise CheckFailed("info.produces_maps is True but predict returned maps=None")
    if not method.info.produces_maps and pred.maps is not None:
        raise CheckFailed(
            "info.produces_maps is False but predict returned maps; return maps=None "
            "or declare produces_maps=True"
        )
    for what, values in (("scores", pred.scores), ("maps", pred.maps)):
        if values is not None and not values.dtype.is_floating_point:
            raise CheckFailed(f"{what} dtype {values.dtype}, expected a floating-point dtype")
    problem = _nonfinite(pred)
    if problem is not None:
        raise CheckFailed(f"{problem}; every score and map value must be finite")


def check_predict_before_fit(subject: Subject) -> None:
    """predict on a fresh instance raises fsad_bench.method.NotFittedError."""
    method = _build(subject)
    try:
        method.predict(_test_images())
    except NotFittedError:
        return
    except Exception as exc:
        raise CheckFailed(
            f"predict before fit raised {type(exc).__name__} ({exc}) instead of "
            "fsad_bench.method.NotFittedError"
        ) from exc
    raise CheckFailed("predict before fit returned; it must raise fsad_bench.method.NotFittedError")


def check_batch_invariance(subject: Subject) -> None:
    """No test-set statistics: a batch scores the same as its images one at a time."""
    method = _fitted(subject, tiny_normals(K, SIZE))
    images = _test_images()
    together = _predict(subject, method, images)
    alone = _cat([_predict(subject, method, images[i : i + 1]) for i in range(len(images))])
    _explain(
        subject,
        _differences(together, alone),
        lambda: _differences(_predict(subject, method, images), together),
        "two predictions of the same batch",
        f"scoring {len(images)} images as one batch and one at a time gave different results: "
        "{}; the scoring probably uses statistics of the rest of the batch "
        "(e.g. normalising over the batch, or BatchNorm in train mode)",
    )


def check_fit_resets(subject: Subject) -> None:
    """fit(A) then fit(B) predicts as fit(B) alone: no state leaks between episodes."""
    a, b = tiny_normals(K, SIZE, seed=11), tiny_normals(K, SIZE, seed=22)
    method = _fitted(subject, a)
    seed_everything(SEED)
    method.fit(b)
    images = _test_images()
    refit = _predict(subject, method, images)
    fresh = _predict(subject, _fitted(subject, b), images)
    _explain(
        subject,
        _differences(refit, fresh),
        lambda: _differences(_predict(subject, _fitted(subject, b), images), fresh),
        "two fresh fits on the same support",
        "fit(A) then fit(B) predicts differently from fit(B) alone: {}; state is leaking "
        "between fit calls (fit must reset what it learned before)",
    )


def check_deterministic(subject: Subject) -> None:
    """Same seed, same scores and maps (skipped for methods that declare deterministic=False)."""
    images = _test_images()
    first = _predict(subject, _fitted(subject, tiny_normals(K, SIZE)), images)
    second = _predict(subject, _fitted(subject, tiny_normals(K, SIZE)), images)
    found = _differences(first, second, rtol=0.0, atol=0.0)
    if found:
        raise CheckFailed(
            f"two runs with the same seed gave different output: {'; '.join(found)}; draw "
            "randomness from torch's global RNG or episode_generator(), or declare "
            "deterministic=False"
        )


def check_min_k(subject: Subject) -> None:
    """Fitting on info.min_k support images works and gives finite output."""
    k = _info(subject).min_k
    pred = _predict(subject, _fitted(subject, tiny_normals(k, SIZE)), _test_images())
    problem = _nonfinite(pred)
    if problem is not None:
        _unusable(
            subject,
            f"with K=min_k={k} support images, {problem}",
            f" (finite with K={K}; e.g. a variance over a single image)" if k != K else "",
        )


def check_params_roundtrip(subject: Subject) -> None:
    """get_params() survives JSON and rebuilds a method with the same parameters."""
    method = _build(subject)
    params = method.get_params()
    try:
        text = json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"get_params() is not JSON-serialisable: {exc}") from exc
    rebuilt = subject.cls(**json.loads(text))
    if rebuilt.get_params() != params:
        raise CheckFailed(
            f"params did not round-trip via JSON: get_params() gave {params}, a method "
            f"built from its JSON gives {rebuilt.get_params()}"
        )


def check_detects_defect(subject: Subject) -> None:
    """On a tiny category the defect image scores above every support image."""
    support = tiny_normals(K, SIZE)
    method = _fitted(subject, support)
    defect, _ = tiny_defect(SIZE)
    defect_scores = _predict(subject, method, defect).scores
    support_scores = _predict(subject, method, support).scores
    if not bool(torch.isfinite(torch.cat([defect_scores, support_scores])).all()):
        _unusable(subject, "scores of the defect or support images contain NaN or inf")
    defect_score, support_max = float(defect_scores[0]), float(support_scores.max())
    if not defect_score > support_max:
        raise CheckFailed(
            f"defect scored {defect_score:.4g}, support max {support_max:.4g}; a saturated "
            "square on the support texture must score above the support images themselves "
            "(are higher scores more anomalous?)"
        )


def check_meta_state_roundtrip(subject: Subject) -> None:
    """Meta-trained methods: a fresh instance loaded with meta_state_dict() predicts the same."""
    method = _build(subject)
    seed_everything(SEED)
    method.meta_fit(_meta_set())
    state = method.meta_state_dict()
    clone = _build(subject)
    clone.load_meta_state_dict(state)
    support, images = tiny_normals(K, SIZE), _test_images()
    preds = []
    for m in (method, clone):
        seed_everything(SEED)
        m.fit(support)
        preds.append(_predict(subject, m, images))

    def refit() -> list[str]:
        seed_everything(SEED)
        method.fit(support)
        return _differences(_predict(subject, method, images), preds[0], META_RTOL, META_ATOL)

    _explain(
        subject,
        _differences(preds[1], preds[0], META_RTOL, META_ATOL),
        refit,
        "two fits of the same meta-trained instance",
        "a fresh instance loaded with meta_state_dict() predicts differently from the "
        "meta-trained one: {}; meta_state_dict() misses part of what meta_fit learned, or "
        "load_meta_state_dict() does not restore it",
    )


def check_inputs_unchanged(subject: Subject) -> None:
    """fit and predict leave the tensors they are given as they were (the runner reuses the
    test set for the next episodes, and a caller's support set is the caller's)."""
    support, images = tiny_normals(K, SIZE), _test_images()
    support_copy, images_copy = support.clone(), images.clone()
    method = _fitted(subject, support)
    _raw_predict(method, images)
    changed = [
        what
        for what, given, original in (
            ("support", support, support_copy),
            ("images", images, images_copy),
        )
        if not torch.equal(given, original)
    ]
    if changed:
        raise CheckFailed(
            f"{' and '.join(changed)} changed by fit/predict; work on a copy "
            "(e.g. x = x.clone() before in-place operations)"
        )


def check_provenance_roundtrip(subject: Subject) -> None:
    """provenance(), stored in every record, is plain JSON and survives a round trip."""
    method = _fitted(subject, tiny_normals(K, SIZE))
    provenance = getattr(method, "provenance", lambda: {})()
    if not isinstance(provenance, dict):
        raise CheckFailed(f"provenance() returned {_typename(provenance)}, not a dict")
    try:
        text = json.dumps(provenance, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"provenance() is not plain JSON: {exc}") from exc
    if json.loads(text) != provenance:
        raise CheckFailed(
            "provenance() changes through JSON (tuples or non-string keys?): "
            f"{provenance} becomes {json.loads(text)}"
        )


def check_presets_build(subject: Subject) -> None:
    """Every preset (and the automatic ``ci`` preset) builds: its parameters are valid."""
    broken = []
    for preset, params in available_presets(subject.cls).items():
        try:
            subject.cls(**params)
        except Exception as exc:  # noqa: BLE001 - each broken preset is named
            broken.append(f"{preset} ({type(exc).__name__}: {exc})")
    if broken:
        raise CheckFailed(f"presets that do not build: {'; '.join(broken)}")


def _meta_trained(info: MethodInfo) -> str | None:
    return None if info.needs_meta_train else "declares needs_meta_train=False"


def _deterministic(info: MethodInfo) -> str | None:
    return None if info.deterministic else "declares deterministic=False"


@dataclass(frozen=True)
class Check:
    """A check and the MethodInfo tags it needs: ``applies`` returns why it does not apply,
    or None (sklearn's estimator tags, not if-chains in the checks)."""

    run: Callable[[Subject], None]
    applies: Callable[[MethodInfo], str | None] = lambda info: None


CHECKS: dict[str, Check] = {
    "output_contract": Check(check_output_contract),
    "predict_before_fit": Check(check_predict_before_fit),
    "batch_invariance": Check(check_batch_invariance),
    "fit_resets": Check(check_fit_resets),
    "deterministic": Check(check_deterministic, _deterministic),
    "min_k": Check(check_min_k),
    "params_roundtrip": Check(check_params_roundtrip),
    "detects_defect": Check(check_detects_defect),
    "meta_state_roundtrip": Check(check_meta_state_roundtrip, _meta_trained),
    "inputs_unchanged": Check(check_inputs_unchanged),
    "provenance_roundtrip": Check(check_provenance_roundtrip),
    "presets_build": Check(check_presets_build),
}


def _label(method: Method) -> str:
    return method if isinstance(method, str) else subject_of(method).label


def conformance_cases(methods: Sequence[Method] | None = None) -> list[tuple[Any, str]]:
    """(method, check) pairs for pytest.mark.parametrize over plugins (every registered
    one by default). Names are resolved first: an unknown or unimportable name raises the
    registry's one-line PluginError instead of producing cases that all fail."""
    methods = list(list_methods()) if methods is None else list(methods)
    for method in methods:
        subject_of(method)
    return [(method, check) for method in methods for check in CHECKS]


def _check(check: str) -> Check:
    if check not in CHECKS:
        raise ValueError(f"unknown conformance check {check!r}; checks: {', '.join(CHECKS)}")
    return CHECKS[check]


def _play(subject: Subject, check: str) -> None:
    """Run ``check``, skipping it when the plugin's MethodInfo says it does not apply."""
    spec = _check(check)
    reason = spec.applies(subject.info)
    if reason is not None:
        raise CheckSkipped(f"does not apply: {subject.label} {reason}")
    spec.run(subject)


def _expected_failure(subject: Subject, check: str) -> str | None:
    return dict(getattr(subject.cls, "conformance_xfail", {})).get(check)


def run_check_result(method: Method, check: str) -> CheckResult:
    """One check as a CheckResult (what ``run_checks`` collects)."""
    subject = subject_of(method)
    _check(check)  # an unknown check name is the caller's error, not the plugin's
    expected = _expected_failure(subject, check)
    try:
        _play(subject, check)
    except CheckSkipped as exc:
        return CheckResult(check, True, str(exc), skipped=True)
    except Exception as exc:  # noqa: BLE001 - the plugin's own error, reported per check
        message = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
        if expected is not None:
            return CheckResult(check, True, f"expected failure ({expected}): {message}", True)
        return CheckResult(check, False, message)
    if expected is not None:
        return CheckResult(
            check,
            True,
            f"passes although declared an expected failure ({expected}): remove "
            "it from conformance_xfail",
            skipped=True,
        )
    return CheckResult(check, True)


def run_check(method: Method, check: str) -> None:
    """One check, for a test function: raises on failure; a check that does not apply calls
    pytest.skip, a declared expected failure pytest.xfail (unittest.SkipTest without pytest)."""
    result = run_check_result(method, check)
    if result.status == STATUS_FAIL:
        raise CheckFailed(result.message)
    if result.status == STATUS_SKIP:
        try:
            import pytest
        except ImportError:
            raise CheckSkipped(result.message) from None
        if result.message.startswith("expected failure"):
            pytest.xfail(result.message)
        pytest.skip(result.message)


def run_checks(method: Method) -> list[CheckResult]:
    """Every check on one plugin; an unknown or unimportable name raises PluginError once
    (one line for the user) instead of failing each check with the same message."""
    subject = subject_of(method)
    return [run_check_result(subject, check) for check in CHECKS]
