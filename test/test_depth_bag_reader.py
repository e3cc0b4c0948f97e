"""`molmo2-ros replay --depth` reads depth and CameraInfo through the colour reader's functions (offline/data/bags.py),
so an RGB-D bag as robots record it lifts the same 3D points as the bag it was made from: a Humble sqlite3 bag
without message definitions (also in a folder named *.bag), an mcap bag with a service-event topic whose schema is
.srv text, and a ROS 1 file (CameraInfo's K and D in capitals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.bag_variants import Topic, read_topics, write_humble_sqlite3, write_ros1, write_with_service_events
from molmo2_ros.cli import main

SRV = "string command\n---\nbool ok\n"


def replay_3d(bag: Path, out: Path) -> tuple[list[tuple[str, int, dict]], dict[str, int]]:
    """(query id, clip index, lifted 3D results) of every result line and the counters of an oracle replay with
    depth (scenario.json lies next to every bag)."""
    assert main(["replay", str(bag), "--out", str(out), "--oracle", str(bag.parent / "scenario.json"), "--depth",
                 "--quiet", "--no-gif"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["warnings"], summary["warnings"]  # CameraInfo found and usable: not 2D only
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [(r["query"]["id"], r["clip_index"], r["lifted"]) for r in lines], summary["counters"]


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory) -> Path:
    """A 4 s RGB-D scenario bag in sqlite3 storage, with lens distortion (scenario.json next to it)."""
    folder = tmp_path_factory.mktemp("rgbd")
    assert main(["generate", str(folder), "--seconds", "4", "--width", "160", "--height", "120", "--depth",
                 "--storage", "sqlite3", "--distortion", "plumb_bob"]) == 0
    return folder / "bag"


@pytest.fixture(scope="module")
def expected(rgbd, tmp_path_factory) -> tuple[list[tuple[str, int, dict]], dict[str, int]]:
    """The original bag's 3D results and counters, which every variant must reproduce; points were lifted."""
    lifted, counters = replay_3d(rgbd, tmp_path_factory.mktemp("original"))
    positions = [p["position"] for _, _, lift in lifted if lift for p in lift["points"]]
    assert counters["lift_ok"] > 0 and sum(p is not None for p in positions) >= 20, counters
    return lifted, counters


def _humble(folder: Path, colour: Topic, *more: Topic) -> Path:
    return write_humble_sqlite3(folder / "rgbd_humble", *colour, *more)


def _humble_dot_bag(folder: Path, colour: Topic, *more: Topic) -> Path:
    return write_humble_sqlite3(folder / "rgbd_2023.bag", *colour, *more)


def _service_events(folder: Path, colour: Topic, *more: Topic) -> Path:
    return write_with_service_events(folder / "with_events", *colour, *more, srv_text=SRV)


def _ros1(folder: Path, colour: Topic, *more: Topic) -> Path:
    return write_ros1(folder / "rgbd.bag", *colour, *more)


@pytest.mark.parametrize("write", [_humble, _humble_dot_bag, _service_events, _ros1])
def test_depth_replay_of_a_recorded_bag_lifts_what_the_original_does(write, rgbd, expected, tmp_path):
    depth, info, colour = read_topics(rgbd)
    assert [t[:2] for t in (depth, info, colour)] == [
        ("/camera/aligned_depth_to_color/image_raw", "sensor_msgs/msg/Image"),
        ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"), ("/camera/image_raw", "sensor_msgs/msg/Image")]
    variant = write(rgbd.parent, colour, depth, info)  # next to scenario.json
    assert replay_3d(variant, tmp_path / "replay") == expected
