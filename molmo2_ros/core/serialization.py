"""QueryResult <-> plain dicts (JSON lines of the replay tool, inputs of the evaluator)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .types import Event, EventState, GroundedPoint, Query, QueryResult, TaskKind, Track, TrackStatus


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
    return data


def _points(items: list[dict]) -> list[GroundedPoint]:
    return [GroundedPoint(**p) for p in items]


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
    return QueryResult(query=Query(q["id"], TaskKind(q["task"]), q["text"], q.get("topic", "")), points=points,
                       tracks=tracks, events=events, **data)
