"""Certified robustness: randomized smoothing of any model's whole inference (`smoothing`)."""
