"""Ground parsed points on the clip's source frames: exact stamps and pixels of the original images."""

from __future__ import annotations

import bisect
import statistics
from collections import Counter

from .types import Clip, GroundedPoint, ParsedAnswer

MIN_TIME_TOLERANCE_S = 0.15


def _time_tolerance(rel: list[float]) -> float:
    """How far before the first or after the last frame a time key may lie: max(0.15 s, half the median spacing)."""
    if len(rel) < 2:
        return MIN_TIME_TOLERANCE_S
    return max(MIN_TIME_TOLERANCE_S, 0.5 * statistics.median(b - a for a, b in zip(rel, rel[1:])))


def _nearest(rel: list[float], t: float) -> int:
    """Index of the frame whose relative time is nearest to t (the earlier one on a tie)."""
    i = bisect.bisect_left(rel, t)
    if i == 0:
        return 0
    if i == len(rel) or t - rel[i - 1] <= rel[i] - t:
        return i - 1
    return i


def ground_points(parsed: ParsedAnswer, clip: Clip, *,
                  model_ids: bool = False) -> tuple[list[GroundedPoint], Counter]:
    """Map parsed points to (absolute frame stamp, pixel x/y) on the clip's frames.

    A time key goes to the nearest frame of the clip; one farther than the tolerance before the first or after
    the last frame is dropped ("time_outside_clip"). An image-index key i goes to frame i-1
    ("index_outside_clip" when there is no such frame). x = v/1000*W, y = v/1000*H of the original image.
    object_id is "" (GroundedPoint.object_id is a persistent track id or nothing), or with `model_ids` the
    model's per-answer object number as a string ("" without one), which only track association may read.
    Returns the points and the drops made here (parse drops stay in parsed.dropped).
    """
    rel = clip.relative_times()
    stamps = clip.stamps_ns
    tol = _time_tolerance(rel)
    width, height = clip.width, clip.height
    points: list[GroundedPoint] = []
    dropped: Counter = Counter()
    for p in parsed.points:
        if p.key_is_index:
            i = int(p.key) - 1
            if not 0 <= i < len(stamps):
                dropped["index_outside_clip"] += 1
                continue
        else:
            if p.key < rel[0] - tol or p.key > rel[-1] + tol:
                dropped["time_outside_clip"] += 1
                continue
            i = _nearest(rel, p.key)
        object_id = str(p.object_id) if model_ids and p.object_id is not None else ""
        points.append(GroundedPoint(stamp_ns=stamps[i], x=p.x / 1000.0 * width, y=p.y / 1000.0 * height,
                                    label=parsed.label, object_id=object_id))
    return points, dropped
