"""HandOffExecutor: every ready callback reaches one pool thread once, groups are honoured, errors surface."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future

from molmo2_ros.ros.executor import HandOffExecutor


@pytest.fixture
def ros(ros_env):
    """A private rclpy context, a node in it and a 4-thread HandOffExecutor for it (each test spins it)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("executor_test", context=context)
    executor = HandOffExecutor(num_threads=4, context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _spin_for(executor: HandOffExecutor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def _hog_gil(stop: threading.Event) -> None:
    """Pure-Python work that keeps the interpreter busy, like an inference thread issuing small torch calls."""
    while not stop.is_set():
        sum(range(2000))


def test_each_callback_is_handed_to_the_pool_once_while_another_thread_holds_the_gil(ros):
    node, executor = ros
    calls = []
    node.create_timer(0.002, lambda: calls.append(time.monotonic()), callback_group=ReentrantCallbackGroup())
    stop = threading.Event()
    hog = threading.Thread(target=_hog_gil, args=(stop,))
    hog.start()
    try:
        _spin_for(executor, 1.5)
    finally:
        stop.set()
        hog.join()
    time.sleep(0.1)  # let the last handed-off callback finish
    assert len(calls) > 20
    # rclpy's MultiThreadedExecutor re-submits a task while it waits in the pool queue (ros2/rclpy#1452)
    assert executor.submitted <= len(calls) + 1, (executor.submitted, len(calls))


def test_mutually_exclusive_group_never_overlaps_and_other_groups_keep_running(ros):
    node, executor = ros
    group = MutuallyExclusiveCallbackGroup()
    active, overlaps, slow_runs, fast_runs = [0], [0], [], []
    lock = threading.Lock()

    def slow() -> None:
        with lock:
            active[0] += 1
            overlaps[0] += active[0] > 1
        time.sleep(0.2)
        slow_runs.append(time.monotonic())
        with lock:
            active[0] -= 1

    node.create_timer(0.01, slow, callback_group=group)
    node.create_timer(0.01, slow, callback_group=group)
    node.create_timer(0.01, lambda: fast_runs.append(time.monotonic()), callback_group=MutuallyExclusiveCallbackGroup())
    _spin_for(executor, 1.2)
    assert overlaps[0] == 0
    assert len(slow_runs) >= 3
    assert len(fast_runs) >= 30  # the other group is not held up by the slow callbacks


def test_callback_exception_reaches_the_spinning_thread(ros):
    node, executor = ros

    def fail() -> None:
        raise ValueError("callback failed")

    node.create_timer(0.01, fail)
    with pytest.raises(ValueError, match="callback failed"):
        _spin_for(executor, 2.0)


def test_spin_until_future_complete(ros):
    node, executor = ros
    future = Future()
    ticks = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 5:
            future.set_result("done")

    node.create_timer(0.01, tick)
    executor.spin_until_future_complete(future, timeout_sec=5.0)
    assert future.result() == "done"


def test_spin_runs_callbacks_until_shutdown(ros):
    node, executor = ros
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(1))
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    time.sleep(0.5)
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)
    assert not spinner.is_alive()
    assert len(ticks) >= 10


def test_all_pool_threads_run_from_the_start(ros):
    _, executor = ros
    names = [t.name for t in threading.enumerate() if t.name.startswith("ros_callback")]
    assert len(names) == 4


def test_a_stream_of_callbacks_stays_on_the_most_recently_idle_thread(ros):
    node, executor = ros
    threads = []
    node.create_timer(0.01, lambda: threads.append(threading.current_thread().name))
    _spin_for(executor, 1.0)
    assert len(threads) >= 30
    assert len(set(threads)) <= 2, set(threads)  # not spread over all 4 (each would keep its own malloc arena)


def test_subscriptions_with_qos_events_destroyed_from_another_thread_never_stop_the_spin(ros):
    """What deactivate and a qos re-subscribe do: another thread destroys a subscription (with its QoS event
    handler) while the spin thread builds a wait set. rclpy then raises InvalidHandle from the wait-set build;
    the executor waits again without the destroyed entity instead of dying (seen on Jazzy)."""
    from rclpy.event_handler import SubscriptionEventCallbacks
    from std_msgs.msg import String

    node, executor = ros
    errors, stop = [], threading.Event()

    def spin() -> None:
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.001)
        except Exception as error:  # noqa: BLE001 - what the test looks for
            errors.append(error)

    def subscribe(topic: str):
        events = SubscriptionEventCallbacks(incompatible_qos=lambda _event: None)
        return node.create_subscription(String, topic, lambda _msg: None, 1, event_callbacks=events)

    node.create_timer(0.001, lambda: None)  # keeps the spin thread rebuilding wait sets
    for i in range(60):  # a long wait-set build: a wider window for the destruction to fall into
        subscribe(f"still_{i}")
    spinner = threading.Thread(target=spin)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often, also in the middle of a wait-set build
    spinner.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not errors:
            node.destroy_subscription(subscribe("churn"))
    finally:
        stop.set()
        spinner.join(timeout=5.0)
        sys.setswitchinterval(interval)
    assert not errors, errors
    assert not spinner.is_alive()
