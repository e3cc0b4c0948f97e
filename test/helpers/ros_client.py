"""In-process ROS helpers for the node tests: a spinning client node, and starting/stopping node processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy

from molmo2_ros.ros.diagnostics import merged_values

REPO = Path(__file__).resolve().parents[2]
TEST_DIR = REPO / "test"
NODE_SCRIPT = REPO / "scripts" / "molmo2_node"
CAMERA_SCRIPT = TEST_DIR / "helpers" / "camera_publisher.py"
OUTPUT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
# The node's overlay is a best-effort debug image: a reliable subscription would not match it.
OVERLAY_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll until predicate() is truthy (returns it) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def terminate(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM a process, SIGKILL it if it is still running after `timeout` s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def process_env(env: dict[str, str]) -> dict[str, str]:
    """env for node/camera processes: test/ on PYTHONPATH (the scripted engine plugin lives there)."""
    path = os.pathsep.join(p for p in (str(TEST_DIR), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class NodeProcess:
    """A molmo2 node process whose combined output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, command: list[str] | None = None) -> None:
        self.log = log
        self._file = open(log, "wb")
        cmd = command if command is not None else [sys.executable, str(NODE_SCRIPT)]
        self.proc = subprocess.Popen([*cmd, *args], env=process_env(env), stdout=self._file,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        started = time.monotonic()
        code = terminate(self.proc, timeout)
        self._file.close()
        return code, time.monotonic() - started

    def signal_exit(self, sig: int, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send `sig`; (exit code, or None when still running after `timeout` s; seconds waited). Stops it after."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - started
        self.stop()
        return code, seconds

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))


def run_camera(spec: dict, env: dict[str, str], timeout: float = 60.0) -> list[dict]:
    """Run the fake camera to completion; returns its per-frame JSON records."""
    return finish_camera(start_camera(spec, env), timeout)


def start_camera(spec: dict, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CAMERA_SCRIPT), json.dumps(spec)], env=process_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_camera(proc: subprocess.Popen, timeout: float = 60.0, teardown_s: float = 10.0) -> list[dict]:
    """Wait for a fake camera (from start_camera) to publish its `count` frames and exit; returns its per-frame JSON
    records.

    A camera that published every frame but is still in its ROS/Fast DDS teardown `teardown_s` later (seen once
    in a CI run: the process did not exit in 60 s) has its Python stacks printed (SIGUSR1), is killed, and the
    test goes on with a warning that carries the stacks: the frames are what the test is about. A camera that
    fails, or stops publishing before the last frame, fails the test with its stacks.
    """
    spec = json.loads(proc.args[-1])  # start_camera's command line ends with the camera's spec
    count = int(spec.get("count", 20))
    records: list[dict] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: records.extend(
                   json.loads(line) for line in proc.stdout if line.startswith("{")), daemon=True),
               threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and len(records) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    try:  # all frames out: allow teardown_s for the exit; otherwise it exited already, or is stuck
        code = proc.wait(teardown_s if len(records) >= count else 0.1)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        proc.kill()
        code = None
    proc.wait()
    for reader in readers:
        reader.join(5.0)
    stderr = "".join(err)[-4000:]
    if code is None and len(records) == count:
        warnings.warn(f"camera on {spec.get('topic')} published all {count} frames, then did not exit within "
                      f"{teardown_s} s and was killed; its stacks:\n{stderr}", stacklevel=2)
        return records
    assert code == 0, f"camera failed (exit {code}, {len(records)} of {count} frames published): {stderr}"
    return records


class SpunNode:
    """An rclpy node in its own context, spun on a daemon thread (test, bench and soak clients)."""

    def __init__(self, name: str) -> None:
        self.context = rclpy.Context()
        # args=[]: not sys.argv, where a bench's own `--param NAME:=VALUE` would read as a (deprecated) remap rule
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin_lock = threading.Lock()  # held by the spin thread while it waits and runs callbacks
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok() and not self._closing.is_set():
            try:
                with self._spin_lock:
                    self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self.context.ok():
                    return
                raise

    def close(self) -> None:
        """Stop the spin thread, then destroy: destroying the node while a spin_once still waits on it crashed the
        test process (a segfault in rclpy's wait, CI under load, 2026-12-06)."""
        self._closing.set()
        self._thread.join(timeout=10.0)
        locked = self._spin_lock.acquire(timeout=10.0)  # a callback stuck past both timeouts: destroy regardless
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
            rclpy.try_shutdown(context=self.context)
        finally:
            if locked:
                self._spin_lock.release()


