"""molmo2_ros/behaviours.py: every leaf's SUCCESS and each failure reason (timeout, stale, not found, node absent,
refused), with ticks that never block. The molmo2 node is faked from the test's client node: its lifecycle
transition_event publisher and 1 Hz /diagnostics status (what Molmo2Client reads as presence), its output topics
and a Query action server, so every case is exact and quick; test_client.py runs the client against real nodes."""

from __future__ import annotations

import time

import py_trees
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from lifecycle_msgs.msg import TransitionEvent
from py_trees.common import Status
from rclpy.action import ActionServer, GoalResponse
from std_msgs.msg import Header

from helpers.planner import Planner
from helpers.reliability import unique_names
from helpers.ros_client import OUTPUT_QOS, wait_until
from molmo2_ros.action import Query as QueryAction
from molmo2_ros.behaviours import Ask, CountAtLeast, FindObject, WaitForEvent
from molmo2_ros.msg import Event, Event3D, GroundedPoint, GroundedPoint3D, PointArray, PointArray3D
from molmo2_ros.ros.diagnostics import node_status_name

NAME, _ = unique_names()
NODE = f"/{NAME}"
TICK_LIMIT_S = 0.25  # a tick reads state only; generous for a loaded 2-core machine


def t(sec: float) -> Time:
    ns = int(round(sec * 1e9))
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def point(sec: float, x: float = 10.0, y: float = 20.0) -> GroundedPoint:
    return GroundedPoint(stamp=t(sec), x=x, y=y, label="cup")


def point3d(sec: float) -> GroundedPoint3D:
    return GroundedPoint3D(point=point(sec), valid=True, status=GroundedPoint3D.STATUS_OK,
                           position=Point(x=0.1, y=0.2, z=1.5), valid_fraction=1.0)


class FakeNode:
    """A molmo2 node's face on the test's client node: presence, outputs, Query action."""

    def __init__(self, client, reject_task: str = "nonsense") -> None:
        self.node = client.node
        self.pubs: dict = {}
        self._presence = self.node.create_publisher(TransitionEvent, f"{NODE}/transition_event", 10)
        self._diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = self.node.create_timer(0.5, self._heartbeat)
        with client._spin_lock:  # rclpy 9.1: an action entity half built while the executor collects (ros_client.py)
            self._action = ActionServer(self.node, QueryAction, f"{NODE}/query", execute_callback=self._execute,
                                        goal_callback=lambda g: GoalResponse.REJECT if g.task == reject_task
                                        else GoalResponse.ACCEPT)

    def _heartbeat(self) -> None:
        self._diag.publish(DiagnosticArray(status=[DiagnosticStatus(name=node_status_name(NODE), message="ok")]))

    def _execute(self, handle):
        handle.succeed()
        result = QueryAction.Result(success=True, message="")
        result.answer.text = f"answer to {handle.request.prompt}"
        result.points.points = [point(5.0)]
        return result

    def publish(self, msg_type, topic: str, msg) -> None:
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(msg_type, f"{NODE}/{topic}", OUTPUT_QOS)
        pub = self.pubs[topic]
        wait_until(lambda: pub.get_subscription_count() > 0, 10.0, what=f"the planner on {topic}")
        pub.publish(msg)

    def close(self) -> None:
        self.node.destroy_timer(self._timer)
        self._action.destroy()


@pytest.fixture
def fake(client):
    f = FakeNode(client)
    yield f
    f.close()


@pytest.fixture
def planner(ros_env):
    py_trees.blackboard.Blackboard.clear()
    p = Planner(NODE)
    yield p
    p.close()


def run(leaf, limit_s: float = 10.0) -> Status:
    """Tick until the leaf ends; every tick must return within TICK_LIMIT_S."""
    deadline = time.monotonic() + limit_s
    while True:
        started = time.monotonic()
        leaf.tick_once()
        assert time.monotonic() - started < TICK_LIMIT_S, f"{leaf.name}: a tick blocked"
        if leaf.status != Status.RUNNING:
            return leaf.status
        assert time.monotonic() < deadline, f"{leaf.name} still running: {leaf.feedback_message}"
        time.sleep(0.02)


def connected(planner) -> None:
    wait_until(lambda: planner.client.connected, 10.0, what="the fake node in the graph")


def test_wait_for_event_timeout_then_success_with_3d(fake, planner):
    connected(planner)
    leaf = WaitForEvent("wait", planner.client, "fall", timeout_s=0.5)
    started = time.monotonic()
    assert run(leaf) == Status.FAILURE
    assert leaf.feedback_message.startswith("timeout: no 'fall' event within 0.5 s")
    assert 0.5 <= time.monotonic() - started < 2.0
    leaf = WaitForEvent("wait", planner.client, "fall", timeout_s=10.0, wait_3d_s=5.0)
    leaf.tick_once()
    header = Header(stamp=t(5.0), frame_id="cam_optical")
    fake.publish(Event3D, "events3d/fall", Event3D(header=header, id="fall/e1", query_id="fall",
                                                   state=Event.STATE_STARTED, evidence=[point3d(5.0)]))
    fake.publish(Event, "events/fall", Event(header=header, id="fall/e1", query_id="fall",
                                             state=Event.STATE_STARTED, evidence=[point(5.0)]))
    assert run(leaf) == Status.SUCCESS, leaf.feedback_message
    event = py_trees.blackboard.Blackboard.storage["/event"]
    assert event.msg.id == "fall/e1" and event.msg3d is not None
    assert [p.position.z for p in event.points3d()] == [1.5]


