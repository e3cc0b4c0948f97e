"""The `molmo2-ros replay --engine vllm` CLI and the ROS node with engine vllm against a REAL vLLM server (the
session's `vllm_server`, shared with test_vllm.py; these tests run after its tests); the server kill/restart is the
last test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.vllm_server import needs_vllm, start_server
from scripts.vllm_server import free_port

pytestmark = needs_vllm
REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molmo2_ros.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)


def test_cli_replay_with_engine_vllm(vllm_server, vllm_scenario_bag, tmp_path):
    bag = vllm_scenario_bag
    out = cli("replay", str(bag), "--out", str(tmp_path / "out"), "--engine", "vllm", "--server-url", vllm_server.url,
              "--quiet", "--no-gif", "--max-new-tokens", "32")
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert results and all(r["model_id"] == "molmo2-tiny-synthetic" for r in results)
    assert any(r["points"] for r in results)

    out = cli("replay", str(bag), "--out", str(tmp_path / "bad"), "--engine", "vllm", "--server-url",
              f"http://127.0.0.1:{free_port()}/v1", "--quiet", timeout=60.0)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and lines[-1].startswith("error: cannot reach the vLLM server")
    assert "Traceback" not in out.stderr


# ---- the ROS node with engine vllm (module-scoped ROS environment; the server restart comes last) -------------
NODE = "/molmo2"
TOPIC = "/cam/image"
NODE_QUERIES = "- {id: ball, task: point, text: red ball}\n- {id: people, task: track, text: person}\n"


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    from helpers.ros_env import ros_environment
    from helpers.ros_client import Client

    with ros_environment(tmp_path_factory.mktemp("ros_home")) as env:
        client = Client()
        yield env, client
        client.close()


def start_node(env, folder: Path, server_url: str, name: str = "molmo2"):
    from helpers.ros_client import NodeProcess

    params = folder / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    queries: |\n"
                      + "".join(f"      {line}\n" for line in NODE_QUERIES.strip().splitlines()))
    return NodeProcess(["--ros-args", "-r", f"__node:={name}", "-r", f"image:={TOPIC}", "--params-file", str(params),
                        "-p", "engine:=vllm", "-p", f"server_url:={server_url}", "-p", "request_timeout_s:=20.0",
                        "-p", "window_s:=1.0", "-p", "stride_s:=1.0", "-p", "max_new_tokens:=32"],
                       env, folder / f"{name}.log")


def diagnostics(client, node: str) -> dict | None:
    """The node's newest diagnostics, or None while it publishes none (still starting)."""
    try:
        return client.diagnostics(node, timeout=3.0)
    except AssertionError:
        return None


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def torch_loaded(pid: int) -> bool:
    """Whether the process has torch's libraries mapped (importing torch maps libtorch*.so)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_node_configure_against_unreachable_server_stays_unconfigured(ros, tmp_path):
    from helpers.ros_client import wait_until

    env, client = ros
    url = f"http://127.0.0.1:{free_port()}/v1"
    node = start_node(env, tmp_path, url, name="molmo2_unreachable")
    try:
        d = wait_until(lambda: (lambda d: d if d and d["model_state"] == "failed" else None)(
            diagnostics(client, "/molmo2_unreachable")), 120.0, what="configure failure")
        assert url in d["_message"] and "make serve-vllm" in d["_message"]
        # a lost get_state response reads "unknown": poll
        wait_until(lambda: client.state("/molmo2_unreachable") == "unconfigured", 20.0, what="unconfigured")
        assert node.proc.poll() is None
    finally:
        node.stop()


def test_node_with_engine_vllm_end_to_end_then_server_killed_and_restarted(ros, vllm_server, tmp_path):
    """Points, tracks and stamps from the node on a vLLM server; then the server dies mid-stream (counted
    failures, the node lives), comes back on the same port, and outputs resume."""
    from helpers.ros_client import finish_camera, run_camera, start_camera, wait_until
    from molmo2_ros.msg import PointArray, TrackArray

    env, client = ros
    node = start_node(env, tmp_path, vllm_server.url)
    restarted = None
    try:
        try:
            wait_until(lambda: client.state(NODE) == "active", 180.0, what="node active")
        except AssertionError:
            raise AssertionError(f"node not active:\n{node.output()[-3000:]}") from None
        client.subscribe(PointArray, f"{NODE}/points/ball")
        client.subscribe(TrackArray, f"{NODE}/tracks/people")
        client.wait_matched(f"{NODE}/points/ball")
        spec = {"topic": TOPIC, "qos": "reliable", "rate": 2, "dt": 0.5, "width": 96, "height": 72,
                "frame_id": "cam", "count": 12, "t0": 1000.0}
        frames = run_camera(spec, env)
        stamps = {f["stamp"] for f in frames}
        wait_until(lambda: len(client.got(f"{NODE}/points/ball")) >= 3, 60.0, what="points")
        wait_until(lambda: len(client.got(f"{NODE}/tracks/people")) >= 3, 60.0, what="tracks")
        for msg in client.got(f"{NODE}/points/ball"):
            assert ns(msg.header.stamp) in stamps and msg.header.frame_id == "cam"
            assert all(ns(p.stamp) in stamps and 0 <= p.x <= 96 and 0 <= p.y <= 72 for p in msg.points)
        assert all(ns(m.header.stamp) in stamps for m in client.got(f"{NODE}/tracks/people"))
        assert not torch_loaded(node.proc.pid), "a node with engine vllm imported torch"
        before = client.diagnostics(NODE)
        assert before.get("inference_errors", "0") == "0"

        vllm_server.kill()  # the whole process group, at once
        camera = start_camera({**spec, "count": 16, "t0": 1020.0}, env)
        d = wait_until(lambda: (lambda d: d if d and int(d.get("inference_errors", 0)) >= 3 else None)(
            diagnostics(client, NODE)), 60.0, what="counted failures")
        finish_camera(camera)
        assert node.proc.poll() is None and d["state"] == "active"
        assert "vLLM server" in d["last_error"]

        restarted = start_server(tmp_path, port=vllm_server.port)  # same URL: the node reconnects by itself
        processed = int(client.diagnostics(NODE)["windows_processed"])
        client.clear()
        frames = run_camera({**spec, "count": 12, "t0": 1040.0}, env)
        stamps = {f["stamp"] for f in frames}
        wait_until(lambda: len(client.got(f"{NODE}/points/ball")) >= 2, 90.0, what="points after the restart")
        assert all(ns(m.header.stamp) in stamps for m in client.got(f"{NODE}/points/ball"))
        after = client.diagnostics(NODE)
        assert int(after["windows_processed"]) > processed and node.proc.poll() is None
    finally:
        code, _ = node.stop(10.0)
        if restarted is not None:
            restarted.stop()
    assert code == 0, node.output()[-3000:]
