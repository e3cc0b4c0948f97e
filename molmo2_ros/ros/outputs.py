"""The output publishers of one camera: per standing query its main topic (+ its Answer), the overlay image and the
image markers. All are lifecycle publishers: nothing goes out while the node is inactive.

Topics and messages come from the one mapping the offline bag shares (`core/messages.py`): the unnamed camera
publishes under `~/`, a camera named N under `~/N/` (`~/N/points/<id>`, ...); a query with an explicit `topic`
publishes there (several cameras sharing such a query share the topic; every message carries its camera's frame_id).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import ImageMarker

from molmo2_ros.core.messages import camera_prefix, output_topics
from molmo2_ros.core.overlay import draw_overlay
from molmo2_ros.core.types import Clip, Query, QueryResult
from molmo2_ros.msg import Answer, Event, PointArray, TrackArray

from . import convert

OUTPUT_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# A debug image: the newest one is all a viewer wants, and it must never hold back the node.
OVERLAY_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
_MSG_TYPE = {"PointArray": PointArray, "TrackArray": TrackArray, "Event": Event, "Answer": Answer}


@dataclass
class _QueryPublishers:
    main: object
    answer: object | None


class CameraOutputs:
    """Publishers of one camera. `add`/`remove` run on service threads, `publish` on the runtime's worker; the
    publisher table is guarded by a lock."""

    def __init__(self, node, camera: str) -> None:
        self.node = node
        self.camera = camera
        self._lock = threading.Lock()
        self._queries: dict[str, _QueryPublishers] = {}
        prefix = camera_prefix(camera)
        self._overlay = node.create_lifecycle_publisher(Image, f"{prefix}overlay", OVERLAY_QOS)
        self._markers = node.create_lifecycle_publisher(ImageMarker, f"{prefix}markers", OUTPUT_QOS)

    def add(self, query: Query, active: bool) -> None:
        """Create the query's publishers (raises on an invalid topic name); enabled at once when `active`."""
        topics = output_topics(query, self.camera)
        main = self.node.create_lifecycle_publisher(_MSG_TYPE[topics.main_type], topics.main, OUTPUT_QOS)
        answer = None if topics.answer is None else self.node.create_lifecycle_publisher(Answer, topics.answer,
                                                                                          OUTPUT_QOS)
        publishers = _QueryPublishers(main, answer)
        if active:
            for pub in (main, answer):
                if pub is not None:
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

    def _destroy(self, publishers: _QueryPublishers) -> None:
        self.node.destroy_lifecycle_publisher(publishers.main)
        if publishers.answer is not None:
            self.node.destroy_lifecycle_publisher(publishers.answer)

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
                (publishers.main if out.output == "main" else publishers.answer).publish(out.msg)

    def publish_visuals(self, clip: Clip, results: list[QueryResult], max_trail: int, lifetime_s: float) -> None:
        """Overlay image and image markers, only while someone subscribes (drawing a 1080p overlay costs ms)."""
        if self._overlay.get_subscription_count() > 0:
            image = draw_overlay(clip.frames[-1].frame.image, results, max_trail=max_trail)
            self._overlay.publish(convert.image_msg(image, clip.end_ns, clip.frame_id))
        if self._markers.get_subscription_count() > 0:
            for r in results:
                for marker in convert.marker_msgs(r, max_trail, lifetime_s):
                    self._markers.publish(marker)
