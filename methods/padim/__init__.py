"""padim plugin."""
