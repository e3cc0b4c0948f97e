"""Rewind on the live node (issue 27): with `history.enabled` a node records its camera's sampled frames and its
standing queries' sightings; after a bag has played through it, the Query action answers about a range that left
the frame buffer long ago (scanned from the history), with source-frame stamps from that range, and `~/recall`
gives the last sighting of a standing query's object without running the model. A restarted node reopens the
history and still answers about the first run's frames.

Engine: the offline oracle (test/helpers/oracle_plugin.py): deterministic, so the answers can be checked against
the scenario's ground truth.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rclpy.action import ActionClient

from helpers.reliability import ORACLE, start_node, unique_names
from helpers.ros_client import Client, process_env, wait_until
from molmo2_ros.core.queries import parse_queries
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario

CLI = Path(sys.executable).parent / "molmo2-ros"
NAME, _ = unique_names()
NODE = f"/{NAME}"
CAMERA_TOPIC = "/camera/image_raw"
SECONDS, FPS = 24.0, 10.0
WINDOW_S, STRIDE_S = 3.0, 1.0


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rewind") / "scenario"
    generate_scenario(folder, seconds=SECONDS, fps=FPS, width=160, height=120)
    return folder


def _queries(scenario: Path) -> tuple[list[dict], str]:
    truth = GroundTruth.load(scenario / "scenario.json")
    queries = [q for q in truth.data["queries"] if q["id"] in ("ball_point", "ball_fall")]
    lines = "\n".join(f"- {{id: {q['id']}, task: {q['task']}, text: '{q['text']}'}}" for q in queries)
    assert len(parse_queries(lines)) == 2  # valid as the node reads them
    return queries, lines


def _start(client: Client, env: dict, folder: Path, scenario: Path, history: Path, queries: str):
    folder.mkdir()
    return start_node(client, env, folder, name=NAME, queries=queries, topic=CAMERA_TOPIC, engine_plugin=ORACLE,
                      model=str(scenario / "scenario.json"), use_sim_time=True, schedule="every_window",
                      window_s=WINDOW_S, stride_s=STRIDE_S, no_frame_warn_s=120.0, qos="reliable", input_depth=500,
                      **{"history.enabled": True, "history.path": str(history)})


def _ask(client: Client, goal_fields: dict, timeout: float = 60.0):
    from molmo2_ros.action import Query

    action: ActionClient = client.action_client(Query, f"{NODE}/query")
    assert action.wait_for_server(timeout_sec=10.0)
    goal = Query.Goal(**goal_fields)
    future = action.send_goal_async(goal)
    wait_until(future.done, timeout, what="goal accepted")
    handle = future.result()
    assert handle.accepted
    result = handle.get_result_async()
    wait_until(result.done, timeout, what="goal result")
    return result.result().result


def _time(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def _ns(t) -> int:
    return t.sec * 10**9 + t.nanosec


def test_rewind_and_recall_on_the_live_node(ros_env, client, scenario, tmp_path):
    from molmo2_ros.msg import PointArray
    from molmo2_ros.srv import Recall

    truth = GroundTruth.load(scenario / "scenario.json")
    frames = truth.frames
    queries, lines = _queries(scenario)
    point_q = next(q for q in queries if q["task"] == "point")
    history = tmp_path / "history"
    node = _start(client, ros_env, tmp_path / "run1", scenario, history, lines)
    try:
        topic = f"{NODE}/points/{point_q['id']}"
        client.subscribe(PointArray, topic)
        client.wait_matched(topic)
        wait_until(lambda: any(i.node_name == NAME for i in client.node.get_subscriptions_info_by_topic(
            CAMERA_TOPIC)), 10.0, what="the node subscribing to the camera")
        play = subprocess.run([str(CLI), "play", str(scenario / "bag"), "--rate", "2.0", "--wait-subscribers", "1"],
                              env=process_env(ros_env), capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr[-3000:]
        windows = int((SECONDS - WINDOW_S) / STRIDE_S)
        wait_until(lambda: len(client.got(topic)) >= windows - 1, 30.0, what="the standing query's windows")

        # a range that left the 3 s buffer long ago: the first 10 s of the bag, asked for the point query's object
        start_ns, end_ns = frames[0], frames[0] + 10 * 10**9
        result = _ask(client, {"prompt": point_q["text"], "task": "point", "start": _time(start_ns),
                               "end": _time(end_ns)})
        assert result.success, result.message
        assert result.clips_scanned >= 1 and result.frames_scanned >= 15, result.message
        stamps = [_ns(p.stamp) for p in result.points.points]
        assert stamps, "the oracle sees the object in the first 10 s"
        assert all(s in truth.frame_index and start_ns <= s <= end_ns for s in stamps), stamps
        for p in result.points.points:  # pixels of the original image, on the object at that stamp
            where = [truth.visible(o, _ns(p.stamp)) for o in point_q["objects"]]
            assert any(w is not None and abs(p.x - w[0]) <= 3 and abs(p.y - w[1]) <= 3 for w in where), (p, where)
        assert result.clip_points and all(_ns(c.clip_start) >= start_ns for c in result.clip_points)

        # lookback: the last 12 s, answered from the history too (the buffer holds 3 s)
        back = _ask(client, {"prompt": point_q["text"], "task": "point", "lookback_s": 12.0})
        assert back.success and back.clips_scanned >= 1, back.message
        # (the range ends at the newest kept frame: at most one 2 fps sample period before the bag's last frame)
        assert min(_ns(p.stamp) for p in back.points.points) >= frames[-1] - 12 * 10**9 - 5 * 10**8

        # recall: the last sighting of the standing query's object = its newest published point (three red balls:
        # one of the points of the newest stamp)
        published = [p for m in client.got(topic) for p in m.points]
        newest = max(_ns(p.stamp) for p in published)
        last = {(round(p.x, 3), round(p.y, 3)) for p in published if _ns(p.stamp) == newest}
        response = client.call(Recall, f"{NODE}/recall", Recall.Request(query_id=point_q["id"]))
        assert response.success, response.message
        assert len(response.sightings) == 1
        s = response.sightings[0]
        assert _ns(s.stamp) == newest and (round(s.x, 3), round(s.y, 3)) in last
        assert s.query_id == point_q["id"] and s.image_width == truth.width
        every = client.call(Recall, f"{NODE}/recall", Recall.Request(query_id=point_q["id"], limit=50))
        assert {(round(s.x, 3), round(s.y, 3)) for s in every.sightings if _ns(s.stamp) == newest} == last
        by_text = client.call(Recall, f"{NODE}/recall", Recall.Request(text=point_q["text"].upper(), limit=5))
        assert by_text.success and len(by_text.sightings) == 5
        assert _ns(by_text.sightings[0].stamp) == newest  # newest first

        # the planner's client library asks the same service
        from molmo2_ros.client import Molmo2Client

        planner = Molmo2Client(client.node, namespace=NODE)
        try:
            seen = planner.recall(point_q["text"], limit=3)
            assert len(seen) == 3 and _ns(seen[0].stamp) == newest
        finally:
            planner.close()

        # refusals are clear
        bad = client.call(Recall, f"{NODE}/recall", Recall.Request(camera="nope"))
        assert not bad.success and "unknown camera" in bad.message
        diag = client.diagnostics(NODE)
        assert int(diag.get("frames_written", 0)) >= 40, diag
    finally:
        code, _ = node.stop()
    assert code == 0, node.output()[-4000:]
    assert stat.S_IMODE(history.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in history.iterdir() if f.is_file())

    # a restarted node reopens its history: the first run's frames still answer
    node = _start(client, ros_env, tmp_path / "run2", scenario, history, lines)
    try:
        again = _ask(client, {"prompt": point_q["text"], "task": "point", "start": _time(start_ns),
                              "end": _time(end_ns)})
        assert again.success, again.message
        assert [_ns(p.stamp) for p in again.points.points] == stamps
    finally:
        code, _ = node.stop()
    assert code == 0, node.output()[-4000:]


def test_history_off_names_the_parameter(ros_env, client, scenario, tmp_path):
    from molmo2_ros.srv import Recall

    _, lines = _queries(scenario)
    node = start_node(client, ros_env, tmp_path, name=NAME, queries=lines, topic=CAMERA_TOPIC, engine_plugin=ORACLE,
                      model=str(scenario / "scenario.json"))
    try:
        response = client.call(Recall, f"{NODE}/recall", Recall.Request(text="ball"))
        assert not response.success and "history.enabled" in response.message
        result = _ask(client, {"prompt": "ball", "task": "point", "start": _time(10**9), "end": _time(2 * 10**9)})
        assert not result.success and "history.enabled" in result.message, result.message
    finally:
        node.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs) for the history; skipped where this user may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.strip()}): the store's disk-full test "
                    "(test_history_store.py, RLIMIT_FSIZE) still runs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write a filler file until the filesystem is full; returns it."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_full_disk_stops_writing_and_resumes(ros_env, client, tmp_path, small_disk):
    """A full disk stops the history writing (/diagnostics ERROR naming it, frames counted as dropped), the node keeps
    answering its standing queries, and writing resumes by itself once space returns."""
    from helpers.ros_client import start_camera

    from molmo2_ros.msg import PointArray

    topic = f"/cam_{NAME}/image"
    node = start_node(client, ros_env, tmp_path, name=NAME, queries="- {id: ball, task: point, text: ball}",
                      topic=topic, engine_plugin="helpers.scripted_engine:ScriptedEngine", model="s",
                      window_s=2.0, stride_s=1.0, qos="reliable",
                      **{"history.enabled": True, "history.path": str(small_disk / "history")})
    camera = start_camera({"topic": topic, "qos": "reliable", "rate": 20.0, "count": 900, "dt": 0.05,
                           "width": 320, "height": 240}, ros_env)
    try:
        out = f"{NODE}/points/ball"
        client.subscribe(PointArray, out)
        wait_until(lambda: int(client.diagnostics(NODE).get("frames_written", 0)) >= 4, 30.0, what="frames written")
        filler = _fill(small_disk)
        full = wait_until(lambda: (d := client.diagnostics(NODE))["_message"].startswith("history disk full") and d,
                          30.0, what="diagnostics: history disk full")
        assert full["_level"] == 2, full  # ERROR
        assert str(small_disk / "history") in full["_message"]
        written = int(full.get("frames_written", 0))
        answered = len(client.got(out))
        wait_until(lambda: int(client.diagnostics(NODE).get("history_frames_dropped_disk_full", 0)) >= 2, 20.0,
                   what="frames dropped while full, counted")
        wait_until(lambda: len(client.got(out)) >= answered + 2, 20.0, what="answers while the disk is full")
        filler.unlink()
        wait_until(lambda: int(client.diagnostics(NODE).get("frames_written", 0)) >= written + 2, 30.0,
                   what="writing resumed")
        assert not client.diagnostics(NODE)["_message"].startswith("history")
        assert node.proc.poll() is None
    finally:
        camera.kill()
        camera.wait(10)
        code, _ = node.stop()
    assert code == 0, node.output()[-4000:]
