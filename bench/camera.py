"""Camera process of the node benches: pre-built frames (default 1920x1080 rgb8; any size; or JPEG
CompressedImage) at a fixed rate, stamped with its own clock.

usage: python -m bench.camera --topic /bench/camera/image_raw --seconds 60 [--rate 30] [--qos reliable]
       [--width 1280 --height 720] [--jpeg] [--frame-id cam]

Builds a few distinct frames up front (`msg.data = arr.tobytes()`: assigning the ndarray itself costs ~350 ms
per frame), waits until a subscriber matched, then publishes `rate * seconds` frames on a drift-free schedule;
header.stamp is this process's ROS clock (system time), so receivers can compute ages against their wall clock.
Prints JSON lines on stdout: {"event": "matched"}, {"event": "first"}, and at the end
{"event": "done", "frames_sent", "seconds", "late_max_ms", "publish_ms_p50", "publish_ms_p99", "cpu_s"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image


def frames(count: int, frame_id: str, width: int = 1920, height: int = 1080,
           jpeg: bool = False) -> list[Image | CompressedImage]:
    """`count` distinct frames (a gradient with a moving bright square): rgb8 Images with data as bytes, or JPEG
    CompressedImages."""
    import cv2

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 96)], axis=-1).astype(np.uint8)
    side = max(8, height // 5)
    out = []
    for i in range(count):
        img = base.copy()
        x = side // 2 + i * (width - 2 * side) // max(count, 1)
        img[height // 2 - side // 2:height // 2 + side // 2, x:x + side] = (255, 40, 40)
        if jpeg:
            ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            out.append(CompressedImage(format="rgb8; jpeg compressed bgr8", data=buf.tobytes()))
        else:
            out.append(Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                             data=img.tobytes()))
        out[-1].header.frame_id = frame_id
    return out


def _say(**record) -> None:
    print(json.dumps(record), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="/bench/camera/image_raw")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--qos", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--distinct", type=int, default=8, help="distinct pre-built frames cycled over")
    parser.add_argument("--match-timeout", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--jpeg", action="store_true", help="publish JPEG sensor_msgs/CompressedImage")
    parser.add_argument("--frame-id", default="bench_camera")
    args = parser.parse_args()

    msgs = frames(args.distinct, args.frame_id, args.width, args.height, args.jpeg)
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    reliability = ReliabilityPolicy.RELIABLE if args.qos == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(CompressedImage if args.jpeg else Image, args.topic, QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                                                              reliability=reliability))
    clock = node.get_clock()
    try:
        deadline = time.monotonic() + args.match_timeout
        while pub.get_subscription_count() == 0:  # wait for matching (the node subscribes once it sees us)
            if time.monotonic() > deadline:
                _say(event="error", reason="no subscriber matched")
                return 2
            time.sleep(0.01)
        _say(event="matched")
        count = int(round(args.rate * args.seconds))
        period = 1.0 / args.rate
        publish_ms: list[float] = []
        late_max = 0.0
        cpu0 = time.process_time()
        t0 = time.monotonic()
        for i in range(count):
            due = t0 + i * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            late_max = max(late_max, time.monotonic() - due)
            msg = msgs[i % len(msgs)]
            msg.header.stamp = clock.now().to_msg()
            started = time.perf_counter()
            pub.publish(msg)
            publish_ms.append((time.perf_counter() - started) * 1e3)
            if i == 0:
                _say(event="first")
        seconds = time.monotonic() - t0
        publish_ms.sort()
        _say(event="done", frames_sent=count, seconds=round(seconds, 3), late_max_ms=round(late_max * 1e3, 2),
             publish_ms_p50=round(publish_ms[len(publish_ms) // 2], 3),
             publish_ms_p99=round(publish_ms[min(len(publish_ms) - 1, len(publish_ms) * 99 // 100)], 3),
             cpu_s=round(time.process_time() - cpu0, 2))
        # Keep the writer alive until the reliable history is acknowledged (or a bounded wait passes).
        pub.wait_for_all_acked(rclpy.duration.Duration(seconds=5.0))
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
