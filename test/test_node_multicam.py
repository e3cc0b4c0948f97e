"""Several cameras in one node process, one model: 3 cameras with different resolutions and encodings (one
compressed); every output carries its own camera's frame_id and stamps; the model loads once; a camera whose
publisher goes away or sends bad frames does not disturb the others; per-camera diagnostics, queries and goals."""

from __future__ import annotations

import os
import time

import pytest
from builtin_interfaces.msg import Time

from helpers.reliability import SCRIPTED, FrameSender, rgb_image, start_node, unique_names
from helpers.ros_client import finish_camera, run_camera, start_camera, wait_until
from molmo2_ros.action import Query as QueryAction
from molmo2_ros.msg import Answer, PointArray, StandingQuery
from molmo2_ros.srv import ManageQueries

NAME, _ = unique_names()
NODE = f"/{NAME}"
TAG = NAME.removeprefix("molmo2_")
REQ = ManageQueries.Request
CAMERAS = {  # name -> camera spec (the topic is remapped per test process)
    "front": {"width": 320, "height": 240, "frames": [{"encoding": "rgb8", "color": [250, 10, 10]}]},
    "wrist": {"width": 160, "height": 120, "frames": [{"encoding": "mono8", "color": [90, 90, 90]}]},
    "rear": {"width": 200, "height": 150, "compressed": True, "frames": [{"format": "jpg", "color": [10, 10, 250]}]},
}
SHARED = "- {id: ball, task: point, text: ball}\n- {id: what, task: question, text: colour}"


def topic(camera: str) -> str:
    return f"/cam_{TAG}/{camera}/image"


def spec(camera: str, t0: float, count: int = 8, **overrides) -> dict:
    return {"topic": topic(camera), "qos": "reliable", "rate": 10, "count": count, "t0": t0, "dt": 0.5,
            "frame_id": f"{camera}_optical", **CAMERAS[camera], **overrides}



@pytest.fixture
def node(ros_env, client, tmp_path):
    remaps = [arg for c in CAMERAS for arg in ("-r", f"{c}/image:={topic(c)}")]
    proc = start_node(client, ros_env, tmp_path, name=NAME, queries=SHARED, engine_plugin=SCRIPTED,
                      model="scripted", window_s=2.0, stride_s=1.0, cameras="front, wrist, rear",
                      **{"rear.input_compressed": True, "wrist.queries": "- {id: hand, task: point, text: hand}"},
                      extra=remaps)
    yield proc
    code, seconds = proc.stop()
    assert code == 0 and seconds < 5.0, proc.output()


def ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def outputs(camera: str) -> list[tuple[str, type]]:
    queries = ["hand"] if camera == "wrist" else ["ball"]
    return [(f"{NODE}/{camera}/points/{q}", PointArray) for q in queries] + \
        [(f"{NODE}/{camera}/answers/{q}", Answer) for q in queries]


def test_three_cameras_one_model_each_output_from_its_camera(node, client, ros_env):
    for camera in CAMERAS:
        for name, msg_type in outputs(camera):
            client.subscribe(msg_type, name)
            client.wait_matched(name)
    for camera in ("front", "rear"):
        client.subscribe(Answer, f"{NODE}/{camera}/answers/what")
        client.wait_matched(f"{NODE}/{camera}/answers/what")
    procs = {c: start_camera(spec(c, t0=100.0 + 1000 * i), ros_env) for i, c in enumerate(CAMERAS)}
    stamps = {c: {f["stamp"] for f in finish_camera(proc)} for c, proc in procs.items()}
    for camera in CAMERAS:
        name = outputs(camera)[0][0]
        wait_until(lambda: len(client.got(name)) >= 3, 20.0, what=f"outputs of {camera}")
        for msg_name, _ in outputs(camera):
            for msg in client.got(msg_name):
                assert msg.header.frame_id == f"{camera}_optical", (msg_name, msg.header.frame_id)
                assert ns(msg.header.stamp) in stamps[camera]
        points = client.got(name)
        w, h = CAMERAS[camera]["width"], CAMERAS[camera]["height"]
        assert all(p.image_width == w and p.image_height == h for p in points)
        assert all(ns(pt.stamp) in stamps[camera] for p in points for pt in p.points)
    # answers show each camera's own pixels (the scripted engine answers questions with the newest frame's mean
    # colour): front is pure rgb8, rear a JPEG of (10, 10, 250)
    wait_until(lambda: all(client.got(f"{NODE}/{c}/answers/what") for c in ("front", "rear")), 10.0,
               what="question answers")
    assert client.got(f"{NODE}/front/answers/what")[-1].text.endswith("rgb=250,10,10")
    r, g, b = (int(v) for v in client.got(f"{NODE}/rear/answers/what")[-1].text.split("rgb=")[1].split(","))
    assert r < 30 and g < 30 and b > 220
    d = client.diagnostics(NODE)
    assert d["model_loads"] == "1" and d["cameras"] == "front, wrist, rear", d
    for camera in CAMERAS:
        cd = client.diagnostics(NODE, camera=camera)
        assert cd["camera"] == camera and int(cd["windows_processed"]) >= 3, cd
        assert cd["input_topic"] == topic(camera) and cd["input_type"] == (
            "CompressedImage" if camera == "rear" else "Image"), cd


