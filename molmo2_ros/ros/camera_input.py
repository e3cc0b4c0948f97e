"""One camera's input: its subscription (QoS as a parameter, `auto` matches the publishers), cheap intake, and
its input statistics.

Cheap intake: the subscription takes the serialized message (a raw subscription). The header stamp is read from
the first bytes of the CDR data and the frame goes through the intake's gate (core/intake.py, as in a replay): the
camera's clip buffer says whether it keeps that stamp (at most `sample_fps`, 2 Hz by default), and only kept frames
are deserialized and decoded; the other ~93 % of a 30 Hz camera never become Python messages.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rclpy.qos import HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from molmo2_ros.core.counters import Counters
from molmo2_ros.core.image_decode import frame_from_compressed, frame_from_image
from molmo2_ros.core.intake import BadFrame, ColourGate, FrameGate
from molmo2_ros.core.types import Frame

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

THROTTLE_S = 5.0


def peek_stamp_ns(raw: bytes) -> int:
    """header.stamp (ns) of a serialized sensor_msgs/Image or CompressedImage without deserializing it.

    Both start with std_msgs/Header, whose stamp (int32 sec, uint32 nanosec) is the first field after the 4-byte
    CDR encapsulation header; bit 0 of the encapsulation kind is the byte order (1 = little endian), in XCDR1 and
    XCDR2 alike. Raises BadFrame (truncated_message)."""
    if len(raw) < 12:
        raise BadFrame("truncated_message", f"serialized message too short ({len(raw)} bytes)")
    sec, nanosec = struct.unpack_from("<iI" if raw[1] & 1 else ">iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


class CameraInput:
    """Subscription and intake of one camera. `push(camera, frame)` and `accepts(camera, stamp)` are the runtime's.

    Threads: the image callback runs in its own mutually exclusive group (one frame at a time per camera); the
    node's 1 Hz timer calls `tick` and `stats`, which read under a lock."""

    def __init__(self, node, camera: str, accepts: Callable[[str, int], str] | None,
                 push: Callable[[str, Any], object], callback_group) -> None:
        self.node = node
        self.camera = camera
        self.relative_topic = f"{camera}/image" if camera else "image"
        self.topic = node.resolve_topic(self.relative_topic)
        self._accepts, self._push = accepts, push
        self._group = callback_group
        self.counters = Counters()
        self._sub = None
        self._qos_mode = ""
        self._recheck = False
        self._msg_type = Image
        self._to_frame = frame_from_image
        self._deserialize_all = False
        self._gate = self._new_gate()
        self._lock = threading.Lock()
        self._callback_ms: deque[float] = deque(maxlen=2048)  # ~68 s at 30 Hz
        self._last_frame = time.monotonic()
        self._warned_silent = False
        self._rate_mark = (time.monotonic(), 0)
        self.input_rate_hz = 0.0

    def _param(self, name: str):
        return self.node.camera_param(self.camera, name)

    # ---- subscription ------------------------------------------------------------------------------------
    def start(self) -> None:
        compressed = bool(self._param("input_compressed"))
        self._msg_type = CompressedImage if compressed else Image
        self._to_frame = frame_from_compressed if compressed else frame_from_image
        self._deserialize_all = bool(self.node.get_parameter("intake_deserialize_all").value)
        self._last_frame = time.monotonic()
        self._warned_silent = False
        self._subscribe()

    def stop(self) -> None:
        if self._sub is not None:
            self.node.destroy_subscription(self._sub)
            self._sub = None
        self._recheck = False

    def _subscribe(self) -> None:
        """Create the subscription; with qos=auto wait until a publisher shows its reliability."""
        mode = self._param("qos")
        if mode == "auto":
            infos = self.node.get_publishers_info_by_topic(self.topic)
            if not infos:
                if not self._recheck:
                    self.node.get_logger().info(f"qos auto: waiting for a publisher on {self.topic} to match its "
                                                "reliability")
                self._recheck = True
                return
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            mode = "reliable" if reliable else "sensor_data"
        self._recheck = False
        reliability = qos_profile_sensor_data.reliability if mode == "sensor_data" else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(depth=self._param("input_depth"), history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._sub = self.node.create_subscription(self._msg_type, self.relative_topic, self._on_raw, qos,
                                                  callback_group=self._group, event_callbacks=events, raw=True)
        self.topic = getattr(self._sub, "topic_name", self.topic)
        self._qos_mode = mode
        self.node.get_logger().info(f"subscribed to {self.topic} ({self._msg_type.__name__}) with {mode} QoS")

    def _on_incompatible_qos(self, event) -> None:
        try:
            policy = QoSPolicyKind(int(event.last_policy_kind)).name
        except (AttributeError, ValueError, TypeError):
            policy = "unknown"
        self.node.get_logger().warning(
            f"a publisher on {self.topic} offers QoS incompatible with this node's {self._qos_mode} subscription "
            f"(policy {policy}): its frames are NOT received. Set the parameter qos to auto or sensor_data.")
        if self._param("qos") == "auto" and self._sub is not None:
            self._recheck = True

    # ---- intake ------------------------------------------------------------------------------------------
    def _new_gate(self) -> FrameGate:
        """The gate this input's frames pass (the depth subscription's is a DepthGate)."""
        return ColourGate(self._verdict, self._decode, self.counters, self._dropped)

    def _on_raw(self, raw: bytes) -> None:
        started = time.perf_counter()
        try:
            self.take(raw)
        finally:
            with self._lock:
                self._callback_ms.append((time.perf_counter() - started) * 1e3)

    def take(self, raw: bytes) -> None:
        """One serialized message: counted, its stamp read, through the gate; what comes out is pushed."""
        self._last_frame = time.monotonic()
        self.counters.add("frames_received")
        try:
            stamp = peek_stamp_ns(raw)
            # intake_deserialize_all, the comparison mode: what a plain (non-raw) subscription costs
            payload = self._deserialize(raw) if self._deserialize_all else raw
        except BadFrame as error:
            self._gate.drop(error)
            return
        taken = self._gate.take(stamp, payload)
        if taken is not None:
            self._push(self.camera, taken)

    def _verdict(self, stamp_ns: int) -> str:
        """The clip buffer's verdict on a stamp, with a warning for zero stamps."""
        verdict = self._accepts(self.camera, stamp_ns)
        if verdict == "zero_stamp":
            self.node.get_logger().warning(f"frames on {self.topic} have a zero stamp: dropped",
                                           throttle_duration_sec=THROTTLE_S)
        return verdict

    def _decode(self, payload: Any, stamp_ns: int) -> Frame:
        """A kept frame: deserialized here unless intake_deserialize_all did it already, then decoded."""
        msg = payload if self._deserialize_all else self._deserialize(payload)
        return self._to_frame(msg, stamp_ns)

    def _deserialize(self, raw: bytes) -> Any:
        """The message of serialized data. Raises BadFrame (undeserializable)."""
        try:
            return deserialize_message(raw, self._msg_type)
        except Exception as error:  # noqa: BLE001 - corrupt CDR from a misbehaving publisher
            raise BadFrame("undeserializable", f"{type(error).__name__}: {error}") from error

    def _dropped(self, error: BadFrame, _payload: object) -> None:
        self.node.get_logger().warning(f"dropping bad frame(s) from {self.topic} ({error.reason}): {error}",
                                       throttle_duration_sec=THROTTLE_S)

    # ---- 1 Hz timer --------------------------------------------------------------------------------------
    def tick(self, now: float, active: bool) -> None:
        """QoS re-check (qos=auto), the no-frame warning, the input rate."""
        if active:
            if self._recheck:
                self.stop()
                self._subscribe()
            silent = now - self._last_frame
            if silent >= self.node.get_parameter("no_frame_warn_s").value and not self._warned_silent:
                self._warned_silent = True
                self.node.get_logger().warning(f"no frame received on {self.topic} for {silent:.1f} s "
                                               f"({self.publisher_hint()})")
            elif silent < 1.0:
                self._warned_silent = False
        mark_t, mark_n = self._rate_mark
        received = self.counters["frames_received"]
        self.input_rate_hz = (received - mark_n) / max(now - mark_t, 1e-6)
        self._rate_mark = (now, received)

    @property
    def silent(self) -> bool:
        """True while the no-frame warning stands."""
        return self._warned_silent

    def publisher_hint(self) -> str:
        infos = self.node.get_publishers_info_by_topic(self.topic)
        if not infos:
            return "no publisher on this topic: check the camera and the remapping of " + repr(self.relative_topic)
        kinds = sorted({"reliable" if i.qos_profile.reliability == ReliabilityPolicy.RELIABLE else "best effort"
                        for i in infos})
        return (f"{len(infos)} publisher(s), {'/'.join(kinds)}; this node subscribes with "
                f"{self._qos_mode or 'no'} QoS, type {self._msg_type.__name__}")

    def stats(self) -> dict[str, str]:
        """Input values for /diagnostics."""
        with self._lock:
            cb = sorted(self._callback_ms)
        return {
            "input_topic": self.topic, "input_type": self._msg_type.__name__, "input_qos": self._qos_mode,
            "input_rate_hz": f"{self.input_rate_hz:.2f}",
            "callback_ms_p50": f"{cb[len(cb) // 2]:.3f}" if cb else "",
            "callback_ms_p99": f"{cb[min(len(cb) - 1, len(cb) * 99 // 100)]:.3f}" if cb else "",
        }
