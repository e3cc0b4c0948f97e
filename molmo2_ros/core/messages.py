"""QueryResults -> molmo2_ros messages and their topics, 2D and 3D: the ONE mapping the node and the offline bag
share.

Messages are built through a `MessageTypes` namespace passed in: rclpy's generated classes in the node
(`ros/convert.py`), rosbags typestore classes for the replay bag (`offline/replay.py`). Both take the same keyword
fields, so this module imports neither rclpy nor rosbags; every field is always given (rosbags classes have no
defaults).

Stamps: every header carries a source-frame stamp (never now()): the newest frame of the clip for PointArray,
TrackArray, Answer and their 3D sides, the event's end (its latest evidence) for Event and Event3D. 3D positions
are in the colour camera's optical frame (the 3D headers' frame_id), NaN where a point has no 3D.

Topics: `output_topics` names a query's outputs relative to the node (`~/points/<id>`, ..., the 3D side
`~/points3d/<id>`, ..., the standard outputs `~/detections/<id>`, `~/detections3d/<id>`); `bag_topic` gives the
absolute name they have for a node named `molmo2` in the root namespace (`/molmo2/points/<id>`), which the offline
bag uses.

Standard outputs (`detection_messages`): vision_msgs/Detection2DArray and Detection3DArray of point, count and
track results, built through a `VisionTypes` namespace (vision_msgs is optional: the node publishes them only when
it is installed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from .types import NS_PER_S, Event, GroundedPoint, LiftStatus, Point3D, QueryResult, TaskKind, Track, TrackStatus

DEFAULT_NODE_NAME = "molmo2"

_TOPIC_KIND = {TaskKind.POINT: "points", TaskKind.COUNT: "counts", TaskKind.TRACK: "tracks",
               TaskKind.EVENT: "events", TaskKind.CAPTION: "answers", TaskKind.QUESTION: "answers"}
MAIN_TYPE = {TaskKind.POINT: "PointArray", TaskKind.COUNT: "PointArray", TaskKind.TRACK: "TrackArray",
             TaskKind.EVENT: "Event", TaskKind.CAPTION: "Answer", TaskKind.QUESTION: "Answer"}
_TOPIC_KIND_3D = {TaskKind.POINT: "points3d", TaskKind.COUNT: "counts3d", TaskKind.TRACK: "tracks3d",
                  TaskKind.EVENT: "events3d"}
TYPE_3D = {TaskKind.POINT: "PointArray3D", TaskKind.COUNT: "PointArray3D", TaskKind.TRACK: "TrackArray3D",
           TaskKind.EVENT: "Event3D"}
NAN_POINT = (math.nan, math.nan, math.nan)
# Standard outputs: point, count and track queries (their grounded points), and the size of the 3D box (metres,
# a cube around the point: the diameter of the RViz spheres on ~/markers3d). The 2D box side is a setting
# (vision_msgs.box_px).
DETECTION_TASKS = (TaskKind.POINT, TaskKind.COUNT, TaskKind.TRACK)
DETECTION3D_BOX_M = 0.05


@dataclass(frozen=True)
class MessageTypes:
    """The message classes to build with (any classes taking the .msg fields as keywords), named as their types."""

    Time: Any
    Header: Any
    Point: Any
    GroundedPoint: Any
    PointArray: Any
    Track: Any
    TrackArray: Any
    Event: Any
    Answer: Any
    GroundedPoint3D: Any
    PointArray3D: Any
    Track3D: Any
    TrackArray3D: Any
    Event3D: Any

    @classmethod
    def resolve(cls, lookup: Callable[[str], Any]) -> MessageTypes:
        """The classes `lookup` gives for the full type names (`molmo2_ros/msg/PointArray`, see `full_name`)."""
        return cls(**{f.name: lookup(full_name(f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class VisionTypes:
    """The classes of the standard outputs (vision_msgs 4.x and the geometry_msgs they use), named as their types;
    resolved like MessageTypes."""

    Time: Any
    Header: Any
    Point: Any
    Quaternion: Any
    Pose: Any
    PoseWithCovariance: Any
    Vector3: Any
    Point2D: Any
    Pose2D: Any
    BoundingBox2D: Any
    BoundingBox3D: Any
    ObjectHypothesis: Any
    ObjectHypothesisWithPose: Any
    Detection2D: Any
    Detection2DArray: Any
    Detection3D: Any
    Detection3DArray: Any

    @classmethod
    def resolve(cls, lookup: Callable[[str], Any]) -> VisionTypes:
        """The classes `lookup` gives for the full type names (`vision_msgs/msg/Detection2DArray`, ...)."""
        return cls(**{f.name: lookup(full_name(f.name)) for f in fields(cls)})


@dataclass(frozen=True)
class VisionOptions:
    """The standard outputs are on: their classes and the side of the 2D box in source pixels."""

    types: VisionTypes
    box_px: float


_GEOMETRY = ("Point", "Quaternion", "Pose", "PoseWithCovariance", "Vector3")
_VISION = ("Point2D", "Pose2D", "BoundingBox2D", "BoundingBox3D", "ObjectHypothesis", "ObjectHypothesisWithPose",
           "Detection2D", "Detection2DArray", "Detection3D", "Detection3DArray")
_PACKAGES = {"Time": "builtin_interfaces", "Header": "std_msgs", **{n: "geometry_msgs" for n in _GEOMETRY},
             **{n: "vision_msgs" for n in _VISION}}


def full_name(type_name: str) -> str:
    """The full ROS name of a message type of MessageTypes (`PointArray` -> `molmo2_ros/msg/PointArray`)."""
    return f"{_PACKAGES.get(type_name, 'molmo2_ros')}/msg/{type_name}"


@dataclass(frozen=True)
class OutputTopics:
    """A query's outputs as ROS names relative to the node.

    main: the query's own `topic`, else `~/points/<id>`, `~/counts/<id>`, `~/tracks/<id>`, `~/events/<id>` or
    `~/answers/<id>` (caption, question); main_type: its message type name ("PointArray", ...); answer:
    `~/answers/<id>` where the main output is not an Answer, else None; lifted: the 3D side of a point, count,
    track or event query (`~/points3d/<id>`, `~/counts3d/<id>`, `~/tracks3d/<id>`, `~/events3d/<id>`, or `<topic>/3d`
    for a query with its own topic), else None; lifted_type: its type name ("PointArray3D", ...). For a camera
    named N of a multi-camera node every `~/` is `~/N/`."""

    main: str
    main_type: str
    answer: str | None
    lifted: str | None
    lifted_type: str | None
    # The standard outputs of a point, count or track query (`~/detections/<id>`, `~/detections3d/<id>`, or
    # `<topic>/detections`, `<topic>/detections3d` for a query with its own topic), else None.
    detections: str | None = None
    detections3d: str | None = None

    def by_output(self, depth: bool, vision: bool = False) -> dict[str, tuple[str, str]]:
        """(topic, type name) by OutMessage.output ("main", "answer", with `depth` "3d"; with `vision`
        "detections" and with both "detections3d") of the outputs the query has."""
        out = {"main": (self.main, self.main_type)}
        if self.answer is not None:
            out["answer"] = (self.answer, "Answer")
        if depth and self.lifted is not None:
            out["3d"] = (self.lifted, self.lifted_type)
        if vision and self.detections is not None:
            out["detections"] = (self.detections, "Detection2DArray")
            if depth:
                out["detections3d"] = (self.detections3d, "Detection3DArray")
        return out


class OutMessage(NamedTuple):
    """One message of a result: which output it goes to ("main", "answer" or "3d"), its type name, the message."""

    output: str
    type_name: str
    msg: Any


def camera_prefix(camera: str) -> str:
    """Where a camera's outputs live relative to the node: `~/` for the unnamed camera, `~/<camera>/` else."""
    return f"~/{camera}/" if camera else "~/"


