"""Scores replay results (results.jsonl) against a scenario's ground truth (scenario.json).

Metrics (definitions in docs/ground_truth.md):
- points (point queries): point_hit_rate = point_precision = hits / predicted points, where a hit lies within
  `radius` (default 5% of the image diagonal) of a visible object of the query on the point's stamp;
  point_recall = visible (object, stamp) pairs of the clip frames with a predicted point within radius.
- count: count_mae = mean |count - distinct query objects visible in the clip's frames|.
- tracks: CLEAR-MOT per stamp (latest reported trajectory point of each track wins), mota, id_switches,
  id_switches_per_track_per_min; track_point_hit_rate = trajectory points within `radius` of a visible object of
  the query on their stamp / trajectory points (the pointing accuracy of tracks, whatever their ids).
- events: final spans (last report of each event id) matched one-to-one to ground-truth events that overlap in
  time; event_precision/recall/f1 and mean start/end errors in seconds.
A result's clip frames are not stored, so they are rebuilt as the `num_frames` ground-truth frames nearest to an
even spread over [clip_start, clip_end] (exact for the replay of a regular-rate bag).
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.serialization import result_from_dict
from ..core.types import NS_PER_S, QueryResult, TaskKind
from .evaluate_3d import add_3d_metrics
from .scenario import GroundTruth


def load_results(path: str | Path) -> list[QueryResult]:
    """QueryResults from a JSONL file (blank lines and a truncated last line are skipped)."""
    results = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            results.append(result_from_dict(json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # an interrupted run's partial last line
            raise
    return results


def clip_stamps(truth: GroundTruth, r: QueryResult) -> list[int]:
    """The ground-truth frames that most likely made up the result's clip."""
    lo = bisect.bisect_left(truth.frames, r.clip_start_ns)
    hi = bisect.bisect_right(truth.frames, r.clip_end_ns)
    inside = truth.frames[lo:hi]
    if not inside:
        return []
    targets = np.linspace(r.clip_start_ns, r.clip_end_ns, max(r.num_frames, 1))
    arr = np.array(inside, dtype=np.int64)
    return sorted({int(arr[np.abs(arr - t).argmin()]) for t in targets})


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def eval_points(truth: GroundTruth, results: list[QueryResult], objects: list[str], radius: float) -> dict:
    hits = preds = covered = total = 0
    for r in results:
        for p in r.points:
            preds += 1
            gts = [g for o in objects if (g := truth.visible(o, p.stamp_ns))]
            hits += any(_dist((p.x, p.y), g) <= radius for g in gts)
        by_stamp = defaultdict(list)
        for p in r.points:
            by_stamp[p.stamp_ns].append((p.x, p.y))
        for s in clip_stamps(truth, r):
            for o in objects:
                g = truth.visible(o, s)
                if g is not None:
                    total += 1
                    covered += any(_dist(q, g) <= radius for q in by_stamp[s])
    precision, recall = _ratio(hits, preds), _ratio(covered, total)
    return {"point_hit_rate": precision, "point_precision": precision, "point_recall": recall,
            "points_predicted": preds, "points_hit": hits, "gt_points": total}


def eval_count(truth: GroundTruth, results: list[QueryResult], objects: list[str]) -> dict:
    errors = []
    for r in results:
        gt = len({o for s in clip_stamps(truth, r) for o in objects if truth.visible(o, s) is not None})
        errors.append(abs((r.count or 0) - gt))
    return {"count_mae": float(np.mean(errors)) if errors else None, "count_exact": _ratio(
        sum(e == 0 for e in errors), len(errors)), "count_answers": len(errors)}


def eval_tracks(truth: GroundTruth, results: list[QueryResult], objects: list[str], radius: float) -> dict:
    hyp: dict[int, dict[str, tuple[float, float]]] = defaultdict(dict)
    stamps: set[int] = set()
    for r in results:
        stamps.update(clip_stamps(truth, r))
        for track in r.tracks:
            for p in track.trajectory:
                hyp[p.stamp_ns][track.id] = (p.x, p.y)
    fn = fp = idsw = matches = gt_total = points = points_hit = 0
    last: dict[str, str] = {}
    seen_objects: set[str] = set()
    for s in sorted(stamps):
        gts = {o: g for o in objects if (g := truth.visible(o, s)) is not None}
        hs = dict(hyp.get(s, {}))
        points += len(hs)
        points_hit += sum(any(_dist(h, g) <= radius for g in gts.values()) for h in hs.values())
        gt_total += len(gts)
        seen_objects.update(gts)
        pairs: dict[str, str] = {}
        for o, g in gts.items():  # keep last correspondences that are still valid (CLEAR-MOT)
            t = last.get(o)
            if t in hs and t not in pairs.values() and _dist(hs[t], g) <= radius:
                pairs[o] = t
        candidates = sorted((_dist(h, g), o, t) for o, g in gts.items() for t, h in hs.items()
                            if o not in pairs and t not in pairs.values() and _dist(h, g) <= radius)
        for _, o, t in candidates:
            if o not in pairs and t not in pairs.values():
                pairs[o] = t
        for o, t in pairs.items():
            if o in last and last[o] != t:
                idsw += 1
            last[o] = t
        matches += len(pairs)
        fn += len(gts) - len(pairs)
        fp += len(hs) - len(pairs)
    minutes = (max(stamps) - min(stamps)) / NS_PER_S / 60 if len(stamps) > 1 else 0.0
    per_track_min = idsw / len(seen_objects) / minutes if seen_objects and minutes > 0 else None
    return {"mota": 1 - (fn + fp + idsw) / gt_total if gt_total else None,
            "track_point_hit_rate": _ratio(points_hit, points), "track_points": points, "id_switches": idsw,
            "id_switches_per_track_per_min": per_track_min, "track_false_negatives": fn,
            "track_false_positives": fp, "track_matches": matches, "gt_track_points": gt_total,
            "gt_tracks": len(seen_objects)}


