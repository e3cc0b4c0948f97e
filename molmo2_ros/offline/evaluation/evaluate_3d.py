"""3D error of replay results (QueryResult.lifted) against a scenario's 3D ground truth (scenario.json "depth",
written by `molmo2-ros generate --depth`).

A lifted point is scored when it is valid and its 2D point hits a visible object of its query (within the 2D hit
radius, nearest object on its stamp) whose centre is visible in depth: its error is the Euclidean distance in
metres between the lifted position and the object's 3D position on that stamp. Points come from point and count
results (every result's points), track trajectories and event evidence (the latest report of each (id, stamp)).
Keys per query and overall (all scored points pooled): error_3d_median_m, error_3d_p90_m, error_3d_max_m,
points_3d (lifted), points_3d_valid, points_3d_scored, points_3d_valid_rate, and points_3d_<status> for the points
without 3D.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from molmo2_ros.core.types import LiftStatus, Point3D, QueryResult, TaskKind
from molmo2_ros.offline.data.depth_world import truth_3d
from molmo2_ros.offline.data.scenario import GroundTruth


def _points_of(results: list[QueryResult]) -> list[Point3D]:
    """The lifted points to score: all points of point/count results, the latest report of each track trajectory
    and event evidence point."""
    points: list[Point3D] = []
    latest: dict[tuple[str, int], Point3D] = {}
    for r in results:
        if r.lifted is None:
            continue
        if r.query.task in (TaskKind.POINT, TaskKind.COUNT):
            points.extend(r.lifted.points)
        for owner, pts in (*r.lifted.tracks.items(), *r.lifted.events.items()):
            latest.update(((owner, p.point.stamp_ns), p) for p in pts)
    return points + list(latest.values())


def _score(points: list[Point3D], truth: GroundTruth, gt3d: dict, objects: list[str],
           radius: float) -> tuple[list[float], Counter]:
    errors: list[float] = []
    counts: Counter = Counter()
    for p in points:
        counts["points_3d"] += 1
        if p.status != LiftStatus.OK:
            counts[f"points_3d_{p.status.name.lower()}"] += 1
            continue
        counts["points_3d_valid"] += 1
        hits = [(math.hypot(p.point.x - g[0], p.point.y - g[1]), o) for o in objects
                if (g := truth.visible(o, p.point.stamp_ns)) is not None]
        hits = [h for h in hits if h[0] <= radius]
        if not hits:
            counts["points_3d_off_target"] += 1  # a 2D miss: its 3D error says nothing about lifting
            continue
        target = gt3d.get(min(hits)[1], {}).get(p.point.stamp_ns)
        if target is None:
            counts["points_3d_no_truth"] += 1  # the object's centre is covered in depth
            continue
        errors.append(math.dist(p.position, target))
    return errors, counts


def _metrics(errors: list[float], counts: Counter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "error_3d_median_m": float(np.median(errors)) if errors else None,
        "error_3d_p90_m": float(np.percentile(errors, 90)) if errors else None,
        "error_3d_max_m": float(np.max(errors)) if errors else None,
        "points_3d_scored": len(errors),
        "points_3d_valid_rate": counts["points_3d_valid"] / counts["points_3d"] if counts["points_3d"] else None}
    out.update(sorted(counts.items()))
    return out


def add_3d_metrics(results: list[QueryResult], truth: GroundTruth, radius: float, per_query: dict[str, dict],
                   overall: dict[str, Any]) -> None:
    """Add the 3D keys to `per_query` (queries of the ground truth with lifted results) and `overall` when the
    scenario has 3D ground truth; otherwise leave both unchanged."""
    gt3d = truth_3d(truth.data)
    if gt3d is None:
        return
    all_errors: list[float] = []
    all_counts: Counter = Counter()
    for qid, metrics in per_query.items():
        rs = [r for r in results if r.query.id == qid]
        spec = truth.query_for(qid, rs[0].query.text) if rs else None
        points = _points_of(rs)
        if spec is None or not points:
            continue
        errors, counts = _score(points, truth, gt3d, list(spec.get("objects", [])), radius)
        metrics.update(_metrics(errors, counts))
        all_errors += errors
        all_counts += counts
    overall.update({k: v for k, v in _metrics(all_errors, all_counts).items()
                    if k in ("error_3d_median_m", "error_3d_p90_m", "points_3d_valid_rate", "points_3d_scored")})
