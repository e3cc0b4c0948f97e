"""The output publishers of a camera with depth enabled: its 2D outputs (CameraOutputs) plus, per standing query
with points, the 3D topic, and the camera's RViz markers. All are lifecycle publishers.

Topics (unnamed camera under `~/`, camera N under `~/N/`): `points3d/<id>`, `counts3d/<id>` (PointArray3D),
`tracks3d/<id>` (TrackArray3D), `events3d/<id>` (Event3D), `markers3d` (visualization_msgs/MarkerArray). A query
with an explicit `topic` T publishes its 3D side on `T/3d`. The 2D topics and messages are unchanged.
"""

from __future__ import annotations

import threading

from visualization_msgs.msg import MarkerArray

from molmo2_ros.core.types import Clip, Query, QueryResult, TaskKind
from molmo2_ros.msg import Event3D, PointArray3D, TrackArray3D

from . import convert_3d
from .outputs import OUTPUT_QOS, CameraOutputs, camera_prefix

_TOPIC_KIND_3D = {TaskKind.POINT: "points3d", TaskKind.COUNT: "counts3d", TaskKind.TRACK: "tracks3d",
                  TaskKind.EVENT: "events3d"}
_MSG_TYPE_3D = {TaskKind.POINT: PointArray3D, TaskKind.COUNT: PointArray3D, TaskKind.TRACK: TrackArray3D,
                TaskKind.EVENT: Event3D}


def query_topic_3d(camera: str, query: Query) -> str:
    """Where a standing query's 3D output goes."""
    return f"{query.topic}/3d" if query.topic else f"{camera_prefix(camera)}{_TOPIC_KIND_3D[query.task]}/{query.id}"


class DepthCameraOutputs(CameraOutputs):
    """CameraOutputs plus the 3D publishers. Same threads and locking as CameraOutputs (its own lock for the 3D
    publisher table)."""

    def __init__(self, node, camera: str) -> None:
        super().__init__(node, camera)
        self._lock_3d = threading.Lock()
        self._publishers_3d: dict[str, object] = {}
        self._markers_3d = node.create_lifecycle_publisher(MarkerArray, f"{camera_prefix(camera)}markers3d",
                                                           OUTPUT_QOS)

    def add(self, query: Query, active: bool) -> None:
        super().add(query, active)
        if query.task not in _MSG_TYPE_3D:
            return
        try:
            pub = self.node.create_lifecycle_publisher(_MSG_TYPE_3D[query.task], query_topic_3d(self.camera, query),
                                                       OUTPUT_QOS)
        except Exception:
            super().remove(query.id)  # all or nothing, as the caller expects from add
            raise
        if active:
            pub.on_activate(None)
        with self._lock_3d:
            old = self._publishers_3d.pop(query.id, None)
            self._publishers_3d[query.id] = pub
        if old is not None:
            self.node.destroy_lifecycle_publisher(old)

    def remove(self, query_id: str) -> None:
        super().remove(query_id)
        with self._lock_3d:
            pub = self._publishers_3d.pop(query_id, None)
        if pub is not None:
            self.node.destroy_lifecycle_publisher(pub)

    def destroy(self) -> None:
        super().destroy()
        with self._lock_3d:
            pubs, self._publishers_3d = list(self._publishers_3d.values()), {}
        for pub in (*pubs, self._markers_3d):
            self.node.destroy_lifecycle_publisher(pub)

    def publish(self, results: list[QueryResult]) -> None:
        super().publish(results)
        for r in results:
            if r.lifted is None:
                continue
            with self._lock_3d:
                pub = self._publishers_3d.get(r.query.id)
            if pub is None:  # removed while its inference ran
                continue
            if r.query.task in (TaskKind.POINT, TaskKind.COUNT):
                pub.publish(convert_3d.point_array3d_msg(r))
            elif r.query.task == TaskKind.TRACK:
                pub.publish(convert_3d.track_array3d_msg(r))
            elif r.query.task == TaskKind.EVENT:
                for e in r.events:
                    pub.publish(convert_3d.event3d_msg(e, r.lifted.events.get(e.id, []), r.lifted.frame_id))

    def publish_visuals(self, clip: Clip, results: list[QueryResult], max_trail: int, lifetime_s: float) -> None:
        super().publish_visuals(clip, results, max_trail, lifetime_s)
        if self._markers_3d.get_subscription_count() > 0:
            for r in results:
                if r.lifted is not None:
                    self._markers_3d.publish(convert_3d.marker_array(r, max_trail, lifetime_s))
