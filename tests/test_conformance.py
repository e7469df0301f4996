"""Every registered plugin passes the public conformance suite (timm-style: no per-method tests)."""

from __future__ import annotations

import pytest

from fsad_bench.testing import conformance_cases, run_check


@pytest.mark.parametrize(("method", "check"), conformance_cases())
def test_conformance(method: str, check: str) -> None:
    run_check(method, check)


def test_suite_catches_a_broken_plugin() -> None:
    """The suite itself must fail on plugins that break the contract."""
    from fsad_bench import registry
    from fsad_bench.testing import run_checks

    registry.register("nanscores", "fake_plugins:NanScores")
    try:
        results = {r.check: r for r in run_checks("nanscores")}
    finally:
        registry.unregister("nanscores")
    assert not results["output_contract"].passed
    assert "NaN" in results["output_contract"].message
    assert results["predict_before_fit"].passed
