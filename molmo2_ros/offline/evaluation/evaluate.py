"""Scores replay results (results.jsonl) against a scenario's ground truth (scenario.json).

Metrics (definitions in docs/ground_truth.md):
- points (point queries): point_hit_rate = point_precision = hits / predicted points, where a hit lies within
  `radius` (default 5% of the image diagonal) of a visible object of the query on the point's stamp;
  point_recall = visible (object, stamp) pairs of the clip frames with a predicted point within radius.
- count: count_mae = mean |count - distinct query objects visible in the clip's frames|.
- tracks: CLEAR-MOT per stamp (latest reported trajectory point of each track wins): a correspondence of the
  previous stamps is kept while within `radius`, the other objects and tracks are matched by a minimum-cost
  one-to-one assignment (most matches, then least summed distance; scipy's Hungarian solver); mota,
  id_switches, id_switches_per_track_per_min; track_point_hit_rate = trajectory points within `radius` of a
  visible object of the query on their stamp / trajectory points (the pointing accuracy of tracks, whatever
  their ids). test_offline_eval cross-checks mota and id_switches against py-motmetrics.
- events: final spans (last report of each event id) matched one-to-one to ground-truth events that overlap in
  time; event_precision/recall/f1 and mean start/end errors in seconds.
A result's clip frames are the stamps it records (`QueryResult.frame_stamps_ns`, the frames fed to the model);
results written before those were recorded are refused with a clear error.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from molmo2_ros.core.serialization import result_from_dict
from molmo2_ros.core.tracks import min_cost_matching
from molmo2_ros.core.types import NS_PER_S, QueryResult, TaskKind
from molmo2_ros.offline.evaluation.evaluate_3d import add_3d_metrics
from molmo2_ros.offline.data.scenario import GroundTruth


class ResultsError(ValueError):
    """results.jsonl cannot be scored; the message says why and what to do."""


def load_results(path: str | Path) -> list[QueryResult]:
    """QueryResults from a JSONL file (blank lines and a truncated last line are skipped).

    Raises ResultsError for a line without the stamps of the frames fed to the model (an older replay)."""
    results = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # an interrupted run's partial last line
            raise
        if isinstance(data, dict) and "frame_stamps_ns" not in data:
            raise ResultsError(f"{path} line {i + 1} has no frame_stamps_ns: it was written by an older molmo2_ros "
                               "that did not record which frames the model saw; replay the bag again to score it")
        results.append(result_from_dict(data))
    return results


def clip_stamps(r: QueryResult) -> list[int]:
    """Stamps of the frames fed to the model for this result."""
    if not r.frame_stamps_ns and not r.closing:
        raise ResultsError(f"result {r.query.id}/clip {r.clip_index} has no frame stamps (an older replay): "
                           "replay the bag again to score it")
    return r.frame_stamps_ns


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
        for s in clip_stamps(r):
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
        gt = len({o for s in clip_stamps(r) for o in objects if truth.visible(o, s) is not None})
        errors.append(abs((r.count or 0) - gt))
    return {"count_mae": float(np.mean(errors)) if errors else None, "count_exact": _ratio(
        sum(e == 0 for e in errors), len(errors)), "count_answers": len(errors)}


def eval_tracks(truth: GroundTruth, results: list[QueryResult], objects: list[str], radius: float) -> dict:
    hyp: dict[int, dict[str, tuple[float, float]]] = defaultdict(dict)
    stamps: set[int] = set()
    for r in results:
        stamps.update(clip_stamps(r))
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
        free_o = [o for o in gts if o not in pairs]
        free_t = [t for t in hs if t not in pairs.values()]
        cost = np.array([[d if (d := _dist(hs[t], gts[o])) <= radius else np.inf for t in free_t] for o in free_o],
                        dtype=float).reshape(len(free_o), len(free_t))
        pairs.update((free_o[i], free_t[j]) for i, j in min_cost_matching(cost))
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
        metrics: dict[str, Any] = {"task": task.value, "answers": sum(not r.closing for r in rs)}
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
