"""Publishes a bag's raw CDR messages with their recorded timing and /clock, like `ros2 bag play --clock`.

The only ROS-using piece of the offline tools: rclpy is imported inside `play`. Bags are opened with
`bags.open_storage` (no message definitions needed: every topic is published with its generated ROS class), so
Humble bags without definitions and bags with unparsable schemas play too.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from molmo2_ros.offline.data.bags import BagError, is_service_event, open_storage

MATCH_SETTLE_S = 0.5
ACK_TIMEOUT_S = 5.0


def message_class(msgtype: str):
    """The generated Python class for 'pkg/msg/Type' (what rosidl_runtime_py.get_message does)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise BagError(f"message type {msgtype} is not available in this ROS environment (build and source its "
                       f"package, or leave its topic out of --topics): {error}") from error


def playable_connections(connections, topics: list[str] | None = None) -> tuple[list, list[str]]:
    """(connections to publish, notes on the topics left out).

    With `topics`, exactly those (BagError when one is missing from the bag). Without, every topic except
    service-introspection events (recorded service calls, not topics to republish; `ros2 bag play` skips them
    too) and topics whose message type this ROS environment does not have."""
    if topics:
        missing = sorted(set(topics) - {c.topic for c in connections})
        if missing:
            known = ", ".join(sorted({c.topic for c in connections})) or "none"
            raise BagError(f"topic(s) {', '.join(missing)} not in the bag: pass --topics with some of: {known}")
        return [c for c in connections if c.topic in topics], []
    chosen, notes = [], []
    for c in connections:
        if is_service_event(c):
            notes.append(f"{c.topic} [{c.msgtype}]: service event, not replayed")
            continue
        try:
            message_class(c.msgtype)
        except BagError:
            notes.append(f"{c.topic} [{c.msgtype}]: message type not available here, not replayed")
            continue
        chosen.append(c)
    if not chosen:
        raise BagError("no topic of the bag can be replayed here: " + "; ".join(notes))
    return chosen, notes


def play(bag: str | Path, *, rate: float = 1.0, clock: bool = True, topics: list[str] | None = None,
         wait_subscribers: int = 1, match_timeout_s: float = 10.0, clock_hz: float = 100.0) -> int:
    """Publish every message of the bag (or of `topics`) at its recorded log time scaled by 1/rate.

    Waits until each data topic has `wait_subscribers` matched subscriptions (or match_timeout_s passed)
    before starting. /clock carries the bag's log time. Returns the number of messages published.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    reader, ros1 = open_storage(Path(bag))
    try:
        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    except ImportError as error:
        reader.close()
        raise BagError(f"play needs ROS 2 ({error}): source your ROS 2 setup, or run it through scripts/with_ros") \
            from error
    if ros1:
        reader.close()
        raise BagError(f"'{bag}' is a ROS 1 bag: its messages are not ROS 2 CDR; convert it first "
                       f"(e.g. `rosbags-convert --src {bag} --dst out_bag`)")
    try:
        conns, notes = playable_connections(reader.connections, topics)
    except BagError:
        reader.close()
        raise
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    rclpy.init()
    published = 0
    try:
        node = rclpy.create_node("molmo2_bag_player")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
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
        # The publisher sees a subscription before that subscription has matched the publisher: a message sent at
        # once can be lost (the first of 20 was, in tests). Discovery completes within this settle time.
        settle = time.monotonic() + MATCH_SETTLE_S
        while time.monotonic() < settle:
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
        # Reliable messages still in flight are lost when the publisher goes away: wait for their acknowledgement.
        from rclpy.duration import Duration
        for topic, pub in pubs.items():
            if not pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                print(f"note: {topic}: not every subscriber acknowledged the last messages within "
                      f"{ACK_TIMEOUT_S:.0f} s", file=sys.stderr)
        node.destroy_node()
    finally:
        reader.close()
        rclpy.try_shutdown()
    return published


def _publish_clock(pub, clock_cls, ns: int) -> None:
    msg = clock_cls()
    msg.clock.sec, msg.clock.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
    pub.publish(msg)
