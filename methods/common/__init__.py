"""Pieces shared by several method cores (pure torch, no harness imports)."""