def eval_events(truth: GroundTruth, results: list[QueryResult], spec: dict) -> dict:
    final: dict[str, tuple[int, int]] = {}
    for r in results:
        for e in r.events:
            final[e.id] = (e.start_ns, e.end_ns)
    if not results:
        return {}
    lo, hi = min(r.clip_start_ns for r in results), max(r.clip_end_ns for r in results)
    gts = [(e["start_ns"], e["end_ns"]) for e in truth.query_events(spec) if e["end_ns"] >= lo and e["start_ns"] <= hi]
    preds = sorted(final.values())
    candidates = sorted(
        (-(min(pe, ge) - max(ps, gs)), abs(ps - gs), i, j)
        for i, (ps, pe) in enumerate(preds) for j, (gs, ge) in enumerate(gts) if min(pe, ge) >= max(ps, gs))
    used_p: set[int] = set()
    used_g: set[int] = set()
    start_err, end_err = [], []
    for _, _, i, j in candidates:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            start_err.append(abs(preds[i][0] - gts[j][0]) / NS_PER_S)
            end_err.append(abs(preds[i][1] - gts[j][1]) / NS_PER_S)
    tp = len(used_p)
    precision, recall = _ratio(tp, len(preds)), _ratio(tp, len(gts))
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (
        0.0 if preds or gts else None)
    return {"event_precision": precision, "event_recall": recall, "event_f1": f1, "events_predicted": len(preds),
            "events_gt": len(gts), "events_matched": tp,
            "event_start_error_s": float(np.mean(start_err)) if start_err else None,
            "event_end_error_s": float(np.mean(end_err)) if end_err else None}


_OVERALL = ("point_hit_rate", "point_precision", "point_recall", "count_mae", "mota", "track_point_hit_rate",
            "id_switches",
            "id_switches_per_track_per_min", "event_precision", "event_recall", "event_f1", "event_start_error_s",
            "event_end_error_s")


def evaluate(results: list[QueryResult], truth: GroundTruth, *, radius_frac: float = 0.05) -> dict[str, Any]:
    """Metrics per query and overall (the mean over the queries that have each metric)."""
    radius = radius_frac * truth.diagonal
    by_query: dict[str, list[QueryResult]] = defaultdict(list)
    for r in results:
        by_query[r.query.id].append(r)
    per_query: dict[str, dict] = {}
    skipped = []
    for qid, rs in by_query.items():
        spec = truth.query_for(qid, rs[0].query.text)
        if spec is None:
            skipped.append(qid)
            continue
        objects, task = list(spec.get("objects", [])), rs[0].query.task
        metrics: dict[str, Any] = {"task": task.value, "answers": len(rs)}
        if task == TaskKind.POINT:
            metrics.update(eval_points(truth, rs, objects, radius))
        elif task == TaskKind.COUNT:
            metrics.update(eval_count(truth, rs, objects))
        elif task == TaskKind.TRACK:
            metrics.update(eval_tracks(truth, rs, objects, radius))
        elif task == TaskKind.EVENT:
            metrics.update(eval_events(truth, rs, spec))
        per_query[qid] = metrics
    overall: dict[str, Any] = {}
    for key in _OVERALL:
        values = [m[key] for m in per_query.values() if m.get(key) is not None]
        if key == "id_switches":
            overall[key] = int(sum(values)) if values else None
        else:
            overall[key] = float(np.mean(values)) if values else None
    add_3d_metrics(results, truth, radius, per_query, overall)  # 3D error when the scenario has depth truth
    model_ids = sorted({r.model_id for r in results})
    return {"model": ",".join(model_ids), "radius_px": radius, "results": len(results), "overall": overall,
            "per_query": per_query, "skipped_queries": skipped}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_table(report: dict[str, Any]) -> str:
    """Readable table of a report from `evaluate`."""
    lines = [f"evaluation of model {report['model']} ({report['results']} results, hit radius "
             f"{report['radius_px']:.1f} px)"]
    if report["model"] == "oracle":
        lines.append("  (oracle = evaluation instrument answering from ground truth, not a model)")
    for qid, m in report["per_query"].items():
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in m.items() if k not in ("task",))
        lines.append(f"  {qid:<20} {m['task']:<6} {shown}")
    lines.append("  overall: " + ", ".join(f"{k}={_fmt(v)}" for k, v in report["overall"].items()))
    if report["skipped_queries"]:
        lines.append("  not in ground truth (skipped): " + ", ".join(report["skipped_queries"]))
    return "\n".join(lines)
