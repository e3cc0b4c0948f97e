"""Fixtures shared by the tests.

ROS tests run through `make test` (scripts/with_ros), so the generated interfaces import from the colcon
install space and `molmo2_ros.core` from the source tree (see molmo2_ros/__init__.py).
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

import pytest

from molmo2_ros.ros.environment import conflicting_variables, fastdds_profile_env, localhost_discovery_env

REPO_ROOT = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"

# ROS_DOMAIN_ID values handed to tests: 1..101 (0 is everyone's default; above 101 the Fast DDS UDP port
# formula can run into the Linux ephemeral port range).
_DOMAIN_MIN, _DOMAIN_MAX = 1, 101
_DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "molmo2_ros_test_domains"
_domain_counter = 0


def pytest_configure(config: pytest.Config) -> None:
    # Importing any generated ROS message pulls in rosidl_parser -> lark, which imports the deprecated
    # sre_parse/sre_constants modules (upstream, harmless).
    config.addinivalue_line("filterwarnings", "ignore:module 'sre_(parse|constants)' is deprecated:DeprecationWarning")
    config.addinivalue_line("markers", "ros_free: the module imports nothing from ROS and starts no ROS process, so "
                                       "its result does not depend on the distribution; .ci/run runs these once, "
                                       "in the Kilted pass (both venvs install the same requirements/core.txt)")
    config.addinivalue_line("markers", "soak: long-running reliability test; skipped unless selected with -m soak "
                                       "(or `make soak` for the soak script itself)")


def pytest_sessionstart(session: pytest.Session) -> None:
    _remove_stale_shm("before the session")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _remove_stale_shm("after the session")


def _remove_stale_shm(when: str) -> None:
    """Segments of killed nodes and vLLM servers hold RAM until removed (test/helpers/shm.py)."""
    from helpers.shm import remove_stale_segments

    removed, freed = remove_stale_segments()
    if removed:
        print(f"\nconftest: removed {removed} stale shared-memory segments ({freed / 2**20:.0f} MiB) from /dev/shm "
              f"{when}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `soak` run only when the marker expression names them (pytest -m soak)."""
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long soak test: run with `pytest -m soak` (or `make soak`)")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


def _claim_domain_id() -> tuple[int, int]:
    """Pick a ROS_DOMAIN_ID that no other test on this host (in this or another pytest run) holds right now.

    Claiming = holding an exclusive flock on <tmp>/molmo2_ros_test_domains/<id>.lock for the test's duration;
    the kernel drops the lock when the process dies, so a crashed run leaves nothing stale behind. The search
    starts at a point derived from the pid and a per-process counter so parallel runs rarely even contend.
    Returns (domain_id, fd of the held lock).
    """
    global _domain_counter
    _domain_counter += 1
    _DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    span = _DOMAIN_MAX - _DOMAIN_MIN + 1
    start = zlib.crc32(f"{os.getpid()}:{_domain_counter}".encode()) % span
    for i in range(span):
        domain_id = _DOMAIN_MIN + (start + i) % span
        fd = os.open(_DOMAIN_LOCK_DIR / f"{domain_id}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        return domain_id, fd
    raise RuntimeError(f"all ROS_DOMAIN_IDs {_DOMAIN_MIN}..{_DOMAIN_MAX} are held by other tests")


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
    domain_id, lock_fd = _claim_domain_id()
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


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory):
    """One real tiny-model vLLM server (127.0.0.1) for test_vllm.py and test_vllm_node.py, which run one after the
    other at the end of the session, so it is up only while they run (startup is 35-95 s, paid once)."""
    from helpers.vllm_server import start_server

    server = start_server(tmp_path_factory.mktemp("vllm"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_scenario_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 24 s scenario bag (320x240, 10 fps) that test_vllm.py and test_vllm_node.py send to `vllm_server`."""
    from molmo2_ros.offline.scenario import generate_scenario

    return generate_scenario(tmp_path_factory.mktemp("scenario"), seconds=24.0, fps=10.0, width=320, height=240)


@pytest.fixture
def ros_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment for ROS processes that keeps all traffic on this host and away from other tests
    (ros_environment, for the test's duration)."""
    with ros_environment(tmp_path / "ros_home") as env:
        yield env


@pytest.fixture
def client(ros_env):
    """An in-process ROS client node (test/helpers/ros_client.py) in this test's ROS environment."""
    from helpers.ros_client import Client

    c = Client()
    yield c
    c.close()
