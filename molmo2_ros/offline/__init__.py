"""Offline tools: synthetic scenario bags with ground truth, deterministic replay, the oracle evaluation
instrument, evaluation, format conversion and bag playback. ROS-free except `player`."""
