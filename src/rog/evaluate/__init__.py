"""Evaluation: segmentation metrics and robustness summaries."""
