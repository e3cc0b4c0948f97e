"""Conversions between ROS messages and the ROS-free core types.

Every output stamp is a source-frame stamp (never now()): headers carry the newest frame of the clip,
GroundedPoints the frame they lie on, frame_id is the camera's.
"""

from __future__ import annotations

import importlib

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import ImageMarker

from molmo2_ros.core import messages
from molmo2_ros.core.colours import id_colour
from molmo2_ros.core.queries import query_from_mapping
from molmo2_ros.core.tracks import split_id
from molmo2_ros.core.types import NS_PER_S, Event, GroundedPoint, Query, QueryResult, TaskKind, Track, TrackStatus
from molmo2_ros.msg import Answer as AnswerMsg
from molmo2_ros.msg import Event as EventMsg
from molmo2_ros.msg import GroundedPoint as GroundedPointMsg
from molmo2_ros.msg import PointArray as PointArrayMsg
from molmo2_ros.msg import StandingQuery as StandingQueryMsg
from molmo2_ros.msg import Track as TrackMsg
from molmo2_ros.msg import TrackArray as TrackArrayMsg


def message_class(full_name: str) -> type:
    """The generated rclpy class of a message type (`molmo2_ros/msg/PointArray` -> molmo2_ros.msg.PointArray)."""
    package, _, name = full_name.rpartition("/")
    return getattr(importlib.import_module(package.replace("/", ".")), name)


# rclpy's classes for the shared result -> message mapping (core/messages.py).
TYPES = messages.MessageTypes.resolve(message_class)


def _vision_types() -> messages.VisionTypes | None:
    """rclpy's vision_msgs classes for the standard outputs, or None when vision_msgs is not installed."""
    try:
        return messages.VisionTypes.resolve(message_class)
    except (ImportError, AttributeError):
        return None


# None when vision_msgs is not installed: the node then publishes no standard outputs (ros/outputs.py).
VISION_TYPES = _vision_types()


# ---- time ---------------------------------------------------------------------------------------------------
def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time(ns: int) -> Time:
    """builtin_interfaces/Time of a non-negative stamp in ns."""
    return messages.stamp(TYPES, ns)


def header(stamp_ns: int, frame_id: str) -> Header:
    return messages.header(TYPES, stamp_ns, frame_id)


def duration_msg(seconds: float) -> Duration:
    """builtin_interfaces/Duration of a non-negative time in s (a marker's lifetime)."""
    return Duration(sec=int(seconds), nanosec=int(round((seconds % 1) * NS_PER_S)))


# ---- images -------------------------------------------------------------------------------------------------
def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """An rgb8 sensor_msgs/Image (bytes assigned at once: fast)."""
    h, w = rgb.shape[:2]
    return Image(header=header(stamp_ns, frame_id), height=h, width=w, encoding="rgb8", is_bigendian=0,
                 step=w * 3, data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


# ---- queries ------------------------------------------------------------------------------------------------
def query_from_msg(msg: StandingQueryMsg, max_chars: int) -> Query:
    """A validated core Query (core/queries.py: the checks and messages of the `queries` parameter); ValueError says
    what is wrong."""
    return query_from_mapping({"id": msg.id, "task": msg.task, "text": msg.text, "topic": msg.topic}, max_chars)


def query_to_msg(query: Query) -> StandingQueryMsg:
    return StandingQueryMsg(id=query.id, task=query.task.value, text=query.text, topic=query.topic)


# ---- results (the mapping itself lives in core/messages.py, shared with the offline bag) ---------------------
def point_msg(p: GroundedPoint) -> GroundedPointMsg:
    return messages.point_msg(TYPES, p)


def point_array_msg(r: QueryResult) -> PointArrayMsg:
    return messages.point_array_msg(TYPES, r)


def track_msg(t: Track) -> TrackMsg:
    return messages.track_msg(TYPES, t)


def track_array_msg(r: QueryResult) -> TrackArrayMsg:
    return messages.track_array_msg(TYPES, r)


def event_msg(e: Event, frame_id: str) -> EventMsg:
    """Header stamp = source stamp of the latest evidence (the event's end)."""
    return messages.event_msg(TYPES, e, frame_id)


def answer_msg(r: QueryResult) -> AnswerMsg:
    return messages.answer_msg(TYPES, r)


def result_messages(r: QueryResult) -> list[messages.OutMessage]:
    """Every message a streamed result publishes (see core/messages.result_messages)."""
    return messages.result_messages(TYPES, r)


def detection_messages(r: QueryResult, box_px: float) -> list[messages.OutMessage]:
    """The standard outputs of a result (core/messages.detection_messages); [] without vision_msgs."""
    if VISION_TYPES is None:
        return []
    return messages.detection_messages(messages.VisionOptions(VISION_TYPES, box_px), r)


def output_class(type_name: str) -> type:
    """The rclpy class of an output's type name (OutputTopics.by_output: "PointArray", ..., "Detection2DArray")."""
    return getattr(TYPES, type_name, None) or getattr(VISION_TYPES, type_name)


def marker_color(key: str) -> ColorRGBA:
    """The colour of a query id or track id (core/colours.py: the same as the overlay's)."""
    r, g, b = id_colour(key)
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)


def marker_msgs(r: QueryResult, max_trail: int | None = None, lifetime_s: float = 0.0) -> list[ImageMarker]:
    """ImageMarkers for one result: the points on the newest frame (POINTS, id 0 of namespace `<query id>`), and per
    track one LINE_STRIP (its newest `max_trail` trajectory points, as on the overlay) with a stable id (the track's
    number, `<query>/t<n>` -> n) in namespace `<query id>/tracks`; an ENDED track's marker is removed. Every marker
    expires after `lifetime_s` (0 = never) so that viewers drop what the node stopped reporting."""
    out: list[ImageMarker] = []
    hdr = header(r.stamp_ns, r.frame_id)
    color = marker_color(r.query.id)
    lifetime = duration_msg(lifetime_s)
    newest = [p for p in r.points if p.stamp_ns == r.stamp_ns]
    if r.query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
        out.append(ImageMarker(header=hdr, ns=r.query.id, id=0, type=ImageMarker.POINTS, action=ImageMarker.ADD,
                               scale=6.0, outline_color=color, lifetime=lifetime,
                               points=[Point(x=p.x, y=p.y) for p in newest]))
    for t in r.tracks:
        number = split_id(t.id)[1]
        if t.status == TrackStatus.ENDED:
            out.append(ImageMarker(header=hdr, ns=f"{r.query.id}/tracks", id=number, action=ImageMarker.REMOVE))
            continue
        trail = t.trajectory[-max_trail:] if max_trail else t.trajectory
        out.append(ImageMarker(header=hdr, ns=f"{r.query.id}/tracks", id=number, type=ImageMarker.LINE_STRIP,
                               action=ImageMarker.ADD, scale=2.0, outline_color=marker_color(t.id), lifetime=lifetime,
                               points=[Point(x=p.x, y=p.y) for p in trail]))
    return out
