"""One camera's depth input (parameter `depth.enabled`, per camera `<camera>.depth.enabled`): the aligned depth
image topic `<camera>/depth` (`depth` for the unnamed camera) and the colour camera's `<camera>/camera_info`, both
relative names, so namespaces and remaps compose.

The depth subscription is a CameraInput (same QoS handling: the camera's `qos` and `input_depth`, `auto` matching
the publishers; the same no-frame warning) with the intake's depth gate (core/intake.py, as in a replay): the stamp
is read from the serialized message and only depth frames that can match a colour frame the clip buffer kept are
deserialized (about 2 of 30 at 30 Hz).
CameraInfo is small and is taken with a best-effort subscription (it matches reliable and best-effort publishers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from molmo2_ros.core.depth import CameraModel, DepthImage, depth_from_msg
from molmo2_ros.core.intake import DepthGate, FrameGate
from molmo2_ros.core.stream import Stream

from .camera_input import CameraInput

INFO_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


class _DepthSubscription(CameraInput):
    """The depth image subscription: CameraInput's QoS handling, no-frame warning and intake, through a depth gate."""

    def __init__(self, node, camera: str, stream_of: Callable[[str], Stream | None], callback_group) -> None:
        super().__init__(node, camera, accepts=None, push=self._store, callback_group=callback_group)
        self.relative_topic = f"{camera}/depth" if camera else "depth"
        self.topic = node.resolve_topic(self.relative_topic)
        self._stream_of = stream_of

    def start(self) -> None:
        self._msg_type = Image
        self._deserialize_all = False
        self._last_frame = time.monotonic()
        self._warned_silent = False
        self._subscribe()

    def _new_gate(self) -> FrameGate:
        return DepthGate(self._stream, self._decode, self.counters, self._dropped)

    def _stream(self) -> Stream | None:
        return self._stream_of(self.camera)

    def _decode(self, payload: bytes, stamp_ns: int) -> DepthImage:
        return depth_from_msg(self._deserialize(payload), stamp_ns)

    def _store(self, camera: str, depth: DepthImage) -> None:
        """What the gate let through, into the depth store of the stream (None once a cleanup removed it)."""
        stream = self._stream_of(camera)
        if stream is not None and stream.depth is not None:
            stream.depth.store.add_depth(depth)


class DepthInput:
    """Depth and CameraInfo intake of one camera, feeding its stream's DepthLifter (`stream_of(camera)`: the
    configured stream, or None). Threads: both callbacks run in this input's own mutually exclusive group; the
    node's 1 Hz timer calls `tick`, `values` and `warning`."""

    def __init__(self, node, camera: str, stream_of: Callable[[str], Stream | None], callback_group) -> None:
        self.node = node
        self.camera = camera
        self._depth = _DepthSubscription(node, camera, stream_of, callback_group)
        self.info_relative_topic = f"{camera}/camera_info" if camera else "camera_info"
        self.info_topic = node.resolve_topic(self.info_relative_topic)
        self._stream_of = stream_of
        self._group = callback_group
        self._info_sub = None
        self._info_key: tuple | None = None
        self._info_state = "none received"
        self._info_warned = False
        self._started = time.monotonic()
        self._dropped_mark = 0
        self.enabled = False

    @property
    def topic(self) -> str:
        return self._depth.topic

    @property
    def counters(self):
        return self._depth.counters

    def _depth_stream(self) -> Stream | None:
        stream = self._stream_of(self.camera)
        return stream if stream is not None and stream.depth is not None else None

    # ---- subscriptions -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe when this camera's stream lifts to 3D (configured with depth enabled)."""
        self.enabled = self._depth_stream() is not None
        if not self.enabled:
            return
        self._started = time.monotonic()
        self._info_warned = False
        self._info_key = None  # a new configure made a new stream: apply the next CameraInfo again
        self._depth.start()
        self._info_sub = self.node.create_subscription(CameraInfo, self.info_relative_topic, self._on_info, INFO_QOS,
                                                       callback_group=self._group)
        self.info_topic = getattr(self._info_sub, "topic_name", self.info_topic)

    def stop(self) -> None:
        self._depth.stop()
        if self._info_sub is not None:
            self.node.destroy_subscription(self._info_sub)
            self._info_sub = None

    def _on_info(self, msg: CameraInfo) -> None:
        key = (msg.width, msg.height, tuple(msg.k), tuple(msg.d), msg.distortion_model, msg.header.frame_id)
        if key == self._info_key:
            return
        self._info_key = key
        stream = self._depth_stream()
        if stream is None:
            return
        try:
            camera = CameraModel.from_camera_info(msg.width, msg.height, msg.k, msg.d, msg.distortion_model,
                                                  msg.header.frame_id)
        except ValueError as error:
            stream.depth.set_camera(None)
            self.counters.add("camera_info_invalid")
            self._info_state = f"invalid: {error}"
            self.node.get_logger().warning(f"CameraInfo on {self.info_topic} is unusable ({error}): publishing 2D "
                                           "only for this camera")
            return
        stream.depth.set_camera(camera)
        self._info_state = f"{camera.width}x{camera.height} {camera.model or 'no distortion'}"
        self.node.get_logger().info(f"CameraInfo on {self.info_topic}: {self._info_state}; lifting points to 3D")

    # ---- 1 Hz timer --------------------------------------------------------------------------------------
    def tick(self, now: float, active: bool) -> None:
        """The depth topic's QoS re-check and no-frame warning; one warning when no CameraInfo came; the lifter's
        problems (not aligned, CameraInfo of another size), each logged once."""
        if not self.enabled:
            return
        self._depth.tick(now, active)
        if not active:
            return
        wait = self.node.get_parameter("no_frame_warn_s").value
        if self._info_key is None and now - self._started >= wait and not self._info_warned:
            self._info_warned = True
            self.node.get_logger().warning(f"no CameraInfo received on {self.info_topic} for {now - self._started:.1f}"
                                           " s: publishing 2D only (3D needs the colour camera's intrinsics)")
        stream = self._depth_stream()
        for message in stream.depth.notices.take() if stream is not None else []:
            self.node.get_logger().warning(f"{self.topic}: {message}")

    def values(self) -> dict[str, object]:
        """Depth values for the camera's /diagnostics status (intake counters prefixed `depth_`)."""
        stream = self._depth_stream()
        stats = self._depth.stats()
        values: dict[str, object] = {
            "depth_topic": self.topic, "depth_qos": stats["input_qos"], "depth_rate_hz": stats["input_rate_hz"],
            "camera_info_topic": self.info_topic, "camera_info": self._info_state,
            "depth_frames_held": stream.depth.store.held_frames() if stream is not None else 0}
        values.update(sorted((f"depth_{k}", v) for k, v in self.counters.snapshot().items()))
        return values

    def warning(self) -> str:
        """Why the camera's status should be WARN because of depth, or ''. Checked once per diagnostics period."""
        if not self.enabled:
            return ""
        counts = self.counters.snapshot()
        dropped = sum(v for k, v in counts.items() if k.startswith("bad_") or k == "camera_info_invalid")
        rose, self._dropped_mark = dropped > self._dropped_mark, dropped
        if self._depth.silent:
            return f"no depth frames on {self.topic}: 2D only"
        if self._info_key is None and self._info_warned:
            return f"no CameraInfo on {self.info_topic}: 2D only"
        if self._info_state.startswith("invalid"):
            return f"CameraInfo on {self.info_topic} is unusable: 2D only"
        if rose:
            return "depth frames or CameraInfo refused (see the depth_bad_* counts)"
        return ""