class Client(SpunNode):
    """A test-side client node. Collects messages per topic; calls services, lifecycle and actions."""

    def __init__(self, name: str = "molmo2_test_client") -> None:
        self.messages: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self._subs: dict[str, object] = {}
        self._clients: dict[str, object] = {}
        super().__init__(name)

    # ---- topics ---------------------------------------------------------------------------------------
    def subscribe(self, msg_type, topic: str, qos: QoSProfile | None = None) -> None:
        """Subscribe and keep every message (node outputs: reliable; `.../overlay`: best effort)."""
        if topic in self._subs:
            return
        qos = qos or (OVERLAY_QOS if topic.endswith("/overlay") else OUTPUT_QOS)

        def callback(msg, topic=topic):
            with self._lock:
                self.messages[topic].append(msg)

        self._subs[topic] = self.node.create_subscription(msg_type, topic, callback, qos)

    def unsubscribe(self, topic: str) -> None:
        self.node.destroy_subscription(self._subs.pop(topic))

    def got(self, topic: str) -> list:
        with self._lock:
            return list(self.messages[topic])

    def clear(self, topic: str | None = None) -> None:
        with self._lock:
            if topic is None:
                self.messages.clear()
            else:
                self.messages[topic].clear()

    def wait_matched(self, topic: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.node.count_publishers(topic) > 0, timeout, what=f"a publisher on {topic}")

    # ---- node under test ------------------------------------------------------------------------------
    def call(self, srv_type, name: str, request, timeout: float = 10.0):
        """Call a service. Clients are kept per service: each new client must be discovered again, and a
        response sent before the server matched the client's reader is lost (seen under load)."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        try:
            wait_until(future.done, timeout, what=f"response of {name}")
        except AssertionError:
            client.remove_pending_request(future)
            raise
        return future.result()

    def state(self, node: str) -> str:
        """Lifecycle state label, or "unknown" when the get_state response was lost (callers poll again)."""
        try:
            return self.call(GetState, f"{node}/get_state", GetState.Request(), timeout=5.0).current_state.label
        except AssertionError:
            return "unknown"

    def transition(self, node: str, name: str, timeout: float = 60.0) -> bool:
        request = ChangeState.Request(transition=Transition(id=TRANSITIONS[name]))
        return self.call(ChangeState, f"{node}/change_state", request, timeout).success

    def set_params(self, node: str, **values) -> list:
        """Set parameters (dots in names written as '__'); returns the SetParametersResult list."""
        params = [Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(SetParameters, f"{node}/set_parameters", SetParameters.Request(parameters=params)).results

    def get_param(self, node: str, name: str):
        """The current value of one parameter of `node` (Python value)."""
        response = self.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=[name]))
        return parameter_value_to_python(response.values[0])

    def diagnostics(self, node: str, timeout: float = 5.0, camera: str = "") -> dict[str, str]:
        """Key/values of the node's newest diagnostics (waits for a fresh one): its own status with the status of
        `camera` on top ("" = the unnamed camera of a single-camera node)."""
        self.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        self.clear("/diagnostics")
        return wait_until(lambda: next((v for m in self.got("/diagnostics")
                                        if (v := merged_values(m, node, camera)) is not None), None),
                          timeout, what="diagnostics")

    def action_client(self, action_type, name: str) -> ActionClient:
        # rclpy 9.1 (Kilted) ActionClient registers itself with the node before it creates its lock: a spin
        # thread that collects the node's waitables in between dies with AttributeError '_lock'. Build it while
        # the spin thread is between two waits.
        with self._spin_lock:
            return ActionClient(self.node, action_type, name)
