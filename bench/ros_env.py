"""The ROS environment of the benchmarks and the soak script: localhost discovery, a ROS_DOMAIN_ID of their own,
ROS_HOME in a folder of theirs, Fast DDS over shared memory with the project's profile.

The same as test/conftest.py's `ros_environment` (which the benches must not import: it is pytest's), claiming
domain ids from the same host-wide lock folder and range, so a bench never shares a domain with a test run on the
same host. No rclpy import: it runs before any ROS process starts.
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

FASTDDS_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"
# ROS_DOMAIN_ID values: 1..101 (0 is everyone's default; above 101 the Fast DDS UDP port formula can run into the
# Linux ephemeral port range). The lock folder is the tests' (test/conftest.py).
DOMAIN_MIN, DOMAIN_MAX = 1, 101
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "molmo2_ros_test_domains"


def claim_domain_id() -> tuple[int, int]:
    """A ROS_DOMAIN_ID that no test or bench on this host holds now, and the fd of its held lock (an exclusive
    flock on <lock folder>/<id>.lock; the kernel drops it when the process dies)."""
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    span = DOMAIN_MAX - DOMAIN_MIN + 1
    start = zlib.crc32(str(os.getpid()).encode()) % span
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
    raise RuntimeError(f"all ROS_DOMAIN_IDs {DOMAIN_MIN}..{DOMAIN_MAX} are held by tests or benches")


@contextlib.contextmanager
def ros_environment(ros_home: Path) -> Iterator[dict[str, str]]:
    """Claim a domain id and set this host's ROS variables in os.environ (without those that conflict with them
    under $ROS_DISTRO); yields the environment for subprocess.Popen(env=...), so in-process rclpy.init() and child
    processes use the same. Restores os.environ and releases the domain afterwards."""
    domain_id, lock_fd = claim_domain_id()
    ros_home.mkdir(parents=True, exist_ok=True)
    overrides = {**localhost_discovery_env(), "ROS_DOMAIN_ID": str(domain_id), "ROS_HOME": str(ros_home),
                 "ROS_LOG_DIR": str(ros_home / "log"), **fastdds_profile_env(FASTDDS_PROFILE),
                 "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
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
