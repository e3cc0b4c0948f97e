"""The ROS environment of every ROS process the tests, benches and the soak run start: discovery on this host, a
ROS_DOMAIN_ID of its own (claimed with host-wide locks, so concurrent test runs and benches never share one),
ROS_HOME in its own folder, Fast DDS over shared memory with the project's profile. A plain module (not pytest's
conftest), so the benches and scripts/soak.py use it too. No rclpy import: it runs before any ROS process starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from molmo2_ros.ros.environment import conflicting_variables, fastdds_profile_env, localhost_discovery_env

FASTDDS_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml"
# ROS_DOMAIN_ID values handed out: 1..101 (0 is everyone's default; above 101 the Fast DDS UDP port
# formula can run into the Linux ephemeral port range).
DOMAIN_MIN, DOMAIN_MAX = 1, 101
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "molmo2_ros_test_domains"
_domain_counter = 0


def claim_domain_id() -> tuple[int, int]:
    """Pick a ROS_DOMAIN_ID that no other test, bench or soak on this host holds right now.

    Claiming = holding an exclusive flock on <tmp>/molmo2_ros_test_domains/<id>.lock for the test's duration;
    the kernel drops the lock when the process dies, so a crashed run leaves nothing stale behind. The search
    starts at a point derived from the pid and a per-process counter so parallel runs rarely even contend.
    Returns (domain_id, fd of the held lock).
    """
    global _domain_counter
    _domain_counter += 1
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    span = DOMAIN_MAX - DOMAIN_MIN + 1
    start = zlib.crc32(f"{os.getpid()}:{_domain_counter}".encode()) % span
    for i in range(span):
        domain_id = DOMAIN_MIN + (start + i) % span
        fd = os.open(DOMAIN_LOCK_DIR / f"{domain_id}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        return domain_id, fd
    raise RuntimeError(f"all ROS_DOMAIN_IDs {DOMAIN_MIN}..{DOMAIN_MAX} are held by other tests or benches")


def ros_overrides(domain_id: int, ros_home: Path) -> dict[str, str]:
    """Environment of every ROS process of the tests, benchmarks and soak: discovery on this host, its own domain id
    and ROS_HOME, Fast DDS over shared memory with the project's profile (config/fastdds_shm.xml, honoured in full).
    The variable names follow $ROS_DISTRO (molmo2_ros/ros/environment.py); remove `conflicting_variables()` from an
    inherited environment first."""
    return {
        **localhost_discovery_env(),
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_HOME": str(ros_home),
        "ROS_LOG_DIR": str(ros_home / "log"),
        **fastdds_profile_env(FASTDDS_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


@contextlib.contextmanager
def ros_environment(ros_home: Path) -> Iterator[dict[str, str]]:
    """Claim a ROS_DOMAIN_ID and set this host's ROS variables (ros_overrides) in os.environ, without the variables
    that conflict with them (e.g. ROS_LOCALHOST_ONLY after Humble: deprecated in Jazzy and ignored by Kilted, never
    let it suggest otherwise); yields the environment for subprocess.Popen(env=...), so in-process rclpy.init()
    and child processes use the same. Restores os.environ and releases the domain afterwards."""
    domain_id, lock_fd = claim_domain_id()
    ros_home.mkdir(parents=True, exist_ok=True)
    overrides = ros_overrides(domain_id, ros_home)
    removed = [key for key in conflicting_variables() if key not in overrides]
    saved = {key: os.environ.get(key) for key in [*overrides, *removed]}
    for key in removed:
        os.environ.pop(key, None)
    os.environ.update(overrides)
    try:
        yield dict(os.environ)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.close(lock_fd)
