#!/usr/bin/env python3
"""make mission [ORACLE=1]: the example mission (molmo2_ros/mission.py) against a live node, scored.

A synthetic RGB-D scenario (offline/data/scenario.py with aligned depth: 10 s, 10 fps, 160x120; the first red ball
falls at 3.0-4.5 s, the second at 6.5-8.0 s) is played with /clock (`molmo2-ros play`) into a live molmo2 node
(use_sim_time, depth.enabled, schedule every_window, reliable input) whose standing query `ball_fall` is the event
"ball falling". The mission process (scripts/example_mission) waits for the fall and publishes a PoseStamped goal at
the ball; this script takes the goal from the topic and compares it with the ground truth:

  goal_error_m         distance (m) from the goal to the falling ball's true 3D position at the goal's stamp (the
                       truth fall event nearest the detected one decides which ball);
  event_stamp_error_s  |detected event start - true fall start| (s).

Engines: the shipped tiny model (preset tiny, CPU) by default; `--oracle` (ORACLE=1) the oracle evaluation
instrument (test/helpers/oracle_plugin.py, answers from the scenario's ground truth: it checks the plumbing from
bag to goal, not a model). Prints progress on stderr and one JSON line on stdout: status (the tree's SUCCESS or
FAILURE), goal_error_m, event_stamp_error_s (null when there was no goal or event), engine, wall_s, and reason,
event_id, goal_stamp_ns, truth_object. Exit status 0 when the mission succeeded, else 1.
ROS traffic stays on this host on a ROS_DOMAIN_ID claimed like the tests do (test/helpers/ros_env.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]  # test/helpers (the ROS environment, the oracle plugin)

from helpers.ros_env import ros_environment  # noqa: E402

NODE_NAME = f"molmo2_mission_{os.getpid()}"
GOAL_TOPIC = f"/mission_{os.getpid()}/goal_pose"
CAMERA_TOPIC = "/camera/image_raw"
QUERY_ID, QUERY_TEXT = "ball_fall", "ball falling"
ORACLE_PLUGIN = "helpers.oracle_plugin:OraclePlugin"


def log(msg: str) -> None:
    print(f"mission: {msg}", file=sys.stderr, flush=True)


def params_file(folder: Path, scenario: Path, oracle: bool) -> Path:
    lines = ["/**:", "  ros__parameters:", "    queries: |", f"      - {{id: {QUERY_ID}, task: event, text: {QUERY_TEXT}}}",
             "    use_sim_time: true", "    depth.enabled: true", "    schedule: every_window", "    qos: reliable",
             "    input_depth: 500", "    no_frame_warn_s: 60.0"]
    if oracle:
        lines += [f"    engine_plugin: {ORACLE_PLUGIN}", f"    model: {scenario / 'scenario.json'}",
                  "    window_s: 2.0", "    stride_s: 0.5"]
    else:  # the preset's clips (4 s / 1 s, 8 frames); answers long enough for a few points
        lines += ["    preset: tiny", "    device: cpu", "    dtype: float32", "    max_new_tokens: 64"]
    path = folder / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class GoalMonitor:
    """Keeps the PoseStamped goals the mission publishes (its own rclpy context, spun on a thread)."""

    def __init__(self) -> None:
        from geometry_msgs.msg import PoseStamped
        from helpers.ros_client import SpunNode
        from molmo2_ros.mission import GOAL_QOS

        self.goals: list = []
        self.spun = SpunNode("molmo2_mission_monitor")
        self.spun.node.create_subscription(PoseStamped, GOAL_TOPIC, self.goals.append, GOAL_QOS)

    def inputs_subscribed(self) -> bool:
        from molmo2_ros.offline.data.depth_world import CAMERA_INFO_TOPIC, DEPTH_TOPIC

        return all(any(i.node_name == NODE_NAME for i in self.spun.node.get_subscriptions_info_by_topic(t))
                   for t in (CAMERA_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC))

    def close(self) -> None:
        self.spun.close()


def score(truth: dict, result: dict, goal) -> dict:
    """goal_error_m, event_stamp_error_s, truth_object against the scenario's ground truth."""
    out = {"goal_error_m": None, "event_stamp_error_s": None, "truth_object": None}
    event = result.get("event")
    falls = [e for e in truth["events"] if e["type"] == "fall"]
    if event is None or not falls:
        return out
    nearest = min(falls, key=lambda e: abs(e["start_ns"] - event["start_ns"]))
    out["event_stamp_error_s"] = round(abs(event["start_ns"] - nearest["start_ns"]) / 1e9, 3)
    oid = nearest["object_ids"][0]
    out["truth_object"] = oid
    if goal is None:
        return out
    stamp = goal.header.stamp.sec * 1_000_000_000 + goal.header.stamp.nanosec
    rows = {int(s): (x, y, z) for s, x, y, z, _ in truth["depth"]["objects"][oid]["track3d"]}
    if stamp in rows:
        p = goal.pose.position
        out["goal_error_m"] = round(math.dist((p.x, p.y, p.z), rows[stamp]), 4)
    out["goal_stamp_ns"] = stamp
    return out


