"""TDG (Sheynin, Benaim & Wolf, ICCV 2021): transformation-discriminating patch-GANs."""
