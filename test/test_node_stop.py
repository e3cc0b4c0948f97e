"""Stop within one token, through a live node with the real engine (test/helpers/slow_engine.py: a tiny model whose
answer would take ~60 s, 0.1 s per decode step): SIGINT/SIGTERM exit in well under 5 s, deactivate returns at once
and counts the stopped window, and a cancelled Query goal frees the worker within a decode step."""

from __future__ import annotations

import signal
import time

import pytest

from _models import tiny_model_dir
from helpers.reliability import start_node, unique_names
from helpers.ros_client import run_camera, wait_until
from molmo2_ros.action import Query as QueryAction

NAME, TOPIC = unique_names()
NODE = f"/{NAME}"
SLOW = "helpers.slow_engine:SlowEngine"



def slow_node(client, env, folder, queries="- {id: what, task: caption}"):
    return start_node(client, env, folder, name=NAME, queries=queries, topic=TOPIC, engine_plugin=SLOW,
                      model=str(tiny_model_dir()), max_new_tokens=600, window_s=2.0, stride_s=1.0)


def feed(env) -> None:
    run_camera({"topic": TOPIC, "qos": "reliable", "rate": 20, "count": 3, "t0": 100.0, "dt": 1.0}, env)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_minute_long_generation_exits_at_once(ros_env, client, tmp_path, sig):
    node = slow_node(client, ros_env, tmp_path)
    feed(ros_env)
    wait_until(lambda: "slow_engine: generating" in node.output(), 30.0, what="a long generation in progress")
    code, seconds = node.signal_exit(sig)
    print(f"{sig.name} during a ~60 s generation: exit code {code} after {seconds:.2f} s")
    assert code == 0 and seconds < 5.0, node.output()[-3000:]
    assert "did not stop within" not in node.output()  # the generation stopped at its flag, it was not abandoned


def test_deactivate_stops_the_generation_and_counts_it(ros_env, client, tmp_path):
    node = slow_node(client, ros_env, tmp_path)
    try:
        feed(ros_env)
        wait_until(lambda: "slow_engine: generating" in node.output(), 30.0, what="a long generation in progress")
        started = time.monotonic()
        assert client.transition(NODE, "deactivate")
        seconds = time.monotonic() - started
        assert seconds < 1.5, seconds
        d = client.diagnostics(NODE)
        assert d["state"] == "inactive" and d["windows_stopped"] == "1" and d["windows_processed"] == "0", d
        assert client.transition(NODE, "activate")  # and the node works again
        assert client.state(NODE) == "active"
    finally:
        code, seconds = node.stop()
    assert code == 0 and seconds < 5.0, node.output()


def test_cancelled_goal_stops_its_generation(ros_env, client, tmp_path):
    node = slow_node(client, ros_env, tmp_path, queries="[]")
    try:
        feed(ros_env)
        action = client.action_client(QueryAction, f"{NODE}/query")
        assert action.wait_for_server(timeout_sec=10)
        send = action.send_goal_async(QueryAction.Goal(prompt="what happens?", task="question", max_new_tokens=600))
        handle = wait_until(send.done, 10.0, what="goal accepted") and send.result()
        wait_until(lambda: "slow_engine: generating" in node.output(), 30.0, what="the goal generating")
        started = time.monotonic()
        cancel = handle.cancel_goal_async()
        wait_until(cancel.done, 5.0, what="cancel response")
        # the worker is free again within a decode step: the next goal starts generating at once
        send = action.send_goal_async(QueryAction.Goal(prompt="what?", task="question", max_new_tokens=2))
        second = wait_until(send.done, 10.0, what="second goal accepted") and send.result()
        result = second.get_result_async()
        res = wait_until(result.done, 10.0, what="second goal result") and result.result().result
        assert res.success, res.message
        assert time.monotonic() - started < 3.0
    finally:
        code, _ = node.stop()
    assert code == 0, node.output()
