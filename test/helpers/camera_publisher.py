"""A fake camera process for the node tests: publishes solid-colour frames described by a JSON spec.

usage: python camera_publisher.py SPEC_JSON

SPEC keys: topic, qos ("reliable" | "best_effort"), rate (Hz, wall), count, t0 (s), dt (s of stamp per frame),
width, height, frame_id, compressed (bool), wait_for_subscriber (bool, default true), frames: list of frame
variants cycled over the count, each {encoding, color: [r, g, b], pad (bytes per row), bad (kind)}.
Bad kinds (raw): unsupported, empty, truncated, bad_step, odd_width; (compressed): garbage, empty.
Prints one JSON line per published frame: {"i", "stamp", "encoding", "expected" (RGB or null), "bad"}.
SIGUSR1 prints every thread's Python stack to stderr (ros_client.finish_camera asks for it when the process hangs).
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import time

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

BPP = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2, "yuv422": 2, "uyvy": 2,
       "yuyv": 2, "bayer_rggb8": 1, "rgb16": 6}


def _yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return int(round(y)), int(round(128 + 0.564 * (b - y))), int(round(128 + 0.713 * (r - y)))


def pixels(encoding: str, rgb: tuple[int, int, int], w: int, h: int) -> tuple[np.ndarray, tuple | None]:
    """(rows of pixel bytes (h, w * bpp), expected decoded RGB)."""
    r, g, b = rgb
    gray = int(round(0.299 * r + 0.587 * g + 0.114 * b))
    y, u, v = _yuv(rgb)
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        px = {"rgb8": [r, g, b], "bgr8": [b, g, r], "rgba8": [r, g, b, 255], "bgra8": [b, g, r, 255]}[encoding]
        return np.tile(np.array(px, np.uint8), (h, w)), rgb
    if encoding == "rgb16":
        return np.tile(np.array([r, g, b], "<u2") * 257, (h, w)).view(np.uint8), rgb
    if encoding == "mono8":
        return np.full((h, w), gray, np.uint8), (gray,) * 3
    if encoding == "mono16":
        return np.full((h, w), gray * 257, "<u2").view(np.uint8), (gray,) * 3
    if encoding in ("yuv422", "uyvy"):
        return np.tile(np.array([u, y, v, y], np.uint8), (h, w // 2)), rgb
    if encoding == "yuyv":
        return np.tile(np.array([y, u, y, v], np.uint8), (h, w // 2)), rgb
    if encoding == "bayer_rggb8":
        tile = np.array([[r, g], [g, b]], np.uint8)
        return np.tile(tile, (h // 2, w // 2)), rgb
    raise ValueError(encoding)


def raw_image(variant: dict, w: int, h: int) -> tuple[Image, tuple | None]:
    enc = variant.get("encoding", "rgb8")
    bad = variant.get("bad", "")
    rows, expected = pixels(enc, tuple(variant.get("color", (200, 100, 50))), w, h)
    pad = int(variant.get("pad", 0))
    data = np.full((h, rows.shape[1] + pad), 0xAB, np.uint8)
    data[:, :rows.shape[1]] = rows
    msg = Image(height=h, width=w, encoding=enc, is_bigendian=0, step=data.shape[1], data=data.tobytes())
    if bad == "unsupported":
        msg.encoding = "32FC1"
    elif bad == "empty":
        msg.width = msg.height = 0
        msg.data = b""
    elif bad == "truncated":
        msg.data = data.tobytes()[:data.size // 2]
    elif bad == "bad_step":
        msg.step = w - 1
    elif bad == "odd_width":
        msg.encoding, msg.width, msg.step = "yuv422", w - 1, (w - 1) * 2
    return msg, (None if bad else expected)


def compressed_image(variant: dict, w: int, h: int) -> tuple[CompressedImage, tuple | None]:
    rgb = tuple(variant.get("color", (200, 100, 50)))
    fmt = variant.get("format", "png")
    bad = variant.get("bad", "")
    ok, buf = cv2.imencode(f".{fmt}", np.full((h, w, 3), rgb[::-1], np.uint8))
    assert ok
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8", data=buf.tobytes())
    if bad == "garbage":
        msg.data = b"\x00not an image" * 10
    elif bad == "empty":
        msg.data = b""
    return msg, (None if bad else rgb)


def main() -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    spec = json.loads(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("fake_camera")
    reliability = ReliabilityPolicy.RELIABLE if spec.get("qos") == "reliable" else ReliabilityPolicy.BEST_EFFORT
    msg_type = CompressedImage if spec.get("compressed") else Image
    pub = node.create_publisher(msg_type, spec["topic"], QoSProfile(depth=10, reliability=reliability))
    w, h = int(spec.get("width", 64)), int(spec.get("height", 48))
    variants = spec.get("frames") or [{}]
    try:
        if spec.get("wait_for_subscriber", True):
            deadline = time.monotonic() + 20.0
            while rclpy.ok() and pub.get_subscription_count() == 0:
                if time.monotonic() > deadline:
                    print("camera: no subscriber", file=sys.stderr)
                    return 2
                time.sleep(0.02)
        period = 1.0 / float(spec.get("rate", 20.0))
        next_t = time.monotonic()
        for i in range(int(spec.get("count", 20))):
            variant = variants[i % len(variants)]
            make = compressed_image if spec.get("compressed") else raw_image
            msg, expected = make(variant, w, h)
            stamp = int(round((float(spec.get("t0", 1000.0)) + i * float(spec.get("dt", 0.5))) * 1e9))
            msg.header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                frame_id=spec.get("frame_id", "camera_optical"))
            pub.publish(msg)
            print(json.dumps({"i": i, "stamp": stamp, "encoding": variant.get("encoding", "rgb8"),
                              "expected": expected, "bad": variant.get("bad", "")}), flush=True)
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
