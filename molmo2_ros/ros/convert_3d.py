"""Core 3D results (QueryResult.lifted) -> the 3D messages (the mapping itself lives in core/messages.py, shared
with the offline bag) and the RViz MarkerArray.

Every position is in the colour camera's optical frame (Lifted3D.frame_id) at its own point's stamp; headers carry
the same stamps as the 2D messages of the result (never now()).
"""

from __future__ import annotations

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from visualization_msgs.msg import Marker, MarkerArray

from molmo2_ros.core import messages
from molmo2_ros.core.tracks import split_id
from molmo2_ros.core.types import Event, LiftStatus, Point3D, QueryResult, TaskKind, TrackStatus
from molmo2_ros.msg import Event3D as Event3DMsg
from molmo2_ros.msg import PointArray3D as PointArray3DMsg
from molmo2_ros.msg import TrackArray3D as TrackArray3DMsg

from .convert import TYPES, duration_msg, header, marker_color

POINT_DIAMETER_M = 0.05  # sphere size in RViz
LINE_WIDTH_M = 0.02


def point_array3d_msg(r: QueryResult) -> PointArray3DMsg:
    return messages.point_array3d_msg(TYPES, r)


def track_array3d_msg(r: QueryResult) -> TrackArray3DMsg:
    return messages.track_array3d_msg(TYPES, r)


def event3d_msg(e: Event, evidence: list[Point3D], frame_id: str) -> Event3DMsg:
    """Header stamp = source stamp of the event's end, as molmo2_ros/Event."""
    return messages.event3d_msg(TYPES, e, evidence, frame_id)


def _valid(points: list[Point3D]) -> list[Point3D]:
    return [p for p in points if p.status == LiftStatus.OK]


def marker_array(r: QueryResult, max_trail: int | None = None, lifetime_s: float = 0.0) -> MarkerArray:
    """RViz markers of one result in the optical frame: the valid 3D points on the newest frame (SPHERE_LIST, id 0
    of namespace `<query id>`), and per track a LINE_STRIP of its newest `max_trail` valid trajectory points
    (namespace `<query id>/tracks`) plus a SPHERE at its newest one (`<query id>/heads`), both with the track's
    number as a stable id; an ENDED track's markers are deleted. Markers expire after `lifetime_s` (0 = never), so
    that RViz drops what the node stopped reporting. Header stamps: the newest point's stamp."""
    lifted = r.lifted
    frame_id = lifted.frame_id
    lifetime = duration_msg(lifetime_s)
    markers: list[Marker] = []
    if r.query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
        newest = _valid([p for p in lifted.points if p.point.stamp_ns == r.stamp_ns])
        markers.append(Marker(
            header=header(r.stamp_ns, frame_id), ns=r.query.id, id=0, type=Marker.SPHERE_LIST, action=Marker.ADD,
            scale=Vector3(x=POINT_DIAMETER_M, y=POINT_DIAMETER_M, z=POINT_DIAMETER_M), color=marker_color(r.query.id),
            lifetime=lifetime, points=[Point(x=p.position[0], y=p.position[1], z=p.position[2]) for p in newest]))
    for t in r.tracks:
        number = split_id(t.id)[1]
        if t.status == TrackStatus.ENDED:
            for ns in (f"{r.query.id}/tracks", f"{r.query.id}/heads"):
                markers.append(Marker(header=header(t.last_ns, frame_id), ns=ns, id=number, action=Marker.DELETE))
            continue
        trail = _valid(lifted.tracks.get(t.id, []))
        trail = trail[-max_trail:] if max_trail else trail
        if not trail:
            continue
        stamp = trail[-1].point.stamp_ns
        color = marker_color(t.id)
        points = [Point(x=p.position[0], y=p.position[1], z=p.position[2]) for p in trail]
        markers.append(Marker(header=header(stamp, frame_id), ns=f"{r.query.id}/tracks", id=number,
                              type=Marker.LINE_STRIP, action=Marker.ADD, scale=Vector3(x=LINE_WIDTH_M), color=color,
                              lifetime=lifetime, points=points))
        head = points[-1]
        markers.append(Marker(header=header(stamp, frame_id), ns=f"{r.query.id}/heads", id=number,
                              type=Marker.SPHERE, action=Marker.ADD,
                              pose=Pose(position=head, orientation=Quaternion(w=1.0)),
                              scale=Vector3(x=POINT_DIAMETER_M, y=POINT_DIAMETER_M, z=POINT_DIAMETER_M), color=color,
                              lifetime=lifetime))
    return MarkerArray(markers=markers)
