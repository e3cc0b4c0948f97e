"""RGB-D scenario bags (`molmo2-ros generate --depth`) -> replay with depth -> 3D evaluation: the oracle's 3D error
stays under 1 cm (median) and 2 cm (p90) with and without lens distortion, for both depth encodings and a depth
image at half the colour resolution; the synthetic depth draws the same shapes as the colour image; bad input
gives one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from molmo2_ros.cli import main
from molmo2_ros.offline.depth_world import DepthOptions, DepthWorld
from molmo2_ros.offline.scenario import COLORS, OCCLUDER, build_world, render_frame


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

    from molmo2_ros.offline.scenario import generate_scenario

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

    from molmo2_ros.offline.scenario import generate_scenario

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
