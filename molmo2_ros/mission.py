"""An example mission that acts on molmo2 (`ros2 run molmo2_ros example_mission`): a py_trees tree that waits until
"the ball falls" (a standing event query), then publishes a geometry_msgs/PoseStamped goal at the ball's 3D
position: the newest valid 3D evidence point of the event, in the camera's optical frame, header stamp = that
point's source stamp (the event's own stamp, its latest evidence, when that point has depth).

    ros2 run molmo2_ros example_mission --node /molmo2 --query ball_fall --text "ball falling" \\
        --ros-args -p use_sim_time:=true

The event query is added through ManageQueries when the node does not have it. The node needs `depth.enabled` for a
goal (without depth the tree fails with "no 3D evidence"). Prints "mission: ready" once the event topic is matched,
then, when the tree ends, one JSON line: status (SUCCESS/FAILURE), reason, event (id, state, start/end/stamp ns),
goal (frame_id, stamp_ns, position [m]), reconnects. Exit status 0 on SUCCESS, 1 on FAILURE, 2 on a bad argument.
`make mission` plays a scenario bag into a live node and checks the goal against the ground truth
(scripts/mission.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import py_trees
import rclpy
from geometry_msgs.msg import PoseStamped
from py_trees.common import Access, Status
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from molmo2_ros.behaviours import WaitForEvent
from molmo2_ros.client import Molmo2Client, Molmo2Error, Sample, stamp_ns

# Transient local: a goal consumer that subscribes late still gets the goal (it also matches volatile readers).
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def goal_from_event(event: Sample) -> PoseStamped | None:
    """The goal at the event's newest valid 3D evidence point (optical frame, the point's stamp, identity
    orientation), or None when no evidence point has depth."""
    points = event.points3d()
    if not points:
        return None
    p = points[0]
    goal = PoseStamped()
    goal.header.frame_id = event.msg3d.header.frame_id
    goal.header.stamp = p.point.stamp
    goal.pose.position = p.position
    goal.pose.orientation.w = 1.0
    return goal


class PublishGoal(py_trees.behaviour.Behaviour):
    """Publishes the goal of the event on the blackboard under `key` (goal_from_event); FAILURE "no 3D evidence"
    when it has none. `goal` holds what was published."""

    def __init__(self, name: str, publisher, key: str = "/event") -> None:
        super().__init__(name)
        self.publisher, self.key = publisher, key
        self.goal: PoseStamped | None = None
        self.blackboard = self.attach_blackboard_client(name=name)
        self.blackboard.register_key(key=key, access=Access.READ)

    def update(self) -> Status:
        event: Sample = self.blackboard.get(self.key)
        goal = goal_from_event(event)
        if goal is None:
            self.feedback_message = (f"no 3D evidence: event {event.msg.id} has "
                                     f"{'no 3D side' if event.msg3d is None else 'no evidence point with depth'}")
            return Status.FAILURE
        self.publisher.publish(goal)
        self.goal = goal
        p = goal.pose.position
        self.feedback_message = f"goal ({p.x:.3f}, {p.y:.3f}, {p.z:.3f}) m in {goal.header.frame_id}"
        return Status.SUCCESS


def build_tree(client: Molmo2Client, publisher, query_id: str, timeout_s: float,
               wait_3d_s: float) -> py_trees.composites.Sequence:
    """Sequence: WaitForEvent(query_id) -> PublishGoal."""
    root = py_trees.composites.Sequence("ball falls -> goal", memory=True)
    root.add_children([WaitForEvent("wait for the fall", client, query_id, timeout_s, wait_3d_s=wait_3d_s),
                       PublishGoal("publish the goal", publisher)])
    return root


def failure_reason(root: py_trees.behaviour.Behaviour) -> str:
    """The feedback message of the first failed leaf."""
    for b in root.iterate():
        if b.status == Status.FAILURE and not b.children and b.feedback_message:
            return b.feedback_message
    return root.feedback_message


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="example_mission", description=__doc__.split("\n\n")[0])
    p.add_argument("--node", default="/molmo2", help="the molmo2 node's full name (default /molmo2)")
    p.add_argument("--camera", default="", help="camera name of a multi-camera node")
    p.add_argument("--query", default="ball_fall", help="event query id (default ball_fall)")
    p.add_argument("--text", default="ball falling", help="event text when the query must be added")
    p.add_argument("--timeout-s", type=float, default=120.0, help="give up without an event after this long (s)")
    p.add_argument("--setup-timeout-s", type=float, default=60.0, help="wait this long for the node (s)")
    p.add_argument("--wait-3d-s", type=float, default=2.0, help="wait this long for an event's 3D side (s)")
    p.add_argument("--goal-topic", default="goal_pose", help="PoseStamped goal topic (default goal_pose, Nav2's)")
    p.add_argument("--tick-hz", type=float, default=20.0, help="tree ticks per second")
    return p.parse_args(argv)


def setup(client: Molmo2Client, args, log) -> None:
    """Watch the event query (adding it when the node lacks it) and wait until its topic is matched."""
    deadline = time.monotonic() + args.setup_timeout_s
    while True:
        try:
            added = client.ensure_query(args.query, "event", args.text, timeout_s=5.0)
            break
        except (Molmo2Error, TimeoutError) as error:
            if time.monotonic() > deadline:
                raise Molmo2Error(f"setup: {error}") from error
            time.sleep(0.5)
    log.info(f"{'added' if added else 'found'} event query '{args.query}'")
    main, _ = client.topics(args.query)
    while client.node.count_publishers(main) == 0:
        if time.monotonic() > deadline:
            raise Molmo2Error(f"setup: no publisher on {main}")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = rclpy.create_node("molmo2_mission")
    log = node.get_logger()
    client = Molmo2Client(node, args.node, args.camera)  # before spinning (client.py: Threads)
    publisher = node.create_publisher(PoseStamped, args.goal_topic, GOAL_QOS)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=lambda: _spin(executor), daemon=True)
    spinner.start()
    summary: dict = {"status": "FAILURE", "reason": ""}
    try:
        setup(client, args, log)
        print("mission: ready", flush=True)
        root = build_tree(client, publisher, args.query, args.timeout_s, args.wait_3d_s)
        tree = py_trees.trees.BehaviourTree(root)
        period = 1.0 / args.tick_hz
        while rclpy.ok() and root.status not in (Status.SUCCESS, Status.FAILURE):
            tree.tick()
            time.sleep(period)
        summary["status"] = root.status.name if root.status in (Status.SUCCESS, Status.FAILURE) else "FAILURE"
        summary["reason"] = (root.children[-1].feedback_message if root.status == Status.SUCCESS
                             else failure_reason(root) or "interrupted")
        event: Sample | None = py_trees.blackboard.Blackboard.storage.get("/event")
        if event is not None:
            summary["event"] = {"id": event.msg.id, "state": int(event.msg.state),
                                "start_ns": stamp_ns(event.msg.start), "end_ns": stamp_ns(event.msg.end),
                                "stamp_ns": event.stamp_ns, "has_3d": event.msg3d is not None}
        goal = root.children[-1].goal
        if goal is not None:
            p = goal.pose.position
            summary["goal"] = {"frame_id": goal.header.frame_id, "stamp_ns": stamp_ns(goal.header.stamp),
                               "position": [p.x, p.y, p.z]}
            time.sleep(0.5)  # let reliable readers take the goal before the process goes
    except (Molmo2Error, KeyboardInterrupt, ExternalShutdownException) as error:
        summary["reason"] = str(error) or type(error).__name__
    summary["reconnects"] = client.reconnects
    print(json.dumps(summary), flush=True)
    executor.shutdown(timeout_sec=1.0)
    spinner.join(2.0)
    client.close()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if summary["status"] == "SUCCESS" else 1


def _spin(executor) -> None:
    try:
        executor.spin()
    except (ExternalShutdownException, Exception):  # noqa: BLE001 - shutting down
        pass


if __name__ == "__main__":
    sys.exit(main())
