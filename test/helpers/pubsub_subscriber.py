"""Receive one message of every molmo2_ros message type and print each as a JSON line, then exit
(run as a separate process by the tests).

usage: python pubsub_subscriber.py [TOPIC_PREFIX] [TIMEOUT_S]

Prints `{"type": <TypeName>, "msg": <fields as nested dicts>}` per received message, after a line `READY`.
Exit status: 0 when every type arrived, 1 on timeout.
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy

from sample_msgs import sample_messages, to_dict


def main() -> int:
    prefix = sys.argv[1] if len(sys.argv) > 1 else "/molmo2_test"
    timeout_s = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = rclpy.create_node("molmo2_test_subscriber")
    received: dict[str, object] = {}

    def make_callback(name: str):
        def callback(msg) -> None:
            if name not in received:
                received[name] = msg
                print(json.dumps({"type": name, "msg": to_dict(msg)}, ensure_ascii=False), flush=True)

        return callback

    try:
        samples = sample_messages()
        subs = [node.create_subscription(type(msg), f"{prefix}/{name}", make_callback(name), qos)
                for name, msg in samples.items()]
        print("READY", flush=True)
        deadline = time.monotonic() + timeout_s
        while len(received) < len(samples):
            if time.monotonic() > deadline:
                missing = sorted(set(samples) - set(received))
                print(f"subscriber: timed out after {timeout_s} s, missing {missing}", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.05)
        del subs
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
