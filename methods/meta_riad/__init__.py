"""meta_riad plugin."""
