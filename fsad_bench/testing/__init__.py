"""Public testing helpers: the plugin conformance suite and tiny synthetic data."""

from fsad_bench.testing.conformance import (
    CHECKS,
    CheckFailed,
    CheckResult,
    CheckSkipped,
    Subject,
    conformance_cases,
    run_check,
    run_check_result,
    run_checks,
    subject_of,
)

__all__ = [
    "CHECKS",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "Subject",
    "conformance_cases",
    "run_check",
    "run_check_result",
    "run_checks",
    "subject_of",
]
