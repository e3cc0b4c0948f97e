"""The output publishers of one camera: per standing query its main topic (+ its Answer), the overlay image and the
image markers. All are lifecycle publishers: nothing goes out while the node is inactive.

Topics and messages come from the one mapping the offline bag shares (`core/messages.py`): the unnamed camera
publishes under `~/`, a camera named N under `~/N/` (`~/N/points/<id>`, ...); a query with an explicit `topic`
publishes there (several cameras sharing such a query share the topic; every message carries its camera's frame_id).

Standard outputs: with `vision_msgs.enabled` (read at configure) and vision_msgs installed, every point, count and
track query also publishes vision_msgs/Detection2DArray on `~/detections/<id>` (with depth: Detection3DArray on
`~/detections3d/<id>`); without vision_msgs the node logs once that they are off and runs as before.
"""

from __future__ import annotations

import threading

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import ImageMarker

from molmo2_ros.core.messages import camera_prefix, output_topics
from molmo2_ros.core.overlay import draw_overlay
from molmo2_ros.core.types import Clip, Query, QueryResult

from . import convert

OUTPUT_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# A debug image: the newest one is all a viewer wants, and it must never hold back the node.
OVERLAY_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


_vision_absent_logged = False


def vision_box_px(node) -> float | None:
    """The 2D box side of the standard outputs when they are on (`vision_msgs.enabled` and vision_msgs
    installed), else None; logs once per process that they are off when vision_msgs is missing."""
    global _vision_absent_logged
    if not node.get_parameter("vision_msgs.enabled").value:
        return None
    if convert.VISION_TYPES is None:
        if not _vision_absent_logged:
            _vision_absent_logged = True
            node.get_logger().info("standard outputs (vision_msgs/Detection2DArray, Detection3DArray) are off: "
                                   "vision_msgs is not installed (apt install ros-$ROS_DISTRO-vision-msgs)")
        return None
    return float(node.get_parameter("vision_msgs.box_px").value)


class CameraOutputs:
    """Publishers of one camera. `add`/`remove` run on service threads, `publish` on the runtime's worker; the
    publisher table (query id -> OutMessage.output -> publisher) is guarded by a lock. `depth`: the queries' 3D
    sides are published too (DepthCameraOutputs)."""

    depth = False

    def __init__(self, node, camera: str) -> None:
        self.node = node
        self.camera = camera
        self._lock = threading.Lock()
        self._queries: dict[str, dict[str, object]] = {}
        self.box_px = vision_box_px(node)  # None: no standard outputs
        prefix = camera_prefix(camera)
        self._overlay = node.create_lifecycle_publisher(Image, f"{prefix}overlay", OVERLAY_QOS)
        self._markers = node.create_lifecycle_publisher(ImageMarker, f"{prefix}markers", OUTPUT_QOS)

    def add(self, query: Query, active: bool) -> None:
        """Create the query's publishers, all or none (raises on an invalid topic name); enabled at once when
        `active`."""
        publishers: dict[str, object] = {}
        try:
            outputs = output_topics(query, self.camera).by_output(self.depth, vision=self.box_px is not None)
            for output, (topic, type_name) in outputs.items():
                publishers[output] = self.node.create_lifecycle_publisher(convert.output_class(type_name), topic,
                                                                          OUTPUT_QOS)
        except Exception:
            self._destroy(publishers)
            raise
        if active:
            for pub in publishers.values():
                pub.on_activate(None)
        with self._lock:
            old = self._queries.pop(query.id, None)
            self._queries[query.id] = publishers
        if old is not None:
            self._destroy(old)

    def remove(self, query_id: str) -> None:
        with self._lock:
            publishers = self._queries.pop(query_id, None)
        if publishers is not None:
            self._destroy(publishers)

    def query_ids(self) -> set[str]:
        with self._lock:
            return set(self._queries)

    def _destroy(self, publishers: dict[str, object]) -> None:
        for pub in publishers.values():
            self.node.destroy_lifecycle_publisher(pub)

    def destroy(self) -> None:
        with self._lock:
            queries, self._queries = list(self._queries.values()), {}
        for publishers in queries:
            self._destroy(publishers)
        for pub in (self._overlay, self._markers):
            self.node.destroy_lifecycle_publisher(pub)

    # ---- publishing --------------------------------------------------------------------------------------
    def publish(self, results: list[QueryResult]) -> None:
        for r in results:
            with self._lock:
                publishers = self._queries.get(r.query.id)
            if publishers is None:  # removed while its inference ran
                continue
            for out in convert.result_messages(r):
                publishers[out.output].publish(out.msg)
            if self.box_px is not None:
                for out in convert.detection_messages(r, self.box_px):
                    if (pub := publishers.get(out.output)) is not None:
                        pub.publish(out.msg)

    def publish_visuals(self, clip: Clip, results: list[QueryResult], max_trail: int, lifetime_s: float) -> None:
        """Overlay image and image markers, only while someone subscribes (drawing a 1080p overlay costs ms)."""
        if self._overlay.get_subscription_count() > 0:
            image = draw_overlay(clip.frames[-1].frame.image, results, max_trail=max_trail)
            self._overlay.publish(convert.image_msg(image, clip.end_ns, clip.frame_id))
        if self._markers.get_subscription_count() > 0:
            for r in results:
                for marker in convert.marker_msgs(r, max_trail, lifetime_s):
                    self._markers.publish(marker)
