"""RGB-D scenario bags (`molmo2-ros generate --depth`) -> replay with depth -> 3D evaluation: the oracle's 3D error
stays under 1 cm (median) and 2 cm (p90) with and without lens distortion, for both depth encodings and a depth
image at half the colour resolution; the output bag holds the node's 3D messages; the synthetic depth draws the
same shapes as the colour image; bad input gives one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from molmo2_ros.cli import main
from molmo2_ros.core.types import NS_PER_S, TaskKind
from molmo2_ros.offline.evaluation.evaluate import load_results
from molmo2_ros.offline.data.depth_world import DepthOptions, DepthWorld
from molmo2_ros.offline.data.scenario import COLORS, OCCLUDER, build_world, render_frame


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("distortion, encoding, scale", [("none", "16UC1", 1.0), ("plumb_bob", "32FC1", 0.5),
                                                         ("equidistant", "16UC1", 0.5),
                                                         ("rational_polynomial", "16UC1", 1.0)])
def test_oracle_replay_of_an_rgbd_bag_is_within_a_centimetre(distortion, encoding, scale, tmp_path, capsys):
    code, _, err = _run(["generate", str(tmp_path / "s"), "--seconds", "10", "--width", "320", "--height", "240",
                         "--depth", "--distortion", distortion, "--depth-encoding", encoding,
                         "--depth-scale", str(scale)], capsys)
    assert code == 0, err
    scenario = tmp_path / "s" / "scenario.json"
    code, out, err = _run(["replay", str(tmp_path / "s" / "bag"), "--out", str(tmp_path / "r"), "--oracle",
                           str(scenario), "--depth", "--quiet", "--no-gif"], capsys)
    assert code == 0, err
    assert "[/camera/image_raw]" in out  # the colour topic, not the depth one
    code, out, err = _run(["eval", str(tmp_path / "r" / "results.jsonl"), str(scenario), "--json",
                           str(tmp_path / "eval.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval.json").read_text())
    overall = report["overall"]
    assert overall["error_3d_median_m"] <= 0.01 and overall["error_3d_p90_m"] <= 0.02, overall
    assert overall["points_3d_scored"] >= 200 and overall["points_3d_valid_rate"] >= 0.95, overall
    for qid in ("ball_point", "square_count", "ball_track", "ball_fall"):
        assert report["per_query"][qid]["error_3d_p90_m"] <= 0.02, (qid, report["per_query"][qid])


def _stamp(t) -> int:
    return t.sec * NS_PER_S + t.nanosec


def _positions(points) -> list[tuple]:
    """(status, position or None) of Point3Ds (results.jsonl) or GroundedPoint3D messages (NaN = None)."""
    out = []
    for p in points:
        if hasattr(p, "valid"):
            xyz = (p.position.x, p.position.y, p.position.z)
            out.append((int(p.status), xyz if p.valid else None))
            assert p.valid or all(np.isnan(xyz)), xyz
        else:
            out.append((int(p.status), p.position))
    return out


def test_replay_with_depth_writes_the_3d_messages_to_its_bag(tmp_path, capsys):
    """`replay --depth` writes the node's 3D messages on its 3D topics (/molmo2/points3d/<id>, ...): header stamps and
    log times are source frame stamps (the clip's newest frame; an event's end), the positions those of
    results.jsonl, message for message."""
    from rosbags.highlevel import AnyReader

    code, _, err = _run(["generate", str(tmp_path / "s"), "--seconds", "6", "--width", "160", "--height", "120",
                         "--depth"], capsys)
    assert code == 0, err
    code, _, err = _run(["replay", str(tmp_path / "s" / "bag"), "--out", str(tmp_path / "r"), "--oracle",
                         str(tmp_path / "s" / "scenario.json"), "--depth", "--quiet", "--no-gif"], capsys)
    assert code == 0, err
    kinds = {TaskKind.POINT: "points3d", TaskKind.COUNT: "counts3d", TaskKind.TRACK: "tracks3d",
             TaskKind.EVENT: "events3d"}
    expected: dict[str, list] = {}  # topic -> [(log time, header stamp, frame_id, content)] in the results' order
    for r in load_results(tmp_path / "r" / "results.jsonl"):
        if r.lifted is None:
            assert r.closing  # only the closing reports of the end of the bag have no 3D side
            continue
        topic = f"/molmo2/{kinds[r.query.task]}/{r.query.id}"
        if r.query.task == TaskKind.EVENT:
            expected.setdefault(topic, []).extend(
                (r.stamp_ns, e.end_ns, r.lifted.frame_id, (e.id, int(e.state), _positions(r.lifted.events[e.id])))
                for e in r.events)
        elif r.query.task == TaskKind.TRACK:
            expected.setdefault(topic, []).append((r.stamp_ns, r.stamp_ns, r.lifted.frame_id, [
                (t.id, int(t.status), _positions(r.lifted.tracks[t.id])) for t in r.tracks]))
        else:
            expected.setdefault(topic, []).append((r.stamp_ns, r.stamp_ns, r.lifted.frame_id,
                                                   _positions(r.lifted.points)))
    queries = json.loads((tmp_path / "s" / "scenario.json").read_text())["queries"]
    assert set(expected) == {f"/molmo2/{kinds[TaskKind(q['task'])]}/{q['id']}" for q in queries}
    expected = {topic: msgs for topic, msgs in expected.items() if msgs}  # no event in 6 s: no message
    assert "/molmo2/events3d/ball_fall" in expected
    assert any(valid for _, _, _, points in expected["/molmo2/points3d/ball_point"] for _, valid in points)
    got: dict[str, list] = {}
    with AnyReader([tmp_path / "r" / "molmo2_bag"]) as reader:
        # the molmo2_ros 3D sides (the standard outputs' detections3d/<id>: test_vision_msgs_outputs.py)
        connections = [c for c in reader.connections if "3d/" in c.topic and c.msgtype.startswith("molmo2_ros/")]
        assert {c.msgtype for c in connections} == {"molmo2_ros/msg/PointArray3D", "molmo2_ros/msg/TrackArray3D",
                                                   "molmo2_ros/msg/Event3D"}
        for conn, log_ns, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("Event3D"):
                content = (msg.id, msg.state, _positions(msg.evidence))
            elif conn.msgtype.endswith("TrackArray3D"):
                content = [(t.id, t.status, _positions(t.trajectory)) for t in msg.tracks]
            else:
                content = _positions(msg.points)
            got.setdefault(conn.topic, []).append((log_ns, _stamp(msg.header.stamp), msg.header.frame_id, content))
    assert got == expected
    frames = set(json.loads((tmp_path / "s" / "scenario.json").read_text())["frames"])
    assert all(log_ns in frames and stamp in frames for msgs in got.values() for log_ns, stamp, _, _ in msgs)


def test_replay_without_depth_flag_or_scenario_depth_has_no_3d_keys(tmp_path, capsys):
    code, _, _ = _run(["generate", str(tmp_path / "s"), "--seconds", "4", "--width", "160", "--height", "120"], capsys)
    assert code == 0
    scenario = tmp_path / "s" / "scenario.json"
    assert _run(["replay", str(tmp_path / "s" / "bag"), "--out", str(tmp_path / "r"), "--oracle", str(scenario),
                 "--quiet", "--no-gif"], capsys)[0] == 0
    line = (tmp_path / "r" / "results.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["lifted"] is None
    assert _run(["eval", str(tmp_path / "r" / "results.jsonl"), str(scenario), "--json", str(tmp_path / "e.json")],
                capsys)[0] == 0
    assert "error_3d_median_m" not in json.loads((tmp_path / "e.json").read_text())["overall"]
    # --depth on a bag without depth: one error line
    code, _, err = _run(["replay", str(tmp_path / "s" / "bag"), "--out", str(tmp_path / "r2"), "--oracle",
                         str(scenario), "--depth", "--quiet", "--no-gif"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "the bag has no depth Image topic" in errors[0], err
    assert "Traceback" not in err
    code, _, err = _run(["generate", str(tmp_path / "x"), "--depth", "--depth-scale", "2"], capsys)
    assert code == 2 and err.startswith("error: depth scale") and err.count("\n") == 1, err


def test_depth_draws_the_shapes_of_the_colour_image():
    width, height, seconds = 320, 240, 10.0
    objects = build_world(seconds, width, height)
    world = DepthWorld(DepthOptions(), width, height, objects, OCCLUDER, "camera")
    background = np.full((height, width, 3), 200, np.uint8)
    for t in (1.0, 3.0, 5.0, 7.0):
        positions = {o.id: (o.motion(t)[0] * width, o.motion(t)[1] * height) for o in objects}
        colour = render_frame(background, objects, positions).astype(int)
        depth = world.render(positions)
        for obj in objects:
            mask = depth == world.distance[obj.id]
            if mask.sum() < 20:
                continue  # out of view or hidden
            match = (np.abs(colour[mask] - COLORS[obj.color]).max(axis=1) <= 40).mean()
            assert match >= 0.9, (t, obj.id, match)


def test_3d_truth_follows_the_declared_lens(tmp_path):
    """With distortion, an object's 3D truth projects (OpenCV's forward model) back onto its pixel."""
    import cv2

    from molmo2_ros.offline.data.scenario import generate_scenario

    generate_scenario(tmp_path, seconds=2.0, fps=5.0, width=320, height=240,
                      depth=DepthOptions(distortion="rational_polynomial"))
    data = json.loads((tmp_path / "scenario.json").read_text())
    k = np.array(data["depth"]["k"]).reshape(3, 3)
    d = np.array(data["depth"]["d"])
    for obj in data["objects"]:
        truth = data["depth"]["objects"][obj["id"]]["track3d"]
        for (stamp, x, y, _), (stamp3, x3, y3, z3, _) in zip(obj["track"], truth):
            assert stamp == stamp3
            uv = cv2.projectPoints(np.array([[x3, y3, z3]]), np.zeros(3), np.zeros(3), k, d)[0].reshape(2)
            assert uv + 0.5 == pytest.approx((x, y), abs=2e-3)  # positions are stored rounded to 1e-3 px


def test_generate_writes_depth_and_camera_info_topics(tmp_path):
    from rosbags.highlevel import AnyReader

    from molmo2_ros.offline.data.scenario import generate_scenario

    bag = generate_scenario(tmp_path, seconds=2.0, fps=10.0, width=160, height=120,
                            depth=DepthOptions(encoding="32FC1", scale=0.5, offset_s=0.004))
    with AnyReader([Path(bag)]) as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert counts["/camera/aligned_depth_to_color/image_raw"] == ("sensor_msgs/msg/Image", 20)
        assert counts["/camera/camera_info"] == ("sensor_msgs/msg/CameraInfo", 20)
        conn = next(c for c in reader.connections if c.topic == "/camera/aligned_depth_to_color/image_raw")
        _, log_ns, raw = next(iter(reader.messages(connections=[conn])))
        msg = reader.deserialize(raw, conn.msgtype)
        assert (msg.width, msg.height, msg.encoding) == (80, 60, "32FC1")
        assert msg.header.stamp.nanosec % 10**8 == 4_000_000 and log_ns == 1_700_000_000_004_000_000
