"""The 3D interfaces: constants agree with the core's LiftStatus, messages survive CDR, and the conversion from
core results fills every field (positions NaN where there is no 3D; markers in the optical frame)."""

from __future__ import annotations

import math

from rclpy.serialization import deserialize_message, serialize_message

from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Lifted3D, LiftStatus, Point3D, Query,
                                   QueryResult, TaskKind, Track, TrackStatus)
from molmo2_ros.msg import Event3D, GroundedPoint3D, PointArray3D, Track3D, TrackArray3D
from molmo2_ros.ros import convert_3d

FRAME = "camera_color_optical_frame"


def test_status_constants_match_the_core():
    assert {s.name: int(s) for s in LiftStatus} == {
        n.removeprefix("STATUS_"): getattr(GroundedPoint3D, n) for n in dir(GroundedPoint3D) if n.startswith("STATUS_")}


def _result(task: TaskKind) -> QueryResult:
    a = GroundedPoint(1_000_000_001, 10.5, 20.25, "ball", "q/t3")
    b = GroundedPoint(2_000_000_002, 11.0, 21.0, "ball", "q/t3")
    r = QueryResult(query=Query("q", task, "ball"), clip_index=4, clip_start_ns=1_000_000_001,
                    clip_end_ns=2_000_000_002, frame_id=FRAME, width=64, height=48, num_frames=2,
                    num_visual_tokens=162, text="", model_id="m", inference_s=0.5)
    ok = Point3D(b, LiftStatus.OK, (0.25, -0.5, 1.75), 0.75)
    missing = Point3D(a, LiftStatus.NO_DEPTH)
    if task == TaskKind.TRACK:
        r.tracks = [Track("q/t3", "ball", TrackStatus.TRACKED, a.stamp_ns, b.stamp_ns, [a, b]),
                    Track("q/t1", "ball", TrackStatus.ENDED, a.stamp_ns, a.stamp_ns, [a])]
        r.lifted = Lifted3D(FRAME, tracks={"q/t3": [missing, ok], "q/t1": [missing]})
    elif task == TaskKind.EVENT:
        r.points = [a, b]
        r.events = [Event("q/e1", "q", "ball", "ball", a.stamp_ns, b.stamp_ns, EventState.ONGOING, [a, b])]
        r.lifted = Lifted3D(FRAME, points=[missing, ok], events={"q/e1": [missing, ok]})
    else:
        r.points = [a, b]
        r.lifted = Lifted3D(FRAME, points=[missing, ok])
    return r


def _round_trip(msg):
    back = deserialize_message(serialize_message(msg), type(msg))
    assert serialize_message(back) == serialize_message(msg)
    return back


def test_point_array_3d():
    msg = _round_trip(convert_3d.point_array3d_msg(_result(TaskKind.POINT)))
    assert isinstance(msg, PointArray3D) and msg.header.frame_id == FRAME and msg.query_id == "q"
    assert msg.header.stamp.sec == 2 and msg.header.stamp.nanosec == 2
    missing, ok = msg.points
    assert not missing.valid and missing.status == GroundedPoint3D.STATUS_NO_DEPTH and math.isnan(missing.position.x)
    assert ok.valid and (ok.position.x, ok.position.y, ok.position.z) == (0.25, -0.5, 1.75)
    assert ok.valid_fraction == 0.75 and ok.point.x == 11.0 and ok.point.stamp.nanosec == 2


def test_track_array_and_event_3d():
    msg = _round_trip(convert_3d.track_array3d_msg(_result(TaskKind.TRACK)))
    assert isinstance(msg, TrackArray3D) and isinstance(msg.tracks[0], Track3D)
    assert [t.id for t in msg.tracks] == ["q/t3", "q/t1"] and msg.tracks[1].status == 3
    assert [p.valid for p in msg.tracks[0].trajectory] == [False, True]
    r = _result(TaskKind.EVENT)
    event = _round_trip(convert_3d.event3d_msg(r.events[0], r.lifted.events["q/e1"], FRAME))
    assert isinstance(event, Event3D) and event.id == "q/e1" and event.state == 1
    assert event.header.stamp.sec == 2 and [p.valid for p in event.evidence] == [False, True]


def test_markers_in_the_optical_frame_with_lifetimes_and_track_ids():
    points = convert_3d.marker_array(_result(TaskKind.POINT), lifetime_s=2.5).markers
    assert len(points) == 1 and points[0].ns == "q" and points[0].header.frame_id == FRAME
    assert [(p.x, p.y, p.z) for p in points[0].points] == [(0.25, -0.5, 1.75)]  # the valid one on the newest frame
    assert points[0].lifetime.sec == 2 and points[0].lifetime.nanosec == 500_000_000
    tracks = convert_3d.marker_array(_result(TaskKind.TRACK), max_trail=8, lifetime_s=1.0).markers
    strip, head, *ended = tracks
    assert (strip.ns, strip.id, strip.type) == ("q/tracks", 3, strip.LINE_STRIP) and len(strip.points) == 1
    assert (head.ns, head.id, head.type) == ("q/heads", 3, head.SPHERE) and head.pose.position.z == 1.75
    assert {(m.ns, m.id, m.action) for m in ended} == {("q/tracks", 1, strip.DELETE), ("q/heads", 1, strip.DELETE)}
