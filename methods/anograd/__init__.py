"""anograd plugin."""