def output_topics(query, camera: str = "") -> OutputTopics:
    prefix = camera_prefix(camera)
    main_type = MAIN_TYPE[query.task]
    answer = None if main_type == "Answer" else f"{prefix}answers/{query.id}"
    lifted = detections = detections3d = None
    if query.task in TYPE_3D:
        lifted = f"{query.topic}/3d" if query.topic else f"{prefix}{_TOPIC_KIND_3D[query.task]}/{query.id}"
    if query.task in DETECTION_TASKS:
        detections, detections3d = ((f"{query.topic}/detections", f"{query.topic}/detections3d") if query.topic else
                                    (f"{prefix}detections/{query.id}", f"{prefix}detections3d/{query.id}"))
    return OutputTopics(query.topic or f"{prefix}{_TOPIC_KIND[query.task]}/{query.id}", main_type, answer, lifted,
                        TYPE_3D.get(query.task), detections, detections3d)


def bag_topic(name: str, node_name: str = DEFAULT_NODE_NAME) -> str:
    """The absolute topic a node `/<node_name>` in the root namespace resolves `name` to (ROS name rules for
    `~/x`, `x` and `/x`)."""
    if name.startswith("~/"):
        return f"/{node_name}/{name[2:]}"
    return name if name.startswith("/") else f"/{name}"


