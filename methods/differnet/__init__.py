"""DifferNet (Rudolph et al., WACV 2021): a normalizing flow on multi-scale pretrained features."""