def run(tmp: Path, oracle: bool, seconds: float, rate: float) -> dict:
    from helpers.ros_client import process_env, terminate
    from molmo2_ros.offline.data.depth_world import CAMERA_INFO_TOPIC, DEPTH_TOPIC, DepthOptions
    from molmo2_ros.offline.data.scenario import generate_scenario

    scenario = tmp / "scenario"
    bag = generate_scenario(scenario, seconds=seconds, fps=10.0, width=160, height=120, depth=DepthOptions())
    truth = json.loads((scenario / "scenario.json").read_text())
    with ros_environment(tmp / "ros_home") as ros:
        env = process_env({**ros, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), ros.get("PYTHONPATH", ""))
                                                                  if p)})
        node_log = open(tmp / "node.log", "wb")
        node = subprocess.Popen([sys.executable, str(REPO / "scripts" / "molmo2_node"), "--ros-args",
                                 "-r", f"__node:={NODE_NAME}", "-r", f"image:={CAMERA_TOPIC}",
                                 "-r", f"depth:={DEPTH_TOPIC}", "-r", f"camera_info:={CAMERA_INFO_TOPIC}",
                                 "--params-file", str(params_file(tmp, scenario, oracle))],
                                env=env, stdout=node_log, stderr=subprocess.STDOUT)
        monitor = GoalMonitor()
        mission = subprocess.Popen([sys.executable, str(REPO / "scripts" / "example_mission"), "--node",
                                    f"/{NODE_NAME}", "--query", QUERY_ID, "--text", QUERY_TEXT, "--goal-topic",
                                    GOAL_TOPIC, "--timeout-s", str(seconds / rate + 90.0), "--setup-timeout-s",
                                    "120", "--ros-args", "-p", "use_sim_time:=true"],
                                   env=env, stdout=subprocess.PIPE, stderr=open(tmp / "mission.log", "wb"), text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(mission.stdout), daemon=True)
        reader.start()
        result: dict = {"status": "FAILURE", "reason": ""}
        try:
            deadline = time.monotonic() + 150.0
            while "mission: ready\n" not in lines or not monitor.inputs_subscribed():
                if node.poll() is not None or mission.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"not ready: node {node.poll()}, mission {mission.poll()}; node log:\n"
                                       f"{(tmp / 'node.log').read_text()[-2000:]}")
                time.sleep(0.1)
            log(f"node /{NODE_NAME} and mission ready; playing {bag} at rate {rate:g}")
            play = subprocess.run([str(Path(sys.executable).parent / "molmo2-ros"), "play", str(bag), "--rate",
                                   str(rate)], env=env, capture_output=True, text=True, timeout=seconds / rate + 60)
            log(f"played: {play.stdout.strip()} (exit {play.returncode})")
            mission.wait(timeout=120.0)
            reader.join(5.0)
            jsons = [line for line in lines if line.startswith("{")]
            result = json.loads(jsons[-1]) if jsons else {"status": "FAILURE", "reason": "no result line"}
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            result["reason"] = str(error)[-1500:]
        finally:
            for proc in (mission, node):
                terminate(proc)
            node_log.close()
            time.sleep(0.3)  # the goal's last delivery
            goals = list(monitor.goals)
            monitor.close()
    scored = score(truth, result, goals[-1] if goals else None)
    engine = "oracle" if oracle else "molmo2-tiny-synthetic"
    return {"status": result.get("status", "FAILURE"), "goal_error_m": scored["goal_error_m"],
            "event_stamp_error_s": scored["event_stamp_error_s"], "engine": engine,
            "reason": result.get("reason", ""), "event_id": (result.get("event") or {}).get("id"),
            "goal_stamp_ns": scored.get("goal_stamp_ns"), "truth_object": scored["truth_object"],
            "goals_received": len(goals)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--oracle", action="store_true", help="the oracle evaluation instrument instead of the tiny model")
    p.add_argument("--seconds", type=float, default=10.0, help="scenario length (s)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, bag)")
    args = p.parse_args()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="molmo2_mission_"))
    line = run(tmp, args.oracle, args.seconds, args.rate)
    line["wall_s"] = round(time.monotonic() - started, 1)
    if args.keep or line["status"] != "SUCCESS":
        log(f"logs in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(line), flush=True)
    return 0 if line["status"] == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
