"""molmo2_ros/client.py against real node processes (scripted engine, test/helpers/scripted_engine.py): discovery
through ManageQueries, staleness refused (against the node's newest frame stamp and against the clock), a wait
for an event that times out and one that returns the event, the Query action and ManageQueries wrappers, and a
node restarted while a planner waits (the client notices, counts the reconnect, and the wait still returns the
event the new process publishes)."""

from __future__ import annotations

import threading
import time

import pytest

from helpers.planner import Planner
from helpers.reliability import SCRIPTED, FrameSender, rgb_image, start_node, unique_names
from helpers.ros_client import wait_until
from molmo2_ros.client import NoData, NodeAbsent, Refused, Stale
from molmo2_ros.msg import Event

NAME, TOPIC = unique_names()
NODE = f"/{NAME}"
QUERIES = "- {id: ball, task: point, text: ball}\n- {id: n, task: count, text: balls}\n- {id: fall, task: event, text: fall}"


def start(client, ros_env, tmp_path):
    return start_node(client, ros_env, tmp_path, name=NAME, topic=TOPIC, queries=QUERIES, engine_plugin=SCRIPTED,
                      model="scripted", window_s=2.0, stride_s=1.0, no_frame_warn_s=60.0, qos="reliable")


def frames(t0: float, t1: float, dt: float = 0.5):
    """Frames stamped t0, t0 + dt, ... < t1 (s); the scripted engine's events are on stamps whose second % 10 < 3."""
    n = int(round((t1 - t0) / dt))
    return [rgb_image(t0 + dt * i) for i in range(n)]


def test_staleness_wait_timeout_event_and_wrappers(client, ros_env, tmp_path):
    node = start(client, ros_env, tmp_path)
    planner = Planner(NODE)
    try:
        c = planner.client
        wait_until(lambda: c.connected, 10.0, what="the node in the graph")
        assert c.discover(timeout_s=10.0) == {"ball": "point", "n": "count", "fall": "event"}
        with pytest.raises(NoData, match="no result of query 'ball' yet"):
            c.latest("ball")
        for topic in (f"{NODE}/points/ball", f"{NODE}/events/fall", f"{NODE}/counts/n"):
            wait_until(lambda topic=topic: planner.node.count_publishers(topic) > 0, 10.0, what=topic)
        sender = FrameSender(client, TOPIC, rate_hz=10.0)
        sender.send(frames(304.0, 309.0))  # no event on these stamps
        wait_until(lambda: c.event_seq("ball") > 0, 20.0, what="point results")
        # fresh against the node's newest frame; stale against the wall clock (stamps are from 1970)
        sample = c.latest("ball", max_age_s=1.0)
        assert sample.kind == "points" and sample.msg.points and sample.msg3d is None
        assert c.age_s(sample) == pytest.approx(0.0, abs=1.0)
        c.use_clock = True
        with pytest.raises(Stale) as stale:
            c.latest("ball", max_age_s=1.0)
        c.use_clock = False
        assert stale.value.age_s > 1e8 and "stale" in stale.value.reason
        # a wait that times out returns None in about its timeout
        started = time.monotonic()
        assert c.wait_for_event("fall", timeout_s=1.0) is None
        assert 0.9 <= time.monotonic() - started < 3.0
        # ... and one that gets the event
        cursor = c.event_seq("fall")
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(c.wait_for_event("fall", 30.0, after_seq=cursor)))
        waiter.start()
        sender.send(frames(309.0, 312.0))
        waiter.join(35.0)
        assert got and got[0] is not None and got[0].msg.state == Event.STATE_STARTED, got
        assert got[0].msg.id == "fall/e1" and got[0].stamp_ns >= 310 * 10**9
        # older data of one query is stale once the node reports newer frames on any output
        n_sample = c.latest("n", max_age_s=5.0)
        assert n_sample.msg.count == 2
        # Query action and ManageQueries wrappers
        result = c.ask("what colour is it", task="question", timeout_s=20.0)
        assert result.success and result.answer.text.startswith("frames="), result
        with pytest.raises(Refused):
            c.ask("x", task="nonsense", timeout_s=20.0)
        ids = [q.id for q in c.add_query("cup", "point", "cup", timeout_s=10.0)]
        assert "cup" in ids and c.watched()["cup"] == "point"
        with pytest.raises(Refused):
            c.add_query("cup", "point", "cup", timeout_s=10.0)
        assert "cup" not in [q.id for q in c.remove_query("cup", timeout_s=10.0)]
        assert c.reconnects == 0
    finally:
        planner.close()
        code, _ = node.stop()
    assert code == 0, node.output()[-3000:]


def test_node_absent_fails_fast_with_a_reason(ros_env):
    planner = Planner(f"/absent_{NAME}")
    try:
        c = planner.client
        assert not c.connected
        with pytest.raises(NodeAbsent, match="absent"):
            c.list_queries(timeout_s=0.5)
        with pytest.raises(NodeAbsent, match="absent"):
            c.ask("anything", timeout_s=5.0, server_timeout_s=0.5)
    finally:
        planner.close()


def test_node_restarted_while_a_planner_waits(client, ros_env, tmp_path):
    first = start(client, ros_env, tmp_path)
    planner = Planner(NODE)
    second = None
    try:
        c = planner.client
        wait_until(lambda: c.connected, 10.0, what="the node in the graph")
        c.watch("fall", "event")
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(c.wait_for_event("fall", 90.0)))
        waiter.start()
        code, _ = first.stop()
        assert code == 0, first.output()[-3000:]
        wait_until(lambda: not c.connected, 10.0, what="the client noticing the node is gone")
        assert waiter.is_alive() and c.reconnects == 0
        second = start(client, ros_env, tmp_path)
        wait_until(lambda: c.reconnects == 1, 10.0, what="the client counting the reconnect")
        assert c.connected and waiter.is_alive()
        # subscriptions re-match, the services wait again: the new process's event reaches the waiting planner
        assert "fall" in [q.id for q in c.list_queries(timeout_s=10.0)]
        wait_until(lambda: planner.node.count_publishers(f"{NODE}/events/fall") > 0, 10.0, what="events topic")
        FrameSender(client, TOPIC, rate_hz=10.0).send(frames(308.0, 312.0))
        waiter.join(40.0)
        assert got and got[0] is not None and got[0].msg.id == "fall/e1", got
        assert c.ask("what colour is it", timeout_s=20.0).success
        assert c.reconnects == 1
    finally:
        planner.close()
        if second is not None:
            code, _ = second.stop()
            assert code == 0, second.output()[-3000:]
