"""Fixtures shared by the tests.

ROS tests run through `make test` (scripts/with_ros), so the generated interfaces import from the colcon
install space and `molmo2_ros.core` from the source tree (see molmo2_ros/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.ros_env import ros_environment


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
    from molmo2_ros.offline.data.scenario import generate_scenario

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