# ---- fields -------------------------------------------------------------------------------------------------
def stamp(types: MessageTypes, ns: int):
    """builtin_interfaces/Time of a non-negative stamp in ns."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return types.Time(sec=sec, nanosec=nanosec)


def header(types: MessageTypes, ns: int, frame_id: str):
    return types.Header(stamp=stamp(types, ns), frame_id=frame_id)


def _confidence(value: float) -> float:
    return float(value) if math.isfinite(value) else math.nan


# ---- messages -----------------------------------------------------------------------------------------------
def point_msg(types: MessageTypes, p: GroundedPoint):
    return types.GroundedPoint(stamp=stamp(types, p.stamp_ns), x=float(p.x), y=float(p.y), label=p.label,
                               object_id=p.object_id)


def point_array_msg(types: MessageTypes, r: QueryResult):
    count = types.PointArray.COUNT_NOT_REQUESTED if r.count is None else int(r.count)
    return types.PointArray(
        header=header(types, r.stamp_ns, r.frame_id), query_id=r.query.id, query=r.query.text,
        image_width=r.width, image_height=r.height, clip_start=stamp(types, r.clip_start_ns),
        clip_end=stamp(types, r.clip_end_ns), points=[point_msg(types, p) for p in r.points], count=count,
        confidence=_confidence(r.confidence))


def track_msg(types: MessageTypes, t: Track):
    return types.Track(id=t.id, label=t.label, status=int(t.status), first_seen=stamp(types, t.first_ns),
                       last_seen=stamp(types, t.last_ns), trajectory=[point_msg(types, p) for p in t.trajectory])


def track_array_msg(types: MessageTypes, r: QueryResult):
    return types.TrackArray(
        header=header(types, r.stamp_ns, r.frame_id), query_id=r.query.id, query=r.query.text,
        image_width=r.width, image_height=r.height, tracks=[track_msg(types, t) for t in r.tracks],
        confidence=_confidence(r.confidence))


def event_msg(types: MessageTypes, e: Event, frame_id: str):
    """Header stamp = source stamp of the latest evidence (the event's end)."""
    return types.Event(header=header(types, e.end_ns, frame_id), id=e.id, query_id=e.query_id, query=e.query,
                       description=e.description, start=stamp(types, e.start_ns), end=stamp(types, e.end_ns),
                       state=int(e.state), evidence=[point_msg(types, p) for p in e.evidence])


def answer_msg(types: MessageTypes, r: QueryResult):
    return types.Answer(
        header=header(types, r.stamp_ns, r.frame_id), query_id=r.query.id, query=r.query.text,
        task=r.query.task.value, text=r.text, clip_start=stamp(types, r.clip_start_ns),
        clip_end=stamp(types, r.clip_end_ns), frame_stamps=[stamp(types, s) for s in r.frame_stamps_ns],
        num_frames=r.num_frames, num_visual_tokens=r.num_visual_tokens, model_id=r.model_id,
        inference_time=float(r.inference_s), confidence=_confidence(r.confidence))


def point3d_msg(types: MessageTypes, p: Point3D):
    x, y, z = p.position if p.position is not None else NAN_POINT
    return types.GroundedPoint3D(point=point_msg(types, p.point), valid=p.status == LiftStatus.OK,
                                 status=int(p.status), position=types.Point(x=float(x), y=float(y), z=float(z)),
                                 valid_fraction=float(p.valid_fraction))


def point_array3d_msg(types: MessageTypes, r: QueryResult):
    return types.PointArray3D(header=header(types, r.stamp_ns, r.lifted.frame_id), query_id=r.query.id,
                              query=r.query.text, points=[point3d_msg(types, p) for p in r.lifted.points])


def track_array3d_msg(types: MessageTypes, r: QueryResult):
    tracks = [types.Track3D(id=t.id, label=t.label, status=int(t.status), first_seen=stamp(types, t.first_ns),
                            last_seen=stamp(types, t.last_ns),
                            trajectory=[point3d_msg(types, p) for p in r.lifted.tracks.get(t.id, [])])
              for t in r.tracks]
    return types.TrackArray3D(header=header(types, r.stamp_ns, r.lifted.frame_id), query_id=r.query.id,
                              query=r.query.text, tracks=tracks)


def event3d_msg(types: MessageTypes, e: Event, evidence: list[Point3D], frame_id: str):
    """Header stamp = source stamp of the event's end, as molmo2_ros/Event."""
    return types.Event3D(header=header(types, e.end_ns, frame_id), id=e.id, query_id=e.query_id, query=e.query,
                         state=int(e.state), start=stamp(types, e.start_ns), end=stamp(types, e.end_ns),
                         evidence=[point3d_msg(types, p) for p in evidence])


def lifted_messages(types: MessageTypes, r: QueryResult) -> list[OutMessage]:
    """The 3D side of a result with `lifted` (output "3d"): its PointArray3D, TrackArray3D, or one Event3D per
    event; nothing for captions and questions or without `lifted`."""
    task = r.query.task
    if r.lifted is None or task not in TYPE_3D:
        return []
    if task == TaskKind.EVENT:
        return [OutMessage("3d", "Event3D", event3d_msg(types, e, r.lifted.events.get(e.id, []), r.lifted.frame_id))
                for e in r.events]
    if task == TaskKind.TRACK:
        return [OutMessage("3d", "TrackArray3D", track_array3d_msg(types, r))]
    return [OutMessage("3d", "PointArray3D", point_array3d_msg(types, r))]


def messages_2d(types: MessageTypes, r: QueryResult) -> list[OutMessage]:
    """The main output (one Event per event of an event query), then the Answer where it has its own topic. A
    closing result (Pipeline.finish) has no model answer: it publishes only its ended tracks (TrackArray) or
    events."""
    task = r.query.task
    main_type = MAIN_TYPE[task]
    out: list[OutMessage] = []
    if task == TaskKind.EVENT:
        out += [OutMessage("main", "Event", event_msg(types, e, r.frame_id)) for e in r.events]
    elif r.closing:
        if task == TaskKind.TRACK and r.tracks:
            out.append(OutMessage("main", main_type, track_array_msg(types, r)))
        return out
    elif main_type == "PointArray":
        out.append(OutMessage("main", main_type, point_array_msg(types, r)))
    elif main_type == "TrackArray":
        out.append(OutMessage("main", main_type, track_array_msg(types, r)))
    else:
        out.append(OutMessage("main", main_type, answer_msg(types, r)))
    if main_type != "Answer" and not r.closing:
        out.append(OutMessage("answer", "Answer", answer_msg(types, r)))
    return out


def result_messages(types: MessageTypes, r: QueryResult) -> list[OutMessage]:
    """Every message one result publishes, in order: its 2D messages (`messages_2d`), then its 3D side
    (`lifted_messages`, only a result with `lifted` has one)."""
    return messages_2d(types, r) + lifted_messages(types, r)


# ---- standard outputs (vision_msgs) -------------------------------------------------------------------------
def detection_points(r: QueryResult) -> list[tuple[GroundedPoint, Point3D | None]]:
    """The grounded points a result's detections report, each with its 3D (None without `lifted`): every point
    of a point or count result; for a track result the trajectory points on this clip's frames (clip start to end)
    of every track not ENDED, track by track (so a track unseen in this clip has none). Nothing for a closing
    result (no model answer) or another task."""
    task = r.query.task
    if r.closing or task not in DETECTION_TASKS:
        return []
    lifted = r.lifted
    if task != TaskKind.TRACK:
        lifts = lifted.points if lifted is not None and len(lifted.points) == len(r.points) else [None] * len(r.points)
        return list(zip(r.points, lifts))
    out: list[tuple[GroundedPoint, Point3D | None]] = []
    for t in r.tracks:
        if t.status == TrackStatus.ENDED:
            continue
        lifts = lifted.tracks.get(t.id, []) if lifted is not None else []
        if len(lifts) != len(t.trajectory):
            lifts = [None] * len(t.trajectory)
        out += [(p, q) for p, q in zip(t.trajectory, lifts) if r.clip_start_ns <= p.stamp_ns <= r.clip_end_ns]
    return out


def detection_score(confidence: float) -> float:
    """vision_msgs' score (by convention 0..1) of a result's confidence (the mean log-probability of its
    coordinate tokens): exp(confidence), the geometric mean of their probabilities; NaN when unknown."""
    return min(math.exp(confidence), 1.0) if math.isfinite(confidence) else math.nan


def _hypothesis(v: VisionTypes, label: str, score: float, position: tuple[float, float, float]):
    x, y, z = position
    pose = v.Pose(position=v.Point(x=float(x), y=float(y), z=float(z)),
                  orientation=v.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    return v.ObjectHypothesisWithPose(hypothesis=v.ObjectHypothesis(class_id=label, score=score),
                                      pose=v.PoseWithCovariance(pose=pose, covariance=np.zeros(36)))


def detection2d_array_msg(v: VisionTypes, r: QueryResult, box_px: float):
    """vision_msgs/Detection2DArray of a point, count or track result: header = the result's (newest frame stamp,
    camera frame); one Detection2D per point of `detection_points`: header = the point's own frame stamp, bbox = a
    `box_px` square centred on the point (source pixels, theta 0), one hypothesis (class_id = the point's label,
    else the query text; score = detection_score of the result's confidence; pose: identity, zero covariance:
    a 2D detection has none), id = the persistent track id on a track's point, "" on a plain point."""
    score = detection_score(r.confidence)
    detections = [
        v.Detection2D(header=header(v, p.stamp_ns, r.frame_id),
                      results=[_hypothesis(v, p.label or r.query.text, score, (0.0, 0.0, 0.0))],
                      bbox=v.BoundingBox2D(center=v.Pose2D(position=v.Point2D(x=float(p.x), y=float(p.y)), theta=0.0),
                                           size_x=float(box_px), size_y=float(box_px)),
                      id=p.object_id)
        for p, _ in detection_points(r)]
    return v.Detection2DArray(header=header(v, r.stamp_ns, r.frame_id), detections=detections)


def detection3d_array_msg(v: VisionTypes, r: QueryResult):
    """vision_msgs/Detection3DArray of a lifted point, count or track result: header = the result's stamp and the
    optical frame; one Detection3D per point of `detection_points` with a valid 3D position (LiftStatus.OK):
    header = the point's own frame stamp, bbox = a DETECTION3D_BOX_M cube centred on the position (optical frame,
    identity orientation), the hypothesis as in 2D with pose = that position, id as in 2D."""
    score = detection_score(r.confidence)
    frame_id = r.lifted.frame_id
    detections = []
    for p, q in detection_points(r):
        if q is None or q.status != LiftStatus.OK or q.position is None:
            continue
        hypothesis = _hypothesis(v, p.label or r.query.text, score, q.position)
        detections.append(v.Detection3D(
            header=header(v, p.stamp_ns, frame_id), results=[hypothesis],
            bbox=v.BoundingBox3D(center=hypothesis.pose.pose, size=v.Vector3(
                x=DETECTION3D_BOX_M, y=DETECTION3D_BOX_M, z=DETECTION3D_BOX_M)),
            id=p.object_id))
    return v.Detection3DArray(header=header(v, r.stamp_ns, frame_id), detections=detections)


def detection_messages(vision: VisionOptions, r: QueryResult) -> list[OutMessage]:
    """The standard outputs of a result (outputs "detections" and, with `lifted`, "detections3d"): a point,
    count or track result's Detection2DArray (also when it has no point: nothing seen now) and Detection3DArray;
    nothing for other tasks and closing results."""
    if r.closing or r.query.task not in DETECTION_TASKS:
        return []
    out = [OutMessage("detections", "Detection2DArray", detection2d_array_msg(vision.types, r, vision.box_px))]
    if r.lifted is not None:
        out.append(OutMessage("detections3d", "Detection3DArray", detection3d_array_msg(vision.types, r)))
    return out
