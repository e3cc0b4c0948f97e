"""The node's `~/recall` service: where and when the standing queries saw something, answered from the history's
sightings index (core/history.py) without running the model."""

from __future__ import annotations

from geometry_msgs.msg import Point

from molmo2_ros.core.history import Sighting
from molmo2_ros.msg import Sighting as SightingMsg
from molmo2_ros.srv import Recall

from . import convert

MAX_SIGHTINGS = 10_000  # most sightings one response carries (a limit above it is refused, not cut silently)


def sighting_msg(s: Sighting) -> SightingMsg:
    return SightingMsg(camera=s.camera, query_id=s.query_id, task=s.task, query=s.query, label=s.label,
                       stamp=convert.ns_to_time(s.stamp_ns), x=float(s.x), y=float(s.y),
                       image_width=int(s.image_width), image_height=int(s.image_height), object_id=s.object_id,
                       frame_id=s.frame_id, has_position=s.position is not None,
                       position=Point(x=s.position[0], y=s.position[1], z=s.position[2]) if s.position else Point())


class RecallServer:
    """`~/recall` of a Molmo2Node (which provides `history` (core.history.HistoryStore or None) and `cameras`)."""

    def __init__(self, node, callback_group) -> None:
        self.node = node
        self._service = node.create_service(Recall, "~/recall", self._on_recall, callback_group=callback_group)

    def destroy(self) -> None:
        self.node.destroy_service(self._service)

    def _on_recall(self, request, response):
        response.success, response.message, found = self._recall(request)
        response.sightings = [sighting_msg(s) for s in found]
        return response

    def _recall(self, request) -> tuple[bool, str, list[Sighting]]:
        history = self.node.history
        if history is None:
            return False, "no history: start the node with history.enabled:=true (README 'Rewind')", []
        if request.camera and request.camera not in self.node.cameras:
            return False, f"unknown camera '{request.camera}' (cameras: {', '.join(map(repr, self.node.cameras))})", []
        if request.limit > MAX_SIGHTINGS:
            return False, f"limit {request.limit} is above {MAX_SIGHTINGS}: ask for fewer, or a shorter range", []
        start_ns, end_ns = convert.time_to_ns(request.start), convert.time_to_ns(request.end)
        if request.lookback_s < 0:
            return False, f"lookback_s must be >= 0, got {request.lookback_s}", []
        if request.lookback_s > 0:
            span = history.span(request.camera)
            if span is None:
                return True, "the history holds no frames yet", []
            end_ns = span[1]
            start_ns = max(0, end_ns - int(request.lookback_s * 1e9))
        elif end_ns and end_ns < start_ns:
            return False, "time range: end is before start", []
        found = history.sightings(text=request.text, query_id=request.query_id, camera=request.camera or None,
                                  start_ns=start_ns, end_ns=end_ns, limit=request.limit or 1)
        what = " ".join(filter(None, (repr(request.text) if request.text else "",
                                      f"query '{request.query_id}'" if request.query_id else ""))) or "anything"
        return True, f"{len(found)} sighting(s) of {what}", found
