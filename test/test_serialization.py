"""QueryResult round-trips through JSON."""

import json
import math

import pytest

from molmo2_ros.core.serialization import result_from_dict, result_to_dict
from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Query, QueryResult, TaskKind, Track,
                                   TrackStatus)

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)


def make_result(**kw) -> QueryResult:
    p = GroundedPoint(1_700_000_000_500_000_000, 12.5, 300.0, "ball", "trk/t1")
    return QueryResult(Query("trk", TaskKind.TRACK, "ball"), 3, 1, 2, "cam", 640, 480, 16, 1600, "text", "m", 0.2,
                       points=[p], count=None, tracks=[Track("trk/t1", "ball", TrackStatus.LOST, 1, 2, [p])],
                       events=[Event("e/e1", "e", "q", "d", 1, 2, EventState.ENDED, [p])],
                       dropped={"coord_out_of_range": 2}, frame_stamps_ns=[1, 2], **kw)


def test_round_trip():
    result = make_result(confidence=-0.25)
    data = json.loads(json.dumps(result_to_dict(result), allow_nan=False))
    assert data["query"]["task"] == "track" and data["tracks"][0]["status"] == 2
    assert data["frame_stamps_ns"] == [1, 2] and data["confidence"] == -0.25
    assert result_from_dict(data) == result


def test_missing_confidence_is_null_in_strict_json_and_nan_again():
    data = json.loads(json.dumps(result_to_dict(make_result()), allow_nan=False))
    assert data["confidence"] is None
    back = result_from_dict(data)
    assert math.isnan(back.confidence) and back.frame_stamps_ns == [1, 2] and not back.closing
