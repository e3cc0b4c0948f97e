"""QueryResult <-> plain dicts (JSON lines of the replay tool, inputs of the evaluator)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .types import (Event, EventState, GroundedPoint, Lifted3D, LiftStatus, Point3D, Query, QueryResult, TaskKind,
                    Track, TrackStatus)


def result_to_dict(result: QueryResult) -> dict[str, Any]:
    """JSON-ready dict; enums become their values (task strings, status/state ints), a NaN confidence null
    (strict JSON has no NaN)."""
    data = dataclasses.asdict(result)
    data["query"]["task"] = result.query.task.value
    data["confidence"] = None if math.isnan(result.confidence) else result.confidence
    for track in data["tracks"]:
        track["status"] = int(track["status"])
    for event in data["events"]:
        event["state"] = int(event["state"])
    if result.lifted is not None:
        lifted = data["lifted"]
        for p in (*lifted["points"], *(p for group in ("tracks", "events") for ps in lifted[group].values()
                                        for p in ps)):
            p["status"] = int(p["status"])
    return data


def _points(items: list[dict]) -> list[GroundedPoint]:
    return [GroundedPoint(**p) for p in items]


def _points_3d(items: list[dict]) -> list[Point3D]:
    return [Point3D(point=GroundedPoint(**p["point"]), status=LiftStatus(p["status"]),
                    position=None if p["position"] is None else tuple(p["position"]),
                    valid_fraction=p["valid_fraction"]) for p in items]


def _lifted(data: dict[str, Any] | None) -> Lifted3D | None:
    if data is None:
        return None
    return Lifted3D(frame_id=data["frame_id"], points=_points_3d(data["points"]),
                    tracks={k: _points_3d(v) for k, v in data["tracks"].items()},
                    events={k: _points_3d(v) for k, v in data["events"].items()})


def result_from_dict(data: dict[str, Any]) -> QueryResult:
    """Inverse of result_to_dict."""
    data = dict(data)
    q = data.pop("query")
    tracks = [Track(**{**t, "status": TrackStatus(t["status"]), "trajectory": _points(t["trajectory"])})
              for t in data.pop("tracks")]
    events = [Event(**{**e, "state": EventState(e["state"]), "evidence": _points(e["evidence"])})
              for e in data.pop("events")]
    points = _points(data.pop("points"))
    if data.get("confidence") is None:
        data["confidence"] = math.nan
    lifted = _lifted(data.pop("lifted", None))
    return QueryResult(query=Query(q["id"], TaskKind(q["task"]), q["text"], q.get("topic", "")), points=points,
                       tracks=tracks, events=events, lifted=lifted, **data)
