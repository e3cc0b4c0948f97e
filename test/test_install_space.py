"""The package as a robot workspace uses it: only the colcon install space sourced, no source tree on PYTHONPATH.

- the installed entry point (what `ros2 run molmo2_ros molmo2_node` executes) runs the node with the tiny model,
  and its default camera topic is relative (a namespace applies);
- the installed launch file (through test/helpers/launch_standin): arguments left unset keep the params file,
  given ones override it, log_level and fastdds_profile reach the node, the default camera topic follows the
  namespace;
- `colcon test` runs the pytest suite (BUILD_TESTING).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rcl_interfaces.srv import GetParameters

from helpers.install_space import install_dir, install_env, installed_executable, installed_share, launch_installed
from helpers.ros_client import Client, NodeProcess, run_camera, wait_until
from molmo2_ros.core.presets import SHIPPED_MODEL
from molmo2_ros.msg import Answer
from molmo2_ros.offline.data.scenario import generate_scenario
from molmo2_ros.ros.environment import allocator_env, fastdds_profile_env

REPO = Path(__file__).resolve().parents[1]
CAMERA = {"qos": "reliable", "rate": 10, "dt": 0.5, "width": 64, "height": 48, "t0": 3000.0}



@pytest.fixture
def robot_env(ros_env, tmp_path) -> dict[str, str]:
    """The test's ROS environment with only the install space sourced; processes run in tmp_path/run."""
    (tmp_path / "run").mkdir()
    return install_env(ros_env)


def get_params(client: Client, node: str, *names: str) -> dict:
    response = client.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=list(names)))
    values = {}
    for name, value in zip(names, response.values):
        values[name] = {1: value.bool_value, 4: value.string_value}.get(value.type, value)
    return values


def start(process: dict, env: dict[str, str], log: Path) -> NodeProcess:
    cmd = process["cmd"]
    return NodeProcess(cmd[1:], {**env, **process["env"]}, log, command=[cmd[0]])


