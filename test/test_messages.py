"""One result -> message mapping, 2D and 3D, for the node (rclpy classes) and the offline bag (rosbags classes)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from molmo2_ros.core import messages
from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Lifted3D, LiftStatus, Point3D, Query,
                                   QueryResult, TaskKind, Track, TrackStatus)
from molmo2_ros.offline.replay import ResultBagWriter
from molmo2_ros.ros import convert

T = 1_700_000_000_000_000_000
P = GroundedPoint(T + 100, 12.5, 40.25, "ball", "")


def make_result(task: TaskKind, **kw) -> QueryResult:
    return QueryResult(query=Query(f"q_{task.value}", task, "ball"), clip_index=4, clip_start_ns=T,
                       clip_end_ns=T + 500, frame_id="cam", width=640, height=480, num_frames=3,
                       num_visual_tokens=243, text="<points ...>", model_id="m", inference_s=0.5,
                       frame_stamps_ns=[T, T + 100, T + 500], **kw)


RESULTS = {
    TaskKind.POINT: make_result(TaskKind.POINT, points=[P], confidence=-0.5),
    TaskKind.COUNT: make_result(TaskKind.COUNT, points=[P], count=1),
    TaskKind.TRACK: make_result(TaskKind.TRACK, tracks=[Track("q_track/t1", "ball", TrackStatus.NEW, T, T + 100, [
        GroundedPoint(T + 100, 1.0, 2.0, "ball", "q_track/t1")])]),
    TaskKind.EVENT: make_result(TaskKind.EVENT, points=[P], events=[
        Event("q_event/e1", "q_event", "ball", "ball falls", T + 100, T + 100, EventState.STARTED, [P])]),
    TaskKind.CAPTION: make_result(TaskKind.CAPTION),
    TaskKind.QUESTION: make_result(TaskKind.QUESTION),
}


def lifted(r: QueryResult) -> QueryResult:
    """`r` with a 3D side: the first point of everything valid, the others without depth."""
    def lift(points: list[GroundedPoint]) -> list[Point3D]:
        return [Point3D(p, LiftStatus.OK, (0.25, -0.5, 1.75), 0.75) if i == 0 else Point3D(p, LiftStatus.NO_DEPTH)
                for i, p in enumerate(points)]

    return QueryResult(**{**r.__dict__, "lifted": Lifted3D(
        "cam_optical", points=lift(r.points), tracks={t.id: lift(t.trajectory) for t in r.tracks},
        events={e.id: lift(e.evidence + [P]) for e in r.events})})


def test_topic_names_relative_to_the_node_and_in_the_bag():
    names = {t: messages.output_topics(r.query) for t, r in RESULTS.items()}
    assert [(names[t].main, names[t].main_type, names[t].answer) for t in TaskKind] == [
        ("~/points/q_point", "PointArray", "~/answers/q_point"),
        ("~/counts/q_count", "PointArray", "~/answers/q_count"),
        ("~/tracks/q_track", "TrackArray", "~/answers/q_track"),
        ("~/events/q_event", "Event", "~/answers/q_event"),
        ("~/answers/q_caption", "Answer", None),
        ("~/answers/q_question", "Answer", None)]
    assert messages.output_topics(Query("p", TaskKind.TRACK, "x", topic="/planner/people")).main == "/planner/people"
    assert [messages.bag_topic(n) for n in ("~/counts/c", "planner/people", "/abs/x")] == [
        "/molmo2/counts/c", "/planner/people", "/abs/x"]


def test_3d_topic_names():
    assert [(names.lifted, names.lifted_type) for names in (messages.output_topics(r.query) for r in
                                                             RESULTS.values())] == [
        ("~/points3d/q_point", "PointArray3D"), ("~/counts3d/q_count", "PointArray3D"),
        ("~/tracks3d/q_track", "TrackArray3D"), ("~/events3d/q_event", "Event3D"), (None, None), (None, None)]
    own = messages.output_topics(Query("p", TaskKind.TRACK, "x", topic="planner/people"), camera="wrist")
    assert own.by_output(depth=True)["3d"] == ("planner/people/3d", "TrackArray3D")
    assert messages.bag_topic(own.lifted) == "/planner/people/3d"
    assert "3d" not in own.by_output(depth=False)
    wrist = messages.output_topics(Query("c", TaskKind.COUNT, "cups"), camera="wrist")
    assert messages.bag_topic(wrist.lifted) == "/molmo2/wrist/counts3d/c"


def test_camera_topics_live_under_the_camera_name():
    topics = messages.output_topics(Query("c", TaskKind.COUNT, "cups"), camera="wrist")
    assert (topics.main, topics.answer) == ("~/wrist/counts/c", "~/wrist/answers/c")
    assert messages.bag_topic(topics.main) == "/molmo2/wrist/counts/c"


@pytest.mark.parametrize("task, depth", [(t, False) for t in TaskKind] + [(t, True) for t in TaskKind])
def test_node_and_bag_messages_are_the_same(tmp_path, task, depth):
    """The bag writer's CDR bytes decode with rclpy to exactly the node's message, 3D sides included."""
    r = lifted(RESULTS[task]) if depth else RESULTS[task]
    node_msgs = convert.result_messages(r)
    writer = ResultBagWriter(tmp_path / "bag")
    try:
        bag_msgs = messages.result_messages(writer.types, r)
        assert [(m.output, m.type_name) for m in bag_msgs] == [(m.output, m.type_name) for m in node_msgs]
        has_3d = depth and task in messages.TYPE_3D
        assert [m.type_name for m in node_msgs if m.output == "3d"] == ([messages.TYPE_3D[task]] if has_3d else [])
        for ours, theirs in zip(bag_msgs, node_msgs):
            raw = writer.store.serialize_cdr(ours.msg, messages.full_name(ours.type_name))
            back = deserialize_message(bytes(raw), type(theirs.msg))
            assert serialize_message(back) == serialize_message(theirs.msg)  # NaN positions and confidences too
    finally:
        writer.close()


def test_answer_carries_frame_stamps_and_optional_confidence():
    msg = convert.answer_msg(RESULTS[TaskKind.POINT])
    assert [(s.sec, s.nanosec) for s in msg.frame_stamps] == [(1_700_000_000, 0), (1_700_000_000, 100),
                                                              (1_700_000_000, 500)]
    assert msg.confidence == -0.5 and convert.point_array_msg(RESULTS[TaskKind.POINT]).confidence == -0.5
    none = convert.answer_msg(RESULTS[TaskKind.COUNT])
    assert math.isnan(none.confidence)  # the engine gave none
    assert np.isnan(deserialize_message(serialize_message(none), type(none)).confidence)


def test_closing_results_publish_only_what_they_end():
    ended = Track("q_track/t1", "ball", TrackStatus.ENDED, T, T + 100, [])
    closing = make_result(TaskKind.TRACK, tracks=[ended], closing=True)
    [out] = convert.result_messages(closing)
    assert out.output == "main" and out.msg.tracks[0].status == TrackStatus.ENDED
    event = Event("q_event/e1", "q_event", "ball", "ball", T, T + 100, EventState.ENDED, [])
    [out] = convert.result_messages(make_result(TaskKind.EVENT, events=[event], closing=True))
    assert out.type_name == "Event" and out.msg.state == EventState.ENDED
    assert convert.result_messages(make_result(TaskKind.TRACK, closing=True)) == []


def test_3d_messages_carry_the_lifted_points():
    [msg] = [m.msg for m in convert.result_messages(lifted(RESULTS[TaskKind.POINT])) if m.output == "3d"]
    assert msg.header.frame_id == "cam_optical" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        1_700_000_000, 500)
    [p] = msg.points
    assert p.valid and (p.position.x, p.position.y, p.position.z) == (0.25, -0.5, 1.75) and p.point.x == 12.5
    [event] = [m.msg for m in convert.result_messages(lifted(RESULTS[TaskKind.EVENT])) if m.output == "3d"]
    assert event.id == "q_event/e1" and [e.valid for e in event.evidence] == [True, False]
    assert math.isnan(event.evidence[1].position.z) and event.evidence[1].status == LiftStatus.NO_DEPTH


def test_the_shared_mapping_and_the_offline_path_import_without_rclpy():
    code = ("import sys; import molmo2_ros.core.messages, molmo2_ros.offline.replay, "
            "molmo2_ros.offline.evaluation.evaluate; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'builtin_interfaces', 'std_msgs')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
