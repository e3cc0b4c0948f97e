"""The output publishers of a camera with depth enabled: its 2D outputs plus, per point, count, track and event
query, its 3D side (CameraOutputs with `depth`), and the camera's RViz markers. All are lifecycle publishers.

Topics and messages come from the one mapping the offline bag shares (`core/messages.py`; unnamed camera under
`~/`, camera N under `~/N/`): `points3d/<id>`, `counts3d/<id>` (PointArray3D), `tracks3d/<id>` (TrackArray3D),
`events3d/<id>` (Event3D), `markers3d` (visualization_msgs/MarkerArray). A query with an explicit `topic` T
publishes its 3D side on `T/3d`. The 2D topics and messages are unchanged. With the standard outputs on (see
ros/outputs.py) point, count and track queries also publish vision_msgs/Detection3DArray on `detections3d/<id>`
(`T/detections3d`): their valid 3D points.
"""

from __future__ import annotations

from visualization_msgs.msg import MarkerArray

from molmo2_ros.core.messages import camera_prefix
from molmo2_ros.core.types import Clip, QueryResult

from . import convert_3d
from .outputs import OUTPUT_QOS, CameraOutputs


class DepthCameraOutputs(CameraOutputs):
    """CameraOutputs with the queries' 3D sides, plus the 3D markers. Same threads and locking as CameraOutputs."""

    depth = True

    def __init__(self, node, camera: str) -> None:
        super().__init__(node, camera)
        self._markers_3d = node.create_lifecycle_publisher(MarkerArray, f"{camera_prefix(camera)}markers3d",
                                                           OUTPUT_QOS)

    def destroy(self) -> None:
        super().destroy()
        self.node.destroy_lifecycle_publisher(self._markers_3d)

    def publish_visuals(self, clip: Clip, results: list[QueryResult], max_trail: int, lifetime_s: float) -> None:
        super().publish_visuals(clip, results, max_trail, lifetime_s)
        if self._markers_3d.get_subscription_count() > 0:
            for r in results:
                if r.lifted is not None:
                    self._markers_3d.publish(convert_3d.marker_array(r, max_trail, lifetime_s))
