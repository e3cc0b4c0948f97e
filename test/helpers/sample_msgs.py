"""One non-trivial instance of every molmo2_ros interface type, and a JSON-friendly view of messages.

Used in-process by test_interfaces.py and in the publisher/subscriber processes of
test_interfaces_pubsub.py (run as scripts, so this module imports nothing from the test package).
Float fields hold values that float32 represents exactly, so round trips compare equal.
"""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from molmo2_ros.action import Query
from molmo2_ros.msg import Answer, Event, GroundedPoint, PointArray, StandingQuery, Track, TrackArray
from molmo2_ros.srv import ManageQueries

FRAME_ID = "camera_color_optical_frame"


def _t(sec: int, nanosec: int) -> Time:
    return Time(sec=sec, nanosec=nanosec)


def _header(sec: int, nanosec: int) -> Header:
    return Header(stamp=_t(sec, nanosec), frame_id=FRAME_ID)


def grounded_point(i: int = 1, object_id: str = "") -> GroundedPoint:
    return GroundedPoint(
        stamp=_t(1_700_000_000 + i, 500_000_000 + i),
        x=100.5 + i,
        y=480.25 - i,
        label="red ball",
        object_id=object_id or str(i),
    )


def point_array() -> PointArray:
    return PointArray(
        header=_header(1_700_000_003, 250_000_000),
        query_id="ball",
        query="red ball",
        image_width=1920,
        image_height=1080,
        clip_start=_t(1_700_000_000, 1),
        clip_end=_t(1_700_000_003, 250_000_000),
        points=[grounded_point(1), grounded_point(2), grounded_point(3)],
        count=3,
        confidence=-0.125,
    )


def track(n: int = 7, status: int = Track.STATUS_TRACKED) -> Track:
    tid = f"q_ball/r1/t{n}"
    return Track(
        id=tid,
        label="red ball",
        status=status,
        first_seen=_t(1_700_000_001, 0),
        last_seen=_t(1_700_000_002, 999_999_999),
        trajectory=[grounded_point(i, object_id=tid) for i in range(1, 5)],
    )


def track_array() -> TrackArray:
    return TrackArray(
        header=_header(1_700_000_003, 0),
        query_id="ball",
        query="red ball",
        image_width=640,
        image_height=480,
        tracks=[track(7, Track.STATUS_NEW), track(8, Track.STATUS_ENDED)],
        confidence=-2.5,
    )


def event() -> Event:
    return Event(
        header=_header(1_700_000_004, 10),
        id="q_fall/e3",
        query_id="fall",
        query="a ball falls off the table",
        description="the ball rolls off the edge and falls — café ✓",
        start=_t(1_700_000_002, 500_000_000),
        end=_t(1_700_000_003, 0),
        state=Event.STATE_ONGOING,
        evidence=[grounded_point(5), grounded_point(6)],
    )


def answer() -> Answer:
    return Answer(
        header=_header(1_700_000_005, 0),
        query_id="what",
        query="What is the robot holding?",
        task=StandingQuery.TASK_QUESTION,
        text='A cup. <points coords="0.5 1 100 200">cup</points>',
        clip_start=_t(1_700_000_000, 0),
        clip_end=_t(1_700_000_005, 0),
        frame_stamps=[_t(1_700_000_000, 0), _t(1_700_000_002, 500_000_000), _t(1_700_000_005, 0)],
        num_frames=3,
        num_visual_tokens=1296,
        model_id="allenai/Molmo2-8B",
        inference_time=0.75,
        confidence=-0.0625,
    )


def standing_query(qid: str = "ball", task: str = StandingQuery.TASK_TRACK) -> StandingQuery:
    return StandingQuery(id=qid, task=task, text="red ball", topic=f"~/{task}s/{qid}")


# Every message type with its sample, keyed by type name.
def sample_messages() -> dict[str, object]:
    return {
        "GroundedPoint": grounded_point(1, object_id="q_ball/t1"),
        "PointArray": point_array(),
        "Track": track(),
        "TrackArray": track_array(),
        "Event": event(),
        "Answer": answer(),
        "StandingQuery": standing_query(),
    }


def sample_service_and_action() -> dict[str, object]:
    return {
        "ManageQueries.Request": ManageQueries.Request(op=ManageQueries.Request.OP_ADD, query=standing_query("cup", "point")),
        "ManageQueries.Response": ManageQueries.Response(
            success=True,
            message="added cup",
            queries=[standing_query("ball"), standing_query("cup", StandingQuery.TASK_POINT)],
        ),
        "Query.Goal": Query.Goal(
            prompt="red ball",
            task=StandingQuery.TASK_COUNT,
            start=_t(1_700_000_000, 0),
            end=_t(1_700_000_004, 500_000_000),
            max_new_tokens=128,
        ),
        "Query.Result": Query.Result(
            success=True,
            message="ok",
            answer=answer(),
            points=point_array(),
            tracks=track_array(),
            events=[event(), event()],
        ),
        "Query.Feedback": Query.Feedback(stage="generating", elapsed=1.5),
    }


def to_dict(value):
    """Plain-Python view of a ROS message (nested dicts/lists), for JSON and readable comparisons."""
    if hasattr(value, "get_fields_and_field_types"):
        return {name: to_dict(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and array.array of primitive fields
        return value.tolist()
    if isinstance(value, bytes):
        return list(value)
    return value
