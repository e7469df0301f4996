"""MKD (Salehi et al., CVPR 2021): multiresolution knowledge distillation for anomaly detection."""
