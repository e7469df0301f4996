"""SPADE (Cohen & Hoshen, 2020): sub-image anomaly detection with deep pyramid correspondences."""
