"""CutPaste (Li et al., CVPR 2021): self-supervised cut-and-paste proxy task, Gaussian density."""
