"""riad plugin."""
