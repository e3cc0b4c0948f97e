"""The molmo2 node with the real Molmo2Engine (tiny random model on the CPU): started through
launch/molmo2.launch.py (real launch_ros when installed, else test/helpers/launch_standin), and a bad model
folder that leaves the node alive and unconfigured until the model parameter is fixed."""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import time
from pathlib import Path

import pytest

from _models import tiny_model_dir
from helpers.ros_client import NodeProcess, run_camera, wait_until
from molmo2_ros.action import Query as QueryAction
from molmo2_ros.msg import Answer, PointArray

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "test" / "helpers" / "launch_standin"
CAMERA = {"topic": "/robot/cam/image", "qos": "best_effort", "rate": 10, "dt": 0.5, "width": 96, "height": 64,
          "frame_id": "cam_link", "t0": 2000.0}


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def launch_commands(arguments: dict[str, str]) -> list[list[str]]:
    """Command lines of generate_launch_description(), run through the launch stand-in."""
    if importlib.util.find_spec("launch_ros") is not None:
        pytest.skip("real launch_ros installed: use `ros2 launch molmo2_ros molmo2.launch.py` instead")
    sys.path.insert(0, str(STANDIN))
    try:
        import launch

        description = runpy.run_path(str(REPO / "launch" / "molmo2.launch.py"))["generate_launch_description"]()
        return launch.run(description, arguments)
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m == "launch" or m.startswith(("launch.", "launch_ros"))]:
            del sys.modules[name]



def test_launch_file_starts_the_node_with_the_tiny_model(ros_env, client, tmp_path):
    model = tiny_model_dir()
    commands = launch_commands({"camera_topic": "/robot/cam/image", "model": str(model), "namespace": "robot",
                                "params_file": str(REPO / "config" / "tiny_cpu.yaml"), "use_sim_time": "false"})
    assert len(commands) == 1
    cmd = commands[0]
    assert cmd[cmd.index("--ros-args"):][:5] == ["--ros-args", "-r", "__node:=molmo2", "-r", "__ns:=/robot"]
    assert "image:=/robot/cam/image" in cmd
    started = time.monotonic()
    node = NodeProcess(cmd[1:], ros_env, tmp_path / "node.log", command=[sys.executable, cmd[0]])
    try:
        wait_until(lambda: client.state("/robot/molmo2") == "active", 60.0, what="node active")
        startup = time.monotonic() - started
        client.subscribe(Answer, "/robot/molmo2/answers/scene")
        client.subscribe(PointArray, "/robot/molmo2/points/ball")
        client.wait_matched("/robot/molmo2/answers/scene")
        frames = run_camera({**CAMERA, "count": 12}, os.environ.copy())
        stamps = {f["stamp"] for f in frames}
        wait_until(lambda: client.got("/robot/molmo2/answers/scene"), 30.0, what="an answer of the tiny model")
        answer = client.got("/robot/molmo2/answers/scene")[0]
        assert answer.model_id == str(model) and answer.header.frame_id == "cam_link"
        assert ns(answer.header.stamp) in stamps and answer.num_frames >= 2 and answer.num_visual_tokens > 0
        wait_until(lambda: client.got("/robot/molmo2/points/ball"), 10.0, what="a PointArray")
        points = client.got("/robot/molmo2/points/ball")[0]
        assert (points.image_width, points.image_height) == (96, 64)
        assert all(0 <= p.x < 96 and 0 <= p.y < 64 and ns(p.stamp) in stamps for p in points.points)

        action = client.action_client(QueryAction, "/robot/molmo2/query")
        assert action.wait_for_server(timeout_sec=10.0)
        sent = action.send_goal_async(QueryAction.Goal(prompt="What is this?", task="question", max_new_tokens=4))
        handle = wait_until(sent.done, 10.0, what="goal accepted") and sent.result()
        done = handle.get_result_async()
        result = wait_until(done.done, 30.0, what="action result") and done.result().result
        assert result.success, result.message
        assert result.answer.model_id == str(model) and ns(result.answer.clip_end) in stamps
        action.destroy()
        d = client.diagnostics("/robot/molmo2")
        assert d["model_state"] == "loaded" and int(d["windows_processed"]) >= 1
        print(f"tiny model node: active {startup:.1f} s after start, inference p50 {d['inference_latency_p50_s']} s")
    finally:
        code, seconds = node.stop()
    assert code == 0 and seconds < 5.0, node.output()


def test_bad_model_folder_leaves_node_unconfigured_until_fixed(ros_env, client, tmp_path):
    missing = tmp_path / "no_such_model"
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    queries: '- {id: scene, task: caption}'\n")
    node = NodeProcess(["--ros-args", "-r", "__node:=molmo2", "--params-file", str(params), "-p", f"model:={missing}",
                        "-p", "device:=cpu", "-p", "window_s:=2.0", "-p", "max_new_tokens:=4"],
                       ros_env, tmp_path / "node.log")
    try:
        wait_until(lambda: "configure failed" in node.output(), 60.0, what="configure failure log")
        assert f"model folder '{missing}' does not exist" in node.output()
        # the log line comes from inside on_configure: the transition finishes right after it
        wait_until(lambda: client.state("/molmo2") == "unconfigured", 10.0, what="back in unconfigured")
        assert node.proc.poll() is None
        d = client.diagnostics("/molmo2")
        assert d["_level"] == 2 and "does not exist" in d["_message"]
        assert client.set_params("/molmo2", model=str(tiny_model_dir()))[0].successful
        assert client.transition("/molmo2", "configure") and client.transition("/molmo2", "activate")
        assert client.state("/molmo2") == "active"
        assert client.diagnostics("/molmo2")["model_state"] == "loaded"
    finally:
        code, seconds = node.stop()
    assert code == 0 and seconds < 5.0, node.output()
