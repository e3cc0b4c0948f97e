"""One vocabulary of drop reasons: the same bad messages, serialized once, go through the node's intake (CameraInput
and the depth subscription, as their raw subscriptions hand them over) and through the replay's (runtime_frames and
DepthFeeder, read from a bag holding those bytes), and both count the same drops under the same reasons, the same
frames decoded and the same buffer counts.

Not compared: data too short to hold a header stamp (the node reads the stamp from the bytes: truncated_message,
test_camera_input.py; a bag reader deserializes the whole message: undeserializable, test_offline_bags.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.depth import DepthConfig
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import NS_PER_S, Frame
from molmo2_ros.offline.data.bags import CameraBag
from molmo2_ros.offline.data.depth_bag import DepthFeeder
from molmo2_ros.offline.replay import runtime_frames
from molmo2_ros.ros.camera_input import CameraInput
from molmo2_ros.ros.depth_input import DepthInput

# frames one second apart: the buffer (2 fps) keeps every one, so every message is decoded or dropped
CONFIG = StreamConfig(buffer=BufferConfig(window_s=4.0, stride_s=1.0, sample_fps=2.0))
DEPTH_CONFIG = StreamConfig(buffer=CONFIG.buffer, depth=DepthConfig(enabled=True))
T0_S = 100
COLOUR, DEPTH = "/camera/image", "/camera/depth"


def raw(**fields) -> Image:
    msg = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(72))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def depth(**fields) -> Image:
    return raw(**{"encoding": "16UC1", "step": 12, "data": bytes(48), **fields})


def compressed(data: bytes, format: str = "jpeg") -> CompressedImage:
    return CompressedImage(format=format, data=data)


GOOD_JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
UNDESERIALIZABLE = "undeserializable"  # the message's serialized bytes cut in half: its stamp can still be read
# (message or UNDESERIALIZABLE, the reason it is dropped for; "" = decoded)
COLOUR_CASES = [
    (raw(), ""),
    (raw(encoding="32FC1"), "unsupported_encoding"),
    (raw(encoding="no_such_encoding"), "unsupported_encoding"),
    (raw(width=0, data=b""), "empty_image"),
    (raw(height=0), "empty_image"),
    (raw(step=10), "bad_step"),
    (raw(data=bytes(40)), "truncated_data"),
    (raw(encoding="yuv422", width=5, step=10, data=bytes(40)), "undecodable"),
    (raw(encoding="mono16", step=11), "bad_step"),
    (raw(encoding="bayer_rggb16", step=12, data=bytes(30)), "truncated_data"),
    (UNDESERIALIZABLE, "undeserializable"),
    (raw(), "")]
COMPRESSED_CASES = [
    (compressed(GOOD_JPEG), ""),
    (compressed(b""), "empty_data"),
    (compressed(b"\x00not an image" * 5), "undecodable"),
    (compressed(b"\x89PNG....", "16UC1; compressedDepth png"), "undecodable"),
    (UNDESERIALIZABLE, "undeserializable"),
    (compressed(GOOD_JPEG), "")]
DEPTH_CASES = [
    (depth(), ""),
    (depth(encoding="mono16"), "unsupported_encoding"),
    (depth(width=0, data=b""), "empty_image"),
    (depth(step=10), "bad_step"),
    (depth(data=bytes(30)), "truncated_data"),
    (UNDESERIALIZABLE, "undeserializable"),
    (depth(), "")]


def serialized(cases: list, template, nanosec: int = 0) -> list[bytes]:
    """The CDR bytes of each case, stamped T0_S + its index seconds (+ nanosec)."""
    out = []
    for i, (msg, _) in enumerate(cases):
        cut = msg == UNDESERIALIZABLE
        msg = template() if cut else msg
        msg.header.stamp = Time(sec=T0_S + i, nanosec=nanosec)
        data = serialize_message(msg)
        out.append(data[:len(data) // 2] if cut else data)
    return out


def expected(cases: list, prefix: str = "") -> dict[str, int]:
    """The counts the cases should give: frames_decoded and bad_<reason>."""
    return dict(Counter(f"{prefix}bad_{reason}" if reason else f"{prefix}frames_decoded" for _, reason in cases))


def write_bag(path: Path, *topics: tuple[str, str, list[bytes]]) -> Path:
    """An mcap bag of (topic, msgtype, serialized messages), message i logged at T0_S + i seconds."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, msgtype, messages in topics:
            conn = writer.add_connection(topic, msgtype, typestore=store)
            for i, data in enumerate(messages):
                writer.write(conn, (T0_S + i) * NS_PER_S, data)
    return path


