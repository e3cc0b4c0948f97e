"""Cheap intake: the stamp read from the serialized message equals the deserialized header stamp, for every
camera message type, and a message too short to hold one is refused (a BadFrame of reason truncated_message)."""

from __future__ import annotations

import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from molmo2_ros.core.intake import BadFrame
from molmo2_ros.ros.camera_input import peek_stamp_ns


@pytest.mark.parametrize("msg_type", [Image, CompressedImage])
@pytest.mark.parametrize("sec,nanosec", [(0, 0), (1, 999_999_999), (1_795_000_000, 123_456_789), (2**31 - 1, 7)])
def test_peeked_stamp_equals_header_stamp(msg_type, sec, nanosec):
    msg = msg_type()
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    msg.header.frame_id = "a_rather_long_frame_id_that_follows_the_stamp"
    if msg_type is Image:
        msg.height, msg.width, msg.encoding, msg.step, msg.data = 2, 3, "rgb8", 9, bytes(range(18))
    else:
        msg.format, msg.data = "jpeg", b"\xff\xd8" * 5
    assert peek_stamp_ns(serialize_message(msg)) == sec * 1_000_000_000 + nanosec


def test_big_endian_encapsulation_is_read_as_such():
    raw = bytes([0x00, 0x00, 0, 0]) + (5).to_bytes(4, "big") + (7).to_bytes(4, "big")
    assert peek_stamp_ns(raw) == 5 * 1_000_000_000 + 7


def test_truncated_message_is_refused():
    with pytest.raises(BadFrame) as refused:
        peek_stamp_ns(b"\x00\x01\x00\x00\x05")
    assert refused.value.reason == "truncated_message" and "5 bytes" in str(refused.value)
