"""The intake's gates (core/intake.py), which the node and the replay share: colour frames are decoded only when the
clip buffer keeps their stamp, depth frames only when a kept colour frame can match them, and every drop is counted
under one vocabulary of reasons (BadFrame, of which the decoders' BadImage and BadDepth are kinds)."""

from __future__ import annotations

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.counters import Counters
from molmo2_ros.core.depth import BadDepth, DepthConfig, DepthImage, depth_from_buffer
from molmo2_ros.core.image_decode import BadImage, decode_raw
from molmo2_ros.core.intake import NO_PIXELS, BadFrame, ColourGate, DepthGate
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import NS_PER_S, Frame

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

CONFIG = StreamConfig(buffer=BufferConfig(window_s=2.0, stride_s=1.0, sample_fps=2.0))
T0 = 1_000 * NS_PER_S
PERIOD = NS_PER_S // 10  # 10 Hz in, 2 Hz kept: every fifth frame


class Recorder:
    """A decode callable and an on_drop callback that remember their calls; payloads naming a reason are refused."""

    def __init__(self, make=lambda stamp: Frame(stamp, np.zeros((4, 6, 3), np.uint8))) -> None:
        self.decoded: list[int] = []
        self.dropped: list[tuple[str, object]] = []
        self._make = make

    def decode(self, payload: str, stamp_ns: int):
        self.decoded.append(stamp_ns)
        if payload != "ok":
            raise BadImage(payload, f"refused: {payload}")
        return self._make(stamp_ns)

    def on_drop(self, error: BadFrame, payload) -> None:
        self.dropped.append((error.reason, payload))


def colour(payloads: list[str]) -> tuple[Stream, ColourGate, Recorder, Counters]:
    """Push one 10 Hz frame per payload through a colour gate into a stream."""
    stream, recorder, counters = Stream("", [], CONFIG), Recorder(), Counters()
    gate = ColourGate(stream.accepts, recorder.decode, counters, recorder.on_drop)
    for i, payload in enumerate(payloads):
        frame = gate.take(T0 + i * PERIOD, payload)
        if frame is not None:
            stream.push(frame)
    return stream, gate, recorder, counters


def test_colour_frames_are_decoded_only_when_the_buffer_keeps_them():
    stream, _, recorder, counters = colour(["ok"] * 30)
    kept = stream.buffer.counters["kept"]
    assert kept == 6 and recorder.decoded == [T0 + i * PERIOD for i in range(0, 30, 5)]
    assert counters.snapshot() == {"frames_decoded": kept}
    assert stream.buffer.counters["decimated"] == 24  # the placeholders reached the buffer and were counted


def test_placeholders_share_one_empty_image():
    stream, recorder, counters = Stream("", [], CONFIG), Recorder(), Counters()
    gate = ColourGate(stream.accepts, recorder.decode, counters, recorder.on_drop)
    stream.push(gate.take(T0, "ok"))
    skipped = gate.take(T0 + PERIOD, "never decoded")
    assert skipped.stamp_ns == T0 + PERIOD and skipped.image is NO_PIXELS and recorder.decoded == [T0]


def test_a_dropped_frame_is_counted_under_its_reason_and_the_next_frame_takes_its_slot():
    payloads = ["ok"] * 20
    payloads[5] = "truncated_data"
    stream, gate, recorder, counters = colour(payloads)
    assert recorder.dropped == [("truncated_data", "truncated_data")]
    assert T0 + 6 * PERIOD in recorder.decoded  # the slot of frame 5 goes to frame 6
    gate.drop(BadFrame("truncated_message", "serialized message too short (5 bytes)"))  # no stamp: no payload
    assert recorder.dropped[-1] == ("truncated_message", None)
    assert counters.snapshot() == {"frames_decoded": stream.buffer.counters["kept"], "bad_truncated_data": 1,
                                   "bad_truncated_message": 1}


def test_a_backward_jump_is_decoded():
    stream, recorder, counters = Stream("", [], CONFIG), Recorder(), Counters()
    gate = ColourGate(stream.accepts, recorder.decode, counters, recorder.on_drop)
    stream.push(gate.take(T0, "ok"))
    back = gate.take(T0 - 60 * NS_PER_S, "ok")  # a looping bag: the buffer restarts with this frame
    assert back.image is not NO_PIXELS and stream.accepts(back.stamp_ns) == "backward_jump"


def test_depth_frames_are_decoded_only_when_a_kept_colour_frame_can_match_them():
    config = StreamConfig(buffer=CONFIG.buffer, depth=DepthConfig(enabled=True))
    stream = Stream("", [], config)
    recorder = Recorder(lambda stamp: DepthImage(stamp, np.full((4, 6), 1000, np.uint16), 1e-3))
    counters = Counters()
    gate = DepthGate(lambda: stream, recorder.decode, counters, recorder.on_drop, prefix="depth_")
    taken = 0
    for i in range(30):
        stamp = T0 + i * PERIOD
        depth = gate.take(stamp + 3_000_000, "ok" if i != 10 else "unsupported_encoding")  # 3 ms after colour
        if depth is not None:
            stream.depth.store.add_depth(depth)
            taken += 1
        stream.push(Frame(stamp, np.zeros((4, 6, 3), np.uint8)))
    kept = stream.buffer.counters["kept"]
    assert taken == kept - 1 == 5 and len(recorder.decoded) == kept
    assert counters.snapshot() == {"depth_frames_decoded": taken, "depth_bad_unsupported_encoding": 1,
                                   "depth_frames_skipped": 30 - kept}


def test_no_depth_stream_takes_nothing_and_counts_nothing():
    recorder, counters = Recorder(), Counters()
    for stream in (None, Stream("", [], CONFIG)):  # none yet (node not configured); one without depth
        assert DepthGate(lambda: stream, recorder.decode, counters, recorder.on_drop).take(T0, "ok") is None
    assert recorder.decoded == [] and counters.snapshot() == {}


@pytest.mark.parametrize("fields,reason", [
    (dict(width=0), "empty_image"), (dict(step=5), "bad_step"), (dict(data=bytes(10)), "truncated_data"),
    (dict(encoding="32SC1"), "unsupported_encoding")])
def test_colour_and_depth_decoders_refuse_alike(fields, reason):
    """The same faulty sensor_msgs/Image fields give the same drop reason as colour (mono16) and as depth (16UC1)."""
    image = {"encoding": "", "width": 4, "height": 3, "step": 8, "is_bigendian": 0, "data": bytes(24), **fields}
    args = [image[k] for k in ("width", "height", "step", "is_bigendian", "data")]
    with pytest.raises(BadImage) as as_colour:
        decode_raw(image["encoding"] or "mono16", *args)
    with pytest.raises(BadDepth) as as_depth:
        depth_from_buffer(image["encoding"] or "16UC1", *args, T0)
    assert isinstance(as_colour.value, BadFrame) and isinstance(as_depth.value, BadFrame)
    assert as_colour.value.reason == as_depth.value.reason == reason
