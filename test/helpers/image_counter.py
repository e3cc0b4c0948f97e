"""Count sensor_msgs/Image messages on a topic (run as a separate process by the tests: Fast DDS reads its XML
profile once per process, so each environment needs its own process).

usage: python image_counter.py TOPIC QOS(reliable|best_effort) EXPECTED TIMEOUT_S

Prints READY once subscribed, then at the end one JSON line {"received": N, "sizes": [distinct w x h]}: after
EXPECTED messages, or TIMEOUT_S seconds after READY.
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main() -> int:
    topic, qos_name, expected, timeout_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    reliability = ReliabilityPolicy.RELIABLE if qos_name == "reliable" else ReliabilityPolicy.BEST_EFFORT
    rclpy.init()
    node = rclpy.create_node("image_counter")
    received: list[str] = []
    node.create_subscription(Image, topic, lambda m: received.append(f"{m.width}x{m.height}"),
                             QoSProfile(depth=10, reliability=reliability))
    print("READY", flush=True)
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(received), "sizes": sorted(set(received))}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