class StubNode:
    """What CameraInput and DepthInput ask of their node: parameters, topic names, a logger, subscriptions (their
    callbacks are kept by relative topic name: `callbacks["image"](raw)` is a raw subscription's delivery)."""

    def __init__(self, compressed: bool = False) -> None:
        self.params = {"input_compressed": compressed, "qos": "reliable", "input_depth": 10}
        self.callbacks: dict[str, Callable] = {}
        self.warnings: list[str] = []

    def resolve_topic(self, name: str) -> str:
        return f"/camera/{name}"

    def camera_param(self, camera: str, name: str):
        return self.params[name]

    def get_parameter(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(value=False)  # intake_deserialize_all: off, as by default

    def create_subscription(self, msg_type, topic: str, callback: Callable, *args, **kwargs) -> SimpleNamespace:
        self.callbacks[topic] = callback
        return SimpleNamespace(topic_name=self.resolve_topic(topic))

    def get_logger(self) -> StubNode:
        return self

    def info(self, message: str, **kwargs) -> None:
        pass

    def warning(self, message: str, **kwargs) -> None:
        self.warnings.append(message)


def counts(snapshot: dict[str, int], prefix: str = "") -> dict[str, int]:
    """The intake's counts of a counter snapshot."""
    return {k: v for k, v in snapshot.items() if k.startswith((f"{prefix}bad_", f"{prefix}frames_decoded"))}


def buffer_counts(stream: Stream) -> dict[str, int]:
    return {k: v for k, v in stream.counter_snapshot().items() if k.startswith("buffer_")}


@pytest.mark.parametrize("cases,template", [(COLOUR_CASES, Image), (COMPRESSED_CASES, CompressedImage)],
                         ids=["Image", "CompressedImage"])
def test_colour_drops_count_alike_in_the_node_and_the_replay(cases, template, tmp_path):
    messages = serialized(cases, template)
    node, live = StubNode(compressed=template is CompressedImage), Stream("", [], CONFIG)
    camera = CameraInput(node, "", lambda _, stamp: live.accepts(stamp), lambda _, frame: live.push(frame), None)
    camera.start()
    for data in messages:
        node.callbacks["image"](data)

    replayed, warnings = Stream("", [], CONFIG), []
    with CameraBag(write_bag(tmp_path / "bag", (COLOUR, f"sensor_msgs/msg/{template.__name__}", messages))) as bag:
        for frame in runtime_frames(bag, replayed, warnings.append):
            replayed.push(frame)

    assert counts(camera.counters.snapshot()) == counts(replayed.counters.snapshot()) == expected(cases)
    assert buffer_counts(live) == buffer_counts(replayed)
    for reason in {r for _, r in cases if r}:  # each reason named on both sides
        assert any(f"({reason})" in w for w in node.warnings) and any(f"bad_{reason}" in w for w in warnings)


def test_depth_drops_count_alike_in_the_node_and_the_replay(tmp_path):
    colour = [Frame((T0_S + i) * NS_PER_S, np.zeros((4, 6, 3), np.uint8)) for i in range(len(DEPTH_CASES))]
    messages = serialized(DEPTH_CASES, Image, nanosec=3_000_000)  # 3 ms after its colour frame

    node, live = StubNode(), Stream("", [], DEPTH_CONFIG)
    depth_input = DepthInput(node, "", lambda _: live, None)
    depth_input.start()
    for frame, data in zip(colour, messages):
        node.callbacks["depth"](data)
        live.push(frame)

    replayed = Stream("", [], DEPTH_CONFIG)
    feeder = DepthFeeder(write_bag(tmp_path / "bag", (DEPTH, "sensor_msgs/msg/Image", messages)), replayed, COLOUR,
                         DEPTH, warn=lambda message: None)
    for frame in colour:
        feeder.feed_until(frame.stamp_ns)
        replayed.push(frame)
    feeder.close()

    live_counts = {f"depth_{k}": n for k, n in depth_input.counters.snapshot().items()}  # as /diagnostics names them
    assert counts(live_counts, "depth_") == counts(replayed.counters.snapshot(), "depth_") == expected(DEPTH_CASES,
                                                                                                        "depth_")
    assert live.counters["depth_frames_matched"] == replayed.counters["depth_frames_matched"] == 2
