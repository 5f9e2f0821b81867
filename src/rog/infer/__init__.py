"""Whole-volume inference: differentiable sliding window, post-processing, predictor."""
from rog.infer.sliding_window import SlidingWindow, importance_map, sliding_window, window_starts

__all__ = ["SlidingWindow", "importance_map", "sliding_window", "window_starts"]
