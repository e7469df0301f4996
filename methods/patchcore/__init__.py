"""PatchCore (Roth et al., CVPR 2022) for the few-shot protocol."""