def test_find_object_stale_not_found_and_found(fake, planner):
    connected(planner)
    c = planner.client
    c.watch("cup", "point")
    c.watch("other", "point")
    fake.publish(PointArray, "points/cup", PointArray(header=Header(stamp=t(100.0), frame_id="cam"), query="cup",
                                                     points=[point(100.0)]))
    wait_until(lambda: c.event_seq("cup") == 1, 10.0, what="cup")
    # the node's newest frame is 10 s later (another query's output): cup's result is stale
    fake.publish(PointArray, "points/other", PointArray(header=Header(stamp=t(110.0)), query="other"))
    wait_until(lambda: c.reference_ns() == 110 * 10**9, 10.0, what="the newer stamp")
    leaf = FindObject("find", c, "cup", max_age_s=2.0, timeout_s=0.3)
    assert run(leaf) == Status.FAILURE
    assert leaf.feedback_message.startswith("stale: the newest result of 'cup' is 10.00 s old"), leaf.feedback_message
    # a fresh result without the object: not found, at once
    fake.publish(PointArray, "points/cup", PointArray(header=Header(stamp=t(111.0)), query="cup"))
    wait_until(lambda: c.event_seq("cup") == 2, 10.0, what="cup")
    leaf = FindObject("find", c, "cup", max_age_s=2.0, timeout_s=5.0)
    assert run(leaf, limit_s=1.0) == Status.FAILURE
    assert leaf.feedback_message.startswith("not found: no 'cup' in the newest result"), leaf.feedback_message
    # found, with its 3D point
    fake.publish(PointArray3D, "points3d/cup", PointArray3D(header=Header(stamp=t(112.0), frame_id="cam_optical"),
                                                           query="cup", points=[point3d(112.0)]))
    fake.publish(PointArray, "points/cup", PointArray(header=Header(stamp=t(112.0), frame_id="cam_optical"),
                                                     query="cup", points=[point(112.0)]))
    wait_until(lambda: c.event_seq("cup") == 3, 10.0, what="cup")
    leaf = FindObject("find", c, "cup", max_age_s=2.0)
    assert run(leaf) == Status.SUCCESS, leaf.feedback_message
    found = py_trees.blackboard.Blackboard.storage["/object"]
    assert found.stamp_ns == 112 * 10**9 and found.position == pytest.approx((0.1, 0.2, 1.5))
    assert found.frame_id == "cam_optical" and (found.x, found.y) == (10.0, 20.0)


def test_count_at_least_and_no_data_timeout(fake, planner):
    connected(planner)
    c = planner.client
    leaf = CountAtLeast("count", c, "n", 2, timeout_s=0.3)
    assert run(leaf) == Status.FAILURE
    assert leaf.feedback_message.startswith("timeout (0.3 s): no result of query 'n' yet"), leaf.feedback_message
    fake.publish(PointArray, "counts/n", PointArray(header=Header(stamp=t(50.0)), query="cups", count=2))
    wait_until(lambda: c.event_seq("n") == 1, 10.0, what="count")
    assert run(CountAtLeast("count", c, "n", 2)) == Status.SUCCESS
    assert py_trees.blackboard.Blackboard.storage["/count"] == 2
    leaf = CountAtLeast("count", c, "n", 3)
    assert run(leaf) == Status.FAILURE
    assert leaf.feedback_message == "not found: count of 'cups' is 2 < 3"


def test_ask_and_on_demand_find(fake, planner):
    connected(planner)
    c = planner.client
    leaf = Ask("ask", c, "is the door open?", timeout_s=10.0)
    assert run(leaf) == Status.SUCCESS, leaf.feedback_message
    assert py_trees.blackboard.Blackboard.storage["/answer"].answer.text == "answer to is the door open?"
    leaf = Ask("ask", c, "x", task="nonsense", timeout_s=10.0)
    assert run(leaf) == Status.FAILURE and leaf.feedback_message.startswith("refused: the node rejected")
    leaf = FindObject("find", c, question="cup", timeout_s=10.0)
    assert run(leaf) == Status.SUCCESS, leaf.feedback_message
    assert py_trees.blackboard.Blackboard.storage["/object"].position is None  # the Query action has no 3D


def test_node_absent(ros_env):
    py_trees.blackboard.Blackboard.clear()
    planner = Planner(f"/absent_{NAME}")
    try:
        c = planner.client
        for leaf in (WaitForEvent("wait", c, "fall", timeout_s=10.0, absent_s=0.3),
                     FindObject("find", c, "cup", timeout_s=10.0, absent_s=0.3),
                     CountAtLeast("count", c, "n", 1, timeout_s=10.0, absent_s=0.3),
                     Ask("ask", c, "anything", timeout_s=10.0, absent_s=0.3)):
            assert run(leaf, limit_s=3.0) == Status.FAILURE, leaf.name
            assert leaf.feedback_message.startswith("node absent"), leaf.feedback_message
    finally:
        planner.close()
