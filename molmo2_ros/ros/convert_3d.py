"""Core 3D results (QueryResult.lifted) -> the 3D messages and the RViz MarkerArray.

Every position is in the colour camera's optical frame (Lifted3D.frame_id) at its own point's stamp; headers carry
the same stamps as the 2D messages of the result (never now()).
"""

from __future__ import annotations

import math

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from visualization_msgs.msg import Marker, MarkerArray

from molmo2_ros.core.types import NS_PER_S, Event, LiftStatus, Point3D, QueryResult, TaskKind, TrackStatus
from molmo2_ros.msg import Event3D as Event3DMsg
from molmo2_ros.msg import GroundedPoint3D as GroundedPoint3DMsg
from molmo2_ros.msg import PointArray3D as PointArray3DMsg
from molmo2_ros.msg import Track3D as Track3DMsg
from molmo2_ros.msg import TrackArray3D as TrackArray3DMsg

from .convert import header, marker_color, ns_to_time, point_msg

NAN_POINT = (math.nan, math.nan, math.nan)
POINT_DIAMETER_M = 0.05  # sphere size in RViz
LINE_WIDTH_M = 0.02


def point3d_msg(p: Point3D) -> GroundedPoint3DMsg:
    x, y, z = p.position if p.position is not None else NAN_POINT
    return GroundedPoint3DMsg(point=point_msg(p.point), valid=p.status == LiftStatus.OK, status=int(p.status),
                              position=Point(x=x, y=y, z=z), valid_fraction=float(p.valid_fraction))


def point_array3d_msg(r: QueryResult) -> PointArray3DMsg:
    return PointArray3DMsg(header=header(r.stamp_ns, r.lifted.frame_id), query_id=r.query.id, query=r.query.text,
                           points=[point3d_msg(p) for p in r.lifted.points])


def track_array3d_msg(r: QueryResult) -> TrackArray3DMsg:
    tracks = [Track3DMsg(id=t.id, label=t.label, status=int(t.status), first_seen=ns_to_time(t.first_ns),
                         last_seen=ns_to_time(t.last_ns),
                         trajectory=[point3d_msg(p) for p in r.lifted.tracks.get(t.id, [])]) for t in r.tracks]
    return TrackArray3DMsg(header=header(r.stamp_ns, r.lifted.frame_id), query_id=r.query.id, query=r.query.text,
                           tracks=tracks)


def event3d_msg(e: Event, evidence: list[Point3D], frame_id: str) -> Event3DMsg:
    """Header stamp = source stamp of the event's end, as molmo2_ros/Event."""
    return Event3DMsg(header=header(e.end_ns, frame_id), id=e.id, query_id=e.query_id, query=e.query,
                      state=int(e.state), start=ns_to_time(e.start_ns), end=ns_to_time(e.end_ns),
                      evidence=[point3d_msg(p) for p in evidence])


def _valid(points: list[Point3D]) -> list[Point3D]:
    return [p for p in points if p.status == LiftStatus.OK]


def _lifetime(lifetime_s: float) -> Duration:
    return Duration(sec=int(lifetime_s), nanosec=int(round((lifetime_s % 1) * NS_PER_S)))


def marker_array(r: QueryResult, max_trail: int | None = None, lifetime_s: float = 0.0) -> MarkerArray:
    """RViz markers of one result in the optical frame: the valid 3D points on the newest frame (SPHERE_LIST, id 0
    of namespace `<query id>`), and per track a LINE_STRIP of its newest `max_trail` valid trajectory points
    (namespace `<query id>/tracks`) plus a SPHERE at its newest one (`<query id>/heads`), both with the track's
    number as a stable id; an ENDED track's markers are deleted. Markers expire after `lifetime_s` (0 = never), so
    that RViz drops what the node stopped reporting. Header stamps: the newest point's stamp."""
    lifted = r.lifted
    frame_id = lifted.frame_id
    lifetime = _lifetime(lifetime_s)
    markers: list[Marker] = []
    if r.query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
        newest = _valid([p for p in lifted.points if p.point.stamp_ns == r.stamp_ns])
        markers.append(Marker(
            header=header(r.stamp_ns, frame_id), ns=r.query.id, id=0, type=Marker.SPHERE_LIST, action=Marker.ADD,
            scale=Vector3(x=POINT_DIAMETER_M, y=POINT_DIAMETER_M, z=POINT_DIAMETER_M), color=marker_color(r.query.id),
            lifetime=lifetime, points=[Point(x=p.position[0], y=p.position[1], z=p.position[2]) for p in newest]))
    for t in r.tracks:
        tail = t.id.rsplit("/t", 1)[-1]
        number = int(tail) if tail.isdigit() else 0
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
