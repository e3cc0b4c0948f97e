"""Publish one sample of every molmo2_ros message type, then exit (run as a separate process by the tests).

usage: python pubsub_publisher.py [TOPIC_PREFIX]

Each type goes to TOPIC_PREFIX/<TypeName> with RELIABLE QoS. The publisher waits until every topic has a
subscriber (deadline, no fixed sleep), publishes, and waits until all samples are acknowledged before it
shuts down, so nothing is lost in flight. Exit status: 0 ok, 2 no subscriber in time, 3 not acknowledged.
"""

from __future__ import annotations

import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy

from sample_msgs import sample_messages

MATCH_TIMEOUT_S = 20.0
ACK_TIMEOUT_S = 10.0


def main() -> int:
    prefix = sys.argv[1] if len(sys.argv) > 1 else "/molmo2_test"
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = rclpy.create_node("molmo2_test_publisher")
    try:
        samples = sample_messages()
        pubs = {name: node.create_publisher(type(msg), f"{prefix}/{name}", qos) for name, msg in samples.items()}

        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() > deadline:
                missing = [n for n, p in pubs.items() if p.get_subscription_count() == 0]
                print(f"publisher: no subscriber within {MATCH_TIMEOUT_S} s for {missing}", file=sys.stderr)
                return 2
            rclpy.spin_once(node, timeout_sec=0.02)

        for name, msg in samples.items():
            pubs[name].publish(msg)

        for name, pub in pubs.items():
            if not pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                print(f"publisher: {name} not acknowledged within {ACK_TIMEOUT_S} s", file=sys.stderr)
                return 3
        print("publisher: all acknowledged", flush=True)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
