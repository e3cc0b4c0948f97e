"""QueryResult round-trips through JSON."""

import json

from molmo2_ros.core.serialization import result_from_dict, result_to_dict
from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Query, QueryResult, TaskKind, Track,
                                   TrackStatus)


def test_round_trip():
    p = GroundedPoint(1_700_000_000_500_000_000, 12.5, 300.0, "ball", "trk/t1")
    result = QueryResult(Query("trk", TaskKind.TRACK, "ball"), 3, 1, 2, "cam", 640, 480, 16, 1600, "text", "m", 0.2,
                         points=[p], count=None, tracks=[Track("trk/t1", "ball", TrackStatus.LOST, 1, 2, [p])],
                         events=[Event("e/e1", "e", "q", "d", 1, 2, EventState.ENDED, [p], ["trk/t1"])],
                         dropped={"coord_out_of_range": 2})
    data = json.loads(json.dumps(result_to_dict(result)))
    assert data["query"]["task"] == "track" and data["tracks"][0]["status"] == 2
    assert result_from_dict(data) == result
