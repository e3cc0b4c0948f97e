"""Foxglove image annotations of a window's results, for the replay bag: open the bag in Foxglove, add an Image panel
on `/molmo2/image` and tick `/molmo2/annotations`: points, track trails with their ids, event and count labels are
drawn on the frame they belong to, in the colours of the node's overlay.

Messages are Foxglove's own schemas (`foxglove_msgs/msg/ImageAnnotations` and its parts, ROS 2 layout as published
in github.com/foxglove/schemas, `ros_foxglove_msgs/ros2`), registered in the bag's type store from their definitions
below, so no foxglove_msgs package is needed. Every annotation's timestamp is the stamp of the image it belongs to
(the clip's newest frame, also written to the bag as a JPEG), which is how Foxglove pairs them.
"""

from __future__ import annotations

import cv2
import numpy as np

from molmo2_ros.core.colours import id_colour
from molmo2_ros.core.types import NS_PER_S, QueryResult, TaskKind, TrackStatus

# ROS 2 definitions of the Foxglove annotation schemas (field names and types as Foxglove reads them).
FOXGLOVE_MSGS = {
    "foxglove_msgs/msg/Point2": "float64 x\nfloat64 y\n",
    "foxglove_msgs/msg/Color": "float64 r\nfloat64 g\nfloat64 b\nfloat64 a\n",
    "foxglove_msgs/msg/CircleAnnotation": (
        "builtin_interfaces/Time timestamp\nfoxglove_msgs/Point2 position\nfloat64 diameter\nfloat64 thickness\n"
        "foxglove_msgs/Color fill_color\nfoxglove_msgs/Color outline_color\n"),
    "foxglove_msgs/msg/PointsAnnotation": (
        "builtin_interfaces/Time timestamp\nuint8 UNKNOWN=0\nuint8 POINTS=1\nuint8 LINE_LOOP=2\nuint8 LINE_STRIP=3\n"
        "uint8 LINE_LIST=4\nuint8 type\nfoxglove_msgs/Point2[] points\nfoxglove_msgs/Color outline_color\n"
        "foxglove_msgs/Color[] outline_colors\nfoxglove_msgs/Color fill_color\nfloat64 thickness\n"),
    "foxglove_msgs/msg/TextAnnotation": (
        "builtin_interfaces/Time timestamp\nfoxglove_msgs/Point2 position\nstring text\nfloat64 font_size\n"
        "foxglove_msgs/Color text_color\nfoxglove_msgs/Color background_color\n"),
    "foxglove_msgs/msg/ImageAnnotations": (
        "foxglove_msgs/CircleAnnotation[] circles\nfoxglove_msgs/PointsAnnotation[] points\n"
        "foxglove_msgs/TextAnnotation[] texts\n"),
}
IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
ANNOTATIONS_TYPE = "foxglove_msgs/msg/ImageAnnotations"
JPEG_QUALITY = 90


def register(store) -> None:
    """Add the Foxglove annotation types to a rosbags type store."""
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    for name, text in FOXGLOVE_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)


class AnnotationBuilder:
    """Builds CompressedImage + ImageAnnotations messages with a rosbags type store's classes."""

    def __init__(self, store) -> None:
        t = store.types
        self._time, self._header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self._image = t["sensor_msgs/msg/CompressedImage"]
        self._p2, self._color = t["foxglove_msgs/msg/Point2"], t["foxglove_msgs/msg/Color"]
        self._circle, self._points = t["foxglove_msgs/msg/CircleAnnotation"], t["foxglove_msgs/msg/PointsAnnotation"]
        self._text, self._annotations = t["foxglove_msgs/msg/TextAnnotation"], t["foxglove_msgs/msg/ImageAnnotations"]

    def _stamp(self, ns: int):
        return self._time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)

    def _rgba(self, key: str, alpha: float = 1.0):
        r, g, b = id_colour(key)
        return self._color(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=alpha)

    def image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str):
        """The frame the annotations are drawn on, as JPEG."""
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("cannot encode the frame as JPEG")
        return self._image(header=self._header(stamp=self._stamp(stamp_ns), frame_id=frame_id),
                           format="rgb8; jpeg compressed bgr8", data=np.frombuffer(buf.tobytes(), np.uint8))

    def annotations(self, results: list[QueryResult], stamp_ns: int, max_trail: int = 32):
        """Everything of one window that lies on its newest frame (`stamp_ns`): points, track trails ending
        there with the track id, event and count labels; all stamped `stamp_ns`."""
        ts = self._stamp(stamp_ns)
        none = self._color(r=0.0, g=0.0, b=0.0, a=0.0)
        backdrop = self._color(r=0.0, g=0.0, b=0.0, a=0.6)
        circles, points, texts = [], [], []

        def label(x: float, y: float, text: str, key: str) -> None:
            texts.append(self._text(timestamp=ts, position=self._p2(x=float(x) + 6.0, y=float(y) - 6.0), text=text,
                                    font_size=12.0, text_color=self._rgba(key), background_color=backdrop))

        for r in results:
            qid = r.query.id
            newest = [p for p in r.points if p.stamp_ns == stamp_ns]
            for p in newest:
                circles.append(self._circle(timestamp=ts, position=self._p2(x=float(p.x), y=float(p.y)),
                                            diameter=10.0, thickness=2.0, fill_color=none,
                                            outline_color=self._rgba(qid)))
            if newest and r.query.task in (TaskKind.POINT, TaskKind.COUNT):
                text = f"{qid}: {r.count}" if r.query.task == TaskKind.COUNT and r.count is not None else qid
                label(newest[0].x, newest[0].y, text, qid)
            for track in r.tracks:
                if track.status == TrackStatus.ENDED or not track.trajectory:
                    continue
                trail = track.trajectory[-max_trail:]
                points.append(self._points(timestamp=ts, type=3, points=[self._p2(x=float(p.x), y=float(p.y))
                                                                        for p in trail],
                                           outline_color=self._rgba(track.id), outline_colors=[], fill_color=none,
                                           thickness=2.0))
                if trail[-1].stamp_ns == stamp_ns:
                    label(trail[-1].x, trail[-1].y, track.id, track.id)
            for event in r.events:
                at = next((p for p in reversed(event.evidence) if p.stamp_ns == stamp_ns), None)
                if at is not None:
                    label(at.x, at.y, f"{event.id} {event.state.name.lower()}", qid)
        return self._annotations(circles=circles, points=points, texts=texts)