def test_installed_modules_come_from_the_install_space(robot_env, tmp_path):
    code = "import molmo2_ros.ros.node as n, molmo2_ros.offline.data.bags as b, molmo2_ros.msg as m; " \
           "print(n.__file__); print(b.__file__); print(m.__file__)"
    out = subprocess.run(["python3", "-c", code], env=robot_env, cwd=tmp_path / "run", capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    files = out.stdout.split()
    assert len(files) == 3 and all(f.startswith(str(install_dir())) for f in files), files
    for name in ("launch/molmo2.launch.py", "config/fastdds_shm.xml", "config/tiny_cpu.yaml", "msg/Answer.msg",
                 f"models/{SHIPPED_MODEL}/config.json", f"models/{SHIPPED_MODEL}/model.safetensors"):
        assert (installed_share() / name).is_file(), name
    assert (Path(files[0]).parents[1] / "presets" / "molmo2-4b.yaml").is_file()


def test_installed_replay_runs_the_shipped_model_from_any_folder(robot_env, tmp_path):
    """`molmo2-ros replay` with only the workspace sourced, in a folder outside the checkout: the default preset
    finds the shipped model in the install space (never a random model)."""
    bag = generate_scenario(tmp_path / "scn", seconds=5.0, fps=5.0, width=96, height=72)
    out = subprocess.run(["python3", str(install_dir() / "molmo2_ros" / "bin" / "molmo2-ros"), "replay", str(bag),
                          "--out", str(tmp_path / "out"), "--quiet", "--no-gif", "--device", "cpu"],
                         env=robot_env, cwd=tmp_path / "run", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_id"] == str(installed_share() / "models" / SHIPPED_MODEL) and summary["windows"] >= 1
    assert "preset tiny" in out.stderr and "random" not in (out.stdout + out.stderr).lower()


def test_installed_entry_point_runs_the_node_with_a_relative_camera_topic(robot_env, client, tmp_path):
    """What `ros2 run molmo2_ros molmo2_node --ros-args -r __ns:=/robot ...` runs with the installed tiny_cpu.yaml
    (preset tiny: the shipped model from the install space): the default camera topic (no remapping given) lies in
    the node's namespace."""
    node = NodeProcess(["--ros-args", "-r", "__ns:=/robot", "--params-file",
                        str(installed_share() / "config" / "tiny_cpu.yaml")],
                       robot_env, tmp_path / "node.log", command=[str(installed_executable())])
    try:
        wait_until(lambda: node.proc.poll() is not None or client.state("/robot/molmo2") == "active", 90.0,
                   what="node active")
        assert node.proc.poll() is None, node.output()
        # with qos auto the subscription itself waits for a publisher, to match its reliability
        assert "waiting for a publisher on /robot/camera/image_raw" in node.output(), node.output()
        client.subscribe(Answer, "/robot/molmo2/answers/scene")
        client.wait_matched("/robot/molmo2/answers/scene")
        frames = run_camera({**CAMERA, "topic": "/robot/camera/image_raw", "count": 8}, robot_env)
        wait_until(lambda: "subscribed to /robot/camera/image_raw" in node.output(), 20.0, what="subscription")
        wait_until(lambda: client.got("/robot/molmo2/answers/scene"), 60.0, what="an answer of the tiny model")
        answer = client.got("/robot/molmo2/answers/scene")[0]
        stamps = {f["stamp"] for f in frames}
        assert answer.model_id == str(installed_share() / "models" / SHIPPED_MODEL)  # preset tiny, installed
        assert answer.header.stamp.sec * 1_000_000_000 + answer.header.stamp.nanosec in stamps
    finally:
        code, _ = node.stop(timeout=30.0)  # exit time is test_node_launch's concern; here: a clean exit
    assert code == 0, node.output()


def _params_file(tmp_path: Path) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text("/**:\n  ros__parameters:\n    autostart: false\n    input_compressed: true\n"
                    "    use_sim_time: true\n    device: cpu\n    queries: '- {id: scene, task: caption}'\n")
    return path


def test_launch_arguments_left_unset_keep_the_params_file(robot_env, client, tmp_path):
    params = _params_file(tmp_path)
    (process,) = launch_installed({"params_file": str(params), "namespace": "unset"}, robot_env, tmp_path / "run")
    # no override file, no profile; the default allocator (auto: tcmalloc where installed, else nothing preloaded)
    default_allocator = allocator_env("auto", robot_env)
    assert process["cmd"].count("--params-file") == 1 and process["env"] == default_allocator
    assert "image:=camera/image_raw" in process["cmd"]
    node = start(process, robot_env, tmp_path / "node.log")
    try:
        wait_until(lambda: client.state("/unset/molmo2") == "unconfigured", 30.0, what="node up")
        # the node's malloc is the default allocator's (tcmalloc where installed: make malloc-libs)
        maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
        assert ("/libtcmalloc" in maps) == bool(default_allocator), process["env"]
        assert get_params(client, "/unset/molmo2", "autostart", "input_compressed", "use_sim_time", "device") == {
            "autostart": False, "input_compressed": True, "use_sim_time": True, "device": "cpu"}
    finally:
        code, _ = node.stop(timeout=30.0)
    assert code == 0 and "[DEBUG]" not in node.output(), node.output()


def test_launch_arguments_given_override_the_params_file(robot_env, client, tmp_path):
    params = _params_file(tmp_path)
    (process,) = launch_installed({"params_file": str(params), "namespace": "given", "compressed": "false",
                                   "use_sim_time": "false", "log_level": "debug", "device": "auto",
                                   "fastdds_profile": "shm"}, robot_env, tmp_path / "run")
    assert process["env"] == {**fastdds_profile_env(installed_share() / "config" / "fastdds_shm.xml"),
                              **allocator_env("auto", robot_env)}
    node = start(process, robot_env, tmp_path / "node.log")
    try:
        wait_until(lambda: client.state("/given/molmo2") == "unconfigured", 30.0, what="node up")
        assert get_params(client, "/given/molmo2", "autostart", "input_compressed", "use_sim_time", "device") == {
            "autostart": False, "input_compressed": False, "use_sim_time": False, "device": "auto"}
    finally:
        code, _ = node.stop(timeout=30.0)
    assert code == 0 and "[DEBUG]" in node.output(), node.output()[-3000:]


def test_launch_rejects_a_boolean_that_is_not_one(robot_env, tmp_path):
    with pytest.raises(AssertionError, match="use true or false"):
        launch_installed({"autostart": "maybe"}, robot_env, tmp_path / "run")


@pytest.mark.parametrize("name", ["jemalloc", "tcmalloc"])
def test_launch_allocator_argument(robot_env, tmp_path, name):
    """allocator:=NAME preloads the library where it is installed and otherwise fails the launch saying what to
    install; an allocator it does not know fails with the choices."""
    try:
        expected = allocator_env(name, robot_env)
    except ValueError as missing:
        with pytest.raises(AssertionError, match=re.escape(str(missing))):
            launch_installed({"allocator": name}, robot_env, tmp_path / "run")
    else:
        (process,) = launch_installed({"allocator": name}, robot_env, tmp_path / "run")
        assert process["env"] == expected and f"lib{name}" in expected["LD_PRELOAD"]
    with pytest.raises(AssertionError, match="use auto, glibc, jemalloc or tcmalloc"):
        launch_installed({"allocator": "mimalloc"}, robot_env, tmp_path / "run")


def test_colcon_test_runs_the_pytest_suite(ros_env, tmp_path):
    """`colcon test` on this checkout's build runs test/ through pytest (narrowed to one quick test here with
    PYTEST_ADDOPTS; the unnarrowed run is the whole suite) against the install space."""
    build = Path(str(install_dir()).replace("install", "build"))
    venv = Path(sys.prefix)
    env = {k: v for k, v in ros_env.items() if k not in ("PYTHONPATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    env.update(AMENT_PREFIX_PATH=str(venv), PYTEST_ADDOPTS="-k test_localhost_discovery_by_distro -p no:cacheprovider")
    out = subprocess.run([str(venv / "bin" / "colcon"), "--log-base", str(tmp_path / "log"), "test",
                          "--base-paths", str(REPO), "--build-base", str(build), "--install-base", str(install_dir()),
                          "--return-code-on-test-failure",
                          "--event-handlers", "console_direct+"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    result = build / "molmo2_ros" / "test_results" / "molmo2_ros" / "molmo2_ros_pytest.xunit.xml"
    suite = ET.parse(result).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) == 1 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    assert os.path.getmtime(result) > os.path.getmtime(tmp_path)
