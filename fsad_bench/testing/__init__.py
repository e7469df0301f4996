"""Public testing helpers: the plugin conformance suite and tiny synthetic data."""

from fsad_bench.testing.conformance import CHECKS, conformance_cases, run_check, run_checks

__all__ = ["CHECKS", "conformance_cases", "run_check", "run_checks"]