def test_a_camera_going_away_or_sending_bad_frames_leaves_the_others_running(node, client, ros_env):
    for camera in CAMERAS:
        client.subscribe(PointArray, outputs(camera)[0][0])
        client.wait_matched(outputs(camera)[0][0])
    # 20 s of frames: the front camera still sends after the two other camera processes ran (seconds each)
    front = start_camera(spec("front", t0=5000.0, count=200), ros_env)
    # the rear camera sends a few frames, then its process exits (publisher gone)
    run_camera(spec("rear", t0=7000.0, count=4), os.environ.copy())
    # the wrist camera sends bad frames only (truncated data): counted there, nowhere else
    bad = run_camera(spec("wrist", t0=9000.0, count=6, frames=[{"encoding": "mono8", "bad": "truncated"}]),
                     os.environ.copy())
    assert all(f["bad"] for f in bad)
    before = len(client.got(outputs("front")[0][0]))
    wait_until(lambda: len(client.got(outputs("front")[0][0])) >= before + 3, 20.0,
               what="front outputs after rear left and wrist sent bad frames")
    finish_camera(front)
    wrist = client.diagnostics(NODE, camera="wrist")
    front_d = client.diagnostics(NODE, camera="front")
    assert int(wrist["bad_truncated_data"]) == 6 and int(wrist["frames_dropped"]) >= 6, wrist
    assert not any(k.startswith("bad_") for k in front_d), front_d
    assert int(front_d["windows_processed"]) >= 3 and front_d["_level"] == 0, front_d
    assert node.proc.poll() is None


def test_queries_and_goals_name_the_camera(node, client, ros_env):
    call = lambda **kw: client.call(ManageQueries, f"{NODE}/manage_queries", REQ(**kw))  # noqa: E731
    shared = call(op=REQ.OP_LIST)
    assert shared.success and {q.id for q in shared.queries} == {"ball", "what"}
    wrist = call(op=REQ.OP_LIST, camera="wrist")
    assert wrist.success and [q.id for q in wrist.queries] == ["hand"]
    added = call(op=REQ.OP_ADD, camera="wrist", query=StandingQuery(id="cup", task="point", text="cup"))
    assert added.success, added.message
    assert "cup" in client.get_param(NODE, "wrist.queries")
    assert not call(op=REQ.OP_ADD, camera="nope", query=StandingQuery(id="x", task="point", text="x")).success
    own = call(op=REQ.OP_ADD, camera="front", query=StandingQuery(id="x", task="point", text="x"))
    assert not own.success and "shared" in own.message
    client.subscribe(PointArray, f"{NODE}/wrist/points/cup")
    client.wait_matched(f"{NODE}/wrist/points/cup")
    run_camera(spec("wrist", t0=20000.0, count=6), os.environ.copy())
    wait_until(lambda: client.got(f"{NODE}/wrist/points/cup"), 15.0, what="the added wrist query's output")

    action = client.action_client(QueryAction, f"{NODE}/query")
    assert action.wait_for_server(timeout_sec=10)
    for goal, ok, text in ((QueryAction.Goal(prompt="ball", task="point"), False, "name the camera"),
                           (QueryAction.Goal(camera="nope", prompt="ball", task="point"), False, "unknown camera"),
                           (QueryAction.Goal(camera="wrist", prompt="ball", task="point"), True, "ok")):
        send = action.send_goal_async(goal)
        handle = wait_until(send.done, 10.0, what="goal response") and send.result()
        result = handle.get_result_async()
        res = wait_until(result.done, 15.0, what="goal result") and result.result().result
        assert res.success == ok and text in res.message, res.message
        if ok:
            assert res.answer.header.frame_id == "wrist_optical"


def test_per_camera_settings_and_frames_sent_from_the_test(node, client):
    sender = FrameSender(client, topic("front"), rate_hz=10)
    client.subscribe(PointArray, f"{NODE}/front/points/ball")
    client.wait_matched(f"{NODE}/front/points/ball")
    sender.send([rgb_image(30000.0 + i * 0.5, frame_id="front_optical") for i in range(6)])
    wait_until(lambda: client.got(f"{NODE}/front/points/ball"), 15.0, what="front output")
    assert client.get_param(NODE, "rear.input_compressed") is True
    assert client.get_param(NODE, "front.input_compressed") is False
    refused = client.set_params(NODE, front__qos="reliable")[0]
    assert not refused.successful and "activates" in refused.reason
    time.sleep(0.1)
