"""`molmo2-ros play` publishes bags from other distributions: a Humble sqlite3 bag without message definitions in a
folder named `*.bag`, and a bag whose service-event topic has a schema rosbags cannot parse (skipped with a note)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from helpers.bag_variants import SERVICE_EVENT_TOPIC, read_camera, write_humble_sqlite3, write_with_service_events
from helpers.ros_client import Client, process_env, wait_until
from molmo2_ros.offline.data.scenario import generate_scenario

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "molmo2-ros"
TOPIC = "/camera/image_raw"



@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory) -> tuple[str, str, list]:
    bag = generate_scenario(tmp_path_factory.mktemp("s"), seconds=2.0, fps=10.0, width=64, height=48)
    return read_camera(bag)


def play(client: Client, env: dict, bag: Path) -> subprocess.CompletedProcess:
    client.clear()
    client.subscribe(Image, TOPIC, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    out = subprocess.run([str(CLI), "play", str(bag), "--rate", "4", "--no-clock"], env=process_env(env),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_play_humble_bag_in_a_dot_bag_folder(ros_env, client, camera_bag, tmp_path):
    bag = write_humble_sqlite3(tmp_path / "humble_camera.bag", *camera_bag)
    out = play(client, ros_env, bag)
    assert "published 20 messages" in out.stdout
    wait_until(lambda: len(client.got(TOPIC)) == 20, 10.0, what="20 images")
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in client.got(TOPIC)]
    assert stamps == [log_ns for log_ns, _ in camera_bag[2]]


def test_play_skips_service_events_with_a_note(ros_env, client, camera_bag, tmp_path):
    srv = (REPO / "srv" / "ManageQueries.srv").read_text()
    bag = write_with_service_events(tmp_path / "with_events", *camera_bag, srv_text=srv)
    out = play(client, ros_env, bag)
    assert "published 20 messages" in out.stdout
    assert f"note: {SERVICE_EVENT_TOPIC} [molmo2_ros/srv/ManageQueries_Event]: service event, not replayed" \
        in out.stderr
    wait_until(lambda: len(client.got(TOPIC)) == 20, 10.0, what="20 images")
