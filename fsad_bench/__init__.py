"""fsad-bench: a benchmark harness for K-shot image anomaly detection."""

__version__ = "0.1.0"
