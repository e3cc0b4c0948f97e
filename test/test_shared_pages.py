"""SharedPageReleaser: the pages of Fast DDS shared-memory segments a process has read leave its RSS (RssShmem)
without any data lost, private mappings are never touched, and Fast DDS keeps delivering intact messages through a
released segment (the four-camera node's RSS drift, bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers.ros_env import ros_environment

from molmo2_ros.core.shared_pages import SEGMENT_PATH, SharedPageReleaser, segment_mappings


def test_only_shared_mappings_of_fast_dds_segments_are_selected(tmp_path: Path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f0000000000-7f0004000000 rw-s 00000000 00:1b 11 /dev/shm/fastdds_148e27baedc1e5c5\n"  # Fast DDS 3
        "7f0010000000-7f0014000000 rw-s 00000000 00:1b 12 /dev/shm/fastrtps_0a1b2c3d4e5f6071\n"  # Fast DDS 2
        "7f0020000000-7f002000d000 rw-s 00000000 00:1b 13 /dev/shm/fastdds_port7000\n"  # a port's ring
        "7f0030000000-7f0034000000 rw-p 00000000 00:1b 14 /dev/shm/fastdds_148e27baedc1e5c6\n"  # private: never
        "7f0040000000-7f0040001000 r--s 00000000 00:1b 3  /dev/shm/lttng-ust-wait-6\n"
        "7f0050000000-7f0050021000 rw-p 00000000 00:00 0 \n"  # anonymous
        "7f0060000000-7f0060100000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6\n")
    assert list(segment_mappings(str(maps))) == [(0x7f0000000000, 64 << 20), (0x7f0010000000, 64 << 20)]
    assert list(segment_mappings(str(tmp_path / "absent"))) == []


# In a fresh interpreter: a 64 MiB shared mapping of a /dev/shm file (a segment) fully read, a private mapping of a
# file with the same kind of name and written data, and private anonymous memory. Released with a pattern of its
# own (so no Fast DDS process on the host ever sees the file). Printed: RssShmem before and after, and whether every
# byte of every mapping is still what was written.
MAPPINGS = textwrap.dedent("""
    import json, mmap, os, re, sys
    from molmo2_ros.core.shared_pages import SharedPageReleaser, rss_shmem_mb

    folder = sys.argv[1]
    size = 64 << 20
    def mapped(name, flags):
        fd = os.open(f"{folder}/{name}", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, size)
        m = mmap.mmap(fd, size, flags=flags)
        os.close(fd)
        return m
    segment = mapped("molmo2test_0a1b", mmap.MAP_SHARED)
    private = mapped("molmo2test_0a1c", mmap.MAP_PRIVATE)
    anonymous = mmap.mmap(-1, 1 << 20)
    pattern = bytes(range(256)) * (size // 256)
    segment[:] = pattern
    private[:] = pattern[::-1]
    anonymous[:] = pattern[:1 << 20]
    before = rss_shmem_mb()
    releaser = SharedPageReleaser(re.compile(re.escape(folder) + r"/molmo2test_[0-9a-f]+"))
    released = releaser.release()
    after = rss_shmem_mb()
    intact = (segment[:] == pattern and private[:] == pattern[::-1] and anonymous[:] == pattern[:1 << 20])
    print(json.dumps({"before": before, "after": after, "released": released, "reread": rss_shmem_mb(),
                      "intact": intact, **releaser.values()}))
""")


def test_release_drops_read_segment_pages_from_rss_and_loses_nothing(tmp_path: Path):
    folder = Path("/dev/shm") / f"molmo2_ros_test_{tmp_path.name}"  # shmem, as Fast DDS's segments are
    folder.mkdir()
    try:
        run = subprocess.run([sys.executable, "-c", MAPPINGS, str(folder)], capture_output=True, text=True,
                             timeout=60)
    finally:
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    print(result)
    assert result["before"] >= 64, result  # the read segment (and the written private copy's source) counted
    assert result["before"] - result["after"] >= 63 and result["released"] >= 63, result  # the segment left RSS
    assert result["intact"], result  # no byte lost, in the segment or the private and anonymous mappings
    assert result["reread"] >= result["after"] + 63, result  # reading it again maps its pages again
    assert result["shm_release_calls"] == "1" and result["shm_mapped_mb"] == "64.0", result


# In a fresh interpreter with the project's Fast DDS profile (shared memory only): one node publishes 2 MB messages
# to another in the same process, so its segment's pages are counted in RSS. Then release, publish again, and check
# each message arrived complete.
FAST_DDS = textwrap.dedent("""
    import json, time
    import rclpy
    from std_msgs.msg import UInt8MultiArray
    from molmo2_ros.core.shared_pages import SharedPageReleaser, rss_shmem_mb

    rclpy.init()
    node = rclpy.create_node("shared_pages_test")
    received = []
    node.create_subscription(UInt8MultiArray, "blob", lambda m: received.append(bytes(m.data)), 50)
    publisher = node.create_publisher(UInt8MultiArray, "blob", 50)
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    def burst(first):
        for i in range(first, first + 20):
            publisher.publish(UInt8MultiArray(data=bytes([i]) * (2 << 20)))
            rclpy.spin_once(node, timeout_sec=0.2)
        end = time.monotonic() + 10
        while len(received) < first + 20 and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    burst(0)
    releaser = SharedPageReleaser()
    before = rss_shmem_mb()
    released = releaser.release()
    after = rss_shmem_mb()
    burst(20)
    intact = [m == bytes([i]) * (2 << 20) for i, m in enumerate(received)]
    print(json.dumps({"before": before, "after": after, "released": released, "received": len(received),
                      "intact": all(intact), **releaser.values()}))
    node.destroy_node()
    rclpy.shutdown()
""")


def test_fast_dds_delivers_through_a_released_segment(tmp_path: Path):
    with ros_environment(tmp_path / "ros") as env:
        run = subprocess.run([sys.executable, "-c", FAST_DDS], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(result)
    assert result["received"] == 40 and result["intact"], result  # before and after the release, byte for byte
    assert float(result["shm_mapped_mb"]) >= 64, result  # the project profile's 64 MiB segment was found
    assert result["before"] >= 8 and result["released"] >= 8, result  # pages of 2 MB messages were counted, then not


def test_default_pattern_names_both_fast_dds_generations():
    assert SEGMENT_PATH.fullmatch("/dev/shm/fastdds_148e27baedc1e5c5")
    assert SEGMENT_PATH.fullmatch("/dev/shm/fastrtps_148e27baedc1e5c5")
    assert not SEGMENT_PATH.fullmatch("/dev/shm/fastdds_port7000")
    assert not SEGMENT_PATH.fullmatch("/dev/shm/fastdds_148e27baedc1e5c5_el")
