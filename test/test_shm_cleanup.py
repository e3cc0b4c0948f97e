"""The /dev/shm clean-up of the test sessions (helpers/shm.py) removes what killed processes left and nothing a live
ROS process still uses: its Fast DDS port segments, their flock-ed `_el` lock files and their semaphores, even when
older than the age threshold (an earlier version deleted the unmapped ones and a node beside a test session stopped
receiving frames)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.shm import SHM, remove_stale_segments

# A process that keeps a publisher and a subscription on a topic and prints every message it receives.
TALKER = r"""
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("shm_talker")
pub = node.create_publisher(String, "shm_probe", 10)
node.create_subscription(String, "shm_probe", lambda m: print(m.data, flush=True), 10)
print("ready", flush=True)
n = 0
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.05)
    n += 1
    if n % 4 == 0:
        pub.publish(String(data=f"m{n}"))
"""


def _segments() -> set[str]:
    return {e.name for e in SHM.iterdir() if e.name.startswith(("fastdds_", "fastrtps_", "sem.fastdds_",
                                                                 "sem.fastrtps_", "fast_datasharing_"))}


def _read_until(proc: subprocess.Popen, prefix: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r} within {timeout_s} s")


def test_live_segments_survive_and_killed_ones_go(ros_env, tmp_path: Path) -> None:
    before = _segments()
    proc = subprocess.Popen([sys.executable, "-c", TALKER], env=ros_env, stdout=subprocess.PIPE, text=True)
    try:
        _read_until(proc, "ready", 30)
        _read_until(proc, "m", 20)  # messages flow through the shared-memory transport
        mine = _segments() - before
        assert any(n.endswith("_el") for n in mine), mine  # the port lock files exist
        old = time.time() - 3600  # older than the clean-up's age threshold
        for name in mine:
            os.utime(SHM / name, (old, old))
        remove_stale_segments()
        assert mine <= _segments(), f"removed live segments: {sorted(mine - _segments())}"
        for _ in range(3):  # still delivering after the clean-up
            _read_until(proc, "m", 10)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc.stdout.close()
    # the killed process's own segments (a port segment may be shared with another live participant on this host,
    # e.g. a node on another domain: it stays while that one uses it)
    leftovers = {n for n in (_segments() - before) & mine if "_port" not in n}
    assert leftovers
    for name in leftovers:
        os.utime(SHM / name, (old, old))
    remove_stale_segments()
    assert not (_segments() & leftovers), f"a killed process's segments stayed: {sorted(_segments() & leftovers)}"
