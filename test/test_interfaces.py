"""The generated molmo2_ros interfaces import, keep their constants, and survive CDR serialization."""

from __future__ import annotations

import pytest
from rclpy.serialization import deserialize_message, serialize_message

from helpers.sample_msgs import sample_messages, sample_service_and_action, to_dict
from molmo2_ros.action import Query
from molmo2_ros.msg import Answer, Event, GroundedPoint, PointArray, StandingQuery, Track, TrackArray
from molmo2_ros.srv import ManageQueries

SAMPLES = {**sample_messages(), **sample_service_and_action()}


def test_every_interface_has_a_sample():
    expected = {
        "GroundedPoint", "PointArray", "Track", "TrackArray", "Event", "Answer", "StandingQuery",
        "ManageQueries.Request", "ManageQueries.Response", "Query.Goal", "Query.Result", "Query.Feedback",
    }
    assert set(SAMPLES) == expected


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip(name):
    msg = SAMPLES[name]
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 4  # 4 bytes = CDR encapsulation header only
    back = deserialize_message(data, type(msg))
    assert back == msg
    assert to_dict(back) == to_dict(msg)
    # Serializing the copy decodes to the same message again (the bytes themselves may differ: CDR alignment
    # padding is not zeroed by the serializer).
    assert deserialize_message(serialize_message(back), type(msg)) == msg


def test_round_trip_keeps_nested_content():
    result = deserialize_message(serialize_message(SAMPLES["Query.Result"]), Query.Result)
    assert result.tracks.tracks[1].status == Track.STATUS_ENDED
    assert result.tracks.tracks[0].trajectory[3].object_id == "q_ball/r1/t7"
    assert result.points.points[2].stamp.sec == 1_700_000_003
    assert result.points.points[2].stamp.nanosec == 500_000_003
    assert [t.nanosec for t in result.answer.frame_stamps] == [0, 500_000_000, 0]
    assert result.answer.confidence == -0.0625 and result.points.confidence == -0.125
    assert result.events[0].description.endswith("café ✓")
    assert result.answer.inference_time == pytest.approx(0.75)
    assert result.points.header.frame_id == "camera_color_optical_frame"


def test_empty_messages_round_trip():
    for cls in (GroundedPoint, PointArray, Track, TrackArray, Event, Answer, StandingQuery,
                ManageQueries.Request, ManageQueries.Response, Query.Goal, Query.Result, Query.Feedback):
        msg = cls()
        assert deserialize_message(serialize_message(msg), cls) == msg


def test_constants():
    assert Track.STATUS_NEW == 0
    assert Track.STATUS_TRACKED == 1
    assert Track.STATUS_LOST == 2
    assert Track.STATUS_ENDED == 3
    assert Event.STATE_STARTED == 0
    assert Event.STATE_ONGOING == 1
    assert Event.STATE_ENDED == 2
    assert PointArray.COUNT_NOT_REQUESTED == -1
    assert StandingQuery.TASK_POINT == "point"
    assert StandingQuery.TASK_COUNT == "count"
    assert StandingQuery.TASK_TRACK == "track"
    assert StandingQuery.TASK_EVENT == "event"
    assert StandingQuery.TASK_CAPTION == "caption"
    assert StandingQuery.TASK_QUESTION == "question"
    assert ManageQueries.Request.OP_LIST == 0
    assert ManageQueries.Request.OP_ADD == 1
    assert ManageQueries.Request.OP_REMOVE == 2


def test_task_constants_match_core_task_kind():
    from molmo2_ros.core.types import TaskKind

    task_constants = {getattr(StandingQuery, n) for n in dir(StandingQuery) if n.startswith("TASK_")}
    assert task_constants == {k.value for k in TaskKind}


def test_field_types():
    assert GroundedPoint.get_fields_and_field_types() == {
        "stamp": "builtin_interfaces/Time", "x": "float", "y": "float", "label": "string", "object_id": "string",
    }
    assert PointArray.get_fields_and_field_types()["points"] == "sequence<molmo2_ros/GroundedPoint>"
    assert PointArray.get_fields_and_field_types()["count"] == "int32"
    assert Track.get_fields_and_field_types()["status"] == "uint8"
    assert "track_ids" not in Event.get_fields_and_field_types()  # never filled: removed (issue 15)
    assert Answer.get_fields_and_field_types()["frame_stamps"] == "sequence<builtin_interfaces/Time>"
    for cls in (Answer, PointArray, TrackArray):
        assert cls.get_fields_and_field_types()["confidence"] == "float"
    assert Query.Result.get_fields_and_field_types()["events"] == "sequence<molmo2_ros/Event>"


def test_generated_and_source_modules_share_one_package():
    import molmo2_ros
    import molmo2_ros.core.types
    import molmo2_ros.msg

    # The generated interfaces come from the colcon install space (install/, or install-jazzy/ for Jazzy) ...
    assert any(part in ("install", "install-jazzy") for part in molmo2_ros.msg.__file__.split("/"))
    # ... while our own modules come from the first molmo2_ros folder on the path (the source tree under
    # scripts/with_ros), and both hang off the same package object.
    assert molmo2_ros.core.types.__file__.startswith(molmo2_ros.__path__[0])
