"""f-AnoGAN (Schlegl et al., MedIA 2019): WGAN-GP with an izif encoder; residual scores."""
