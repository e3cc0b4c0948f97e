"""Publishes a bag's raw CDR messages with their recorded timing and /clock, like `ros2 bag play --clock`.

The only ROS-using piece of the offline tools: rclpy is imported inside `play`.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path


def message_class(msgtype: str):
    """The generated Python class for 'pkg/msg/Type' (what rosidl_runtime_py.get_message does)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise RuntimeError(f"message type {msgtype} is not available in this ROS environment "
                           f"(is its package built and sourced?): {error}") from error


def play(bag: str | Path, *, rate: float = 1.0, clock: bool = True, topics: list[str] | None = None,
         wait_subscribers: int = 1, match_timeout_s: float = 10.0, clock_hz: float = 100.0) -> int:
    """Publish every message of the bag (or of `topics`) at its recorded log time scaled by 1/rate.

    Waits until each data topic has `wait_subscribers` matched subscriptions (or match_timeout_s passed)
    before starting. /clock carries the bag's log time. Returns the number of messages published.
    """
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.highlevel import AnyReader

    if rate <= 0:
        raise ValueError("rate must be > 0")
    rclpy.init()
    published = 0
    try:
        node = rclpy.create_node("molmo2_bag_player")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        with AnyReader([Path(bag)]) as reader:
            conns = [c for c in reader.connections if not topics or c.topic in topics]
            if not conns:
                raise RuntimeError(f"no matching topics in {bag}")
            pubs = {}
            for c in conns:
                if c.topic not in pubs:
                    pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
            clock_pub = clock_cls = None
            if clock:
                clock_cls = message_class("rosgraph_msgs/msg/Clock")
                clock_pub = node.create_publisher(clock_cls, "/clock", 10)
            deadline = time.monotonic() + match_timeout_s
            while time.monotonic() < deadline and any(
                    p.get_subscription_count() < wait_subscribers for p in pubs.values()):
                rclpy.spin_once(node, timeout_sec=0.05)
            start_wall = None
            last_clock = 0.0
            for conn, log_ns, raw in reader.messages(connections=conns):
                if start_wall is None:
                    start_wall, start_log = time.monotonic(), log_ns
                target = start_wall + (log_ns - start_log) / 1e9 / rate
                while (now := time.monotonic()) < target:
                    if clock_pub is not None and now - last_clock >= 1.0 / clock_hz:
                        _publish_clock(clock_pub, clock_cls, start_log + int((now - start_wall) * rate * 1e9))
                        last_clock = now
                    time.sleep(min(target - now, 1.0 / clock_hz))
                if clock_pub is not None:
                    _publish_clock(clock_pub, clock_cls, log_ns)
                pubs[conn.topic].publish(bytes(raw))
                published += 1
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return published


def _publish_clock(pub, clock_cls, ns: int) -> None:
    msg = clock_cls()
    msg.clock.sec, msg.clock.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
    pub.publish(msg)
