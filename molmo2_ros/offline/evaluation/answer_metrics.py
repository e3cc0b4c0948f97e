"""Answer-level metrics next to `evaluate.py`: does the model say "none" when nothing it was asked about is in
sight, and the headline figures (targets) of a report.

- absence (point and count queries): over the answers whose clip frames show none of the query's objects
  (hidden behind the occluder, outside the image, or not in the scene at all), `absence_correct` is the share
  that name nothing (no point, count 0 or missing); `present_said_none` is the share of the other answers that
  name nothing although an object is in sight.
- `headline`: the figures issue 17 sets targets for, pooled over a report's queries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from molmo2_ros.core.types import QueryResult, TaskKind
from molmo2_ros.offline.evaluation.evaluate import clip_stamps
from molmo2_ros.offline.data.scenario import GroundTruth


def absence(truth: GroundTruth, results: list[QueryResult], objects: list[str]) -> dict[str, Any]:
    """Absence metrics of one point or count query's answers."""
    absent = correct = present = said_none = 0
    for r in results:
        seen = any(truth.visible(o, s) is not None for s in clip_stamps(r) for o in objects)
        empty = not r.points and not r.count
        if seen:
            present += 1
            said_none += empty
        else:
            absent += 1
            correct += empty
    return {"absent_answers": absent, "absence_correct": correct / absent if absent else None,
            "absence_correct_n": correct, "present_answers": present,
            "present_said_none": said_none / present if present else None}


def answer_metrics(results: list[QueryResult], truth: GroundTruth) -> dict[str, dict[str, Any]]:
    """Absence metrics per point or count query (by query id)."""
    by_query: dict[str, list[QueryResult]] = defaultdict(list)
    for r in results:
        by_query[r.query.id].append(r)
    out = {}
    for qid, rs in by_query.items():
        spec = truth.query_for(qid, rs[0].query.text)
        if spec is not None and rs[0].query.task in (TaskKind.POINT, TaskKind.COUNT):
            out[qid] = absence(truth, rs, list(spec.get("objects", [])))
    return out


def headline(report: dict[str, Any], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 17's figures from an `evaluate` report and `answer_metrics`: pointing (mean over point queries
    with predictions / with visible objects), absence (pooled over answers), exact counts (pooled), tracking
    and events (mean over queries)."""
    per = report["per_query"]

    def mean(key: str, task: str) -> float | None:
        values = [m[key] for m in per.values() if m["task"] == task and m.get(key) is not None]
        return sum(values) / len(values) if values else None

    absent = sum(m["absent_answers"] for m in extra.values())
    counts = [m for m in per.values() if m["task"] == "count" and m.get("count_answers")]
    exact = sum(round(m["count_exact"] * m["count_answers"]) for m in counts)
    n_counts = sum(m["count_answers"] for m in counts)
    return {
        "point_hit_rate": mean("point_hit_rate", "point"), "point_recall": mean("point_recall", "point"),
        "absence_correct": sum(m["absence_correct_n"] for m in extra.values()) / absent if absent else None,
        "absent_answers": absent,
        "count_exact": exact / n_counts if n_counts else None, "count_answers": n_counts,
        "count_mae": mean("count_mae", "count"),
        "mota": mean("mota", "track"), "id_switches_per_track_per_min": mean("id_switches_per_track_per_min", "track"),
        "event_f1": mean("event_f1", "event"), "event_start_error_s": mean("event_start_error_s", "event"),
        "event_end_error_s": mean("event_end_error_s", "event"),
    }
