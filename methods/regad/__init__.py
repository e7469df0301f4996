"""regad plugin."""
