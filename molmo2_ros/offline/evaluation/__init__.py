"""Scoring results against ground truth (points, counts, CLEAR-MOT tracks, events, answers, 3D), report targets,
annotation conversion, and the oracle evaluation instrument."""
