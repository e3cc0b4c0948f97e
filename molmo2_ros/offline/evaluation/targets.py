"""Targets a user sets for a report's headline figures (`--targets FILE` of `replay --report` and `demo`).

FILE is a YAML or JSON mapping figure -> target, e.g. `{point_hit_rate: 0.9, event_start_error_s: 0.5}`. A number
is met by a measured value at least as high, or at most as high for the figures where lower is better (errors, id
switches, count_mae); a string "<= x" or ">= x" names the comparison itself. Without targets a report shows the
figures alone: there is nothing to grade them against.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The headline figures of a report (answer_metrics.headline), in the report's order.
FIGURES = ("point_hit_rate", "point_recall", "absence_correct", "count_exact", "count_mae", "mota",
           "id_switches_per_track_per_min", "event_f1", "event_start_error_s", "event_end_error_s")
LOWER_IS_BETTER = frozenset({"count_mae", "id_switches_per_track_per_min", "event_start_error_s",
                             "event_end_error_s"})


@dataclass(frozen=True)
class Target:
    """One figure's target: met when `measured op value`."""

    figure: str
    op: str  # ">=" or "<="
    value: float

    def met(self, measured: float | None) -> bool:
        return measured is not None and (measured >= self.value if self.op == ">=" else measured <= self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def _target(figure: str, spec: Any) -> Target:
    if figure not in FIGURES:
        raise ValueError(f"unknown figure '{figure}' (use {', '.join(FIGURES)})")
    op = "<=" if figure in LOWER_IS_BETTER else ">="
    text = str(spec).strip()
    if isinstance(spec, str) and text[:2] in ("<=", ">="):
        op, text = text[:2], text[2:]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{figure}: target '{spec}' is not a number, '<= x' or '>= x'") from None
    if not math.isfinite(value):
        raise ValueError(f"{figure}: target '{spec}' is not a finite number")
    return Target(figure, op, value)


def parse_targets(data: Any) -> dict[str, Target]:
    """Targets by figure from a loaded mapping; ValueError names what is wrong."""
    if not isinstance(data, dict) or not data:
        raise ValueError("expected a mapping figure -> target, e.g. {point_hit_rate: 0.9}")
    return {str(figure): _target(str(figure), spec) for figure, spec in data.items()}


def load_targets(path: str | Path) -> dict[str, Target]:
    """Targets from a YAML or JSON file (JSON is YAML); ValueError (or OSError) says what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"not YAML or JSON: {error}") from None
    return parse_targets(data)


def targets_arg(path: str) -> dict[str, Target]:
    """argparse type of `--targets FILE`: the file's targets, or the reason it has none as the argument's error."""
    try:
        return load_targets(path)
    except (OSError, ValueError) as error:
        raise argparse.ArgumentTypeError(f"{path}: {error}") from None
