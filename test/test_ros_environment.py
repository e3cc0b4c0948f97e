"""Environment variable names per ROS 2 distribution (molmo2_ros/ros/environment.py) and what the tests, benches and
soak hand to their ROS processes (helpers/ros_env.ros_overrides). ROS-free: the names are decided before a process
starts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.ros_env import FASTDDS_PROFILE, ros_overrides
from molmo2_ros.ros.environment import (allocator_env, conflicting_variables, fastdds_profile_env,
                                        localhost_discovery_env, ros_distro, uses_fastdds2)

PROFILE = "/x/fastdds_shm.xml"


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_fastdds_2_distros_get_the_old_profile_variable_too(distro):
    env = fastdds_profile_env(PROFILE, distro)
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE": PROFILE, "FASTDDS_DEFAULT_PROFILES_FILE": PROFILE,
                   "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in conflicting_variables(distro)


@pytest.mark.parametrize("distro", ["kilted", "rolling", ""])
def test_fastdds_3_distros_get_only_the_new_name_and_drop_the_old_one(distro):
    # Fast DDS 3 warns once per participant when FASTRTPS_DEFAULT_PROFILES_FILE is set
    assert fastdds_profile_env(PROFILE, distro) == {"FASTDDS_DEFAULT_PROFILES_FILE": PROFILE,
                                                    "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in conflicting_variables(distro)


def test_localhost_discovery_by_distro():
    # Humble's rcl knows only ROS_LOCALHOST_ONLY; Iron and newer use the discovery range (Kilted ignores the old one)
    assert localhost_discovery_env("humble") == {"ROS_LOCALHOST_ONLY": "1"}
    assert "ROS_LOCALHOST_ONLY" not in conflicting_variables("humble")
    for distro in ("jazzy", "kilted", ""):
        assert localhost_discovery_env(distro) == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        assert "ROS_LOCALHOST_ONLY" in conflicting_variables(distro)


def test_distro_comes_from_ros_distro(monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", " Jazzy\n")
    assert ros_distro() == "jazzy"
    monkeypatch.delenv("ROS_DISTRO")
    assert ros_distro() == ""


@pytest.mark.parametrize("distro", ["humble", "jazzy", "kilted"])
def test_test_processes_get_the_distros_names(monkeypatch, tmp_path: Path, distro):
    monkeypatch.setenv("ROS_DISTRO", distro)
    env = ros_overrides(7, tmp_path)
    assert env["ROS_DOMAIN_ID"] == "7" and env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(FASTDDS_PROFILE)
    assert FASTDDS_PROFILE.is_file()
    assert ("FASTRTPS_DEFAULT_PROFILES_FILE" in env) == (distro != "kilted")
    assert ("ROS_LOCALHOST_ONLY" in env) == (distro == "humble")
    assert ("ROS_AUTOMATIC_DISCOVERY_RANGE" in env) == (distro != "humble")


def test_this_run_knows_its_distro(ros_env):
    """`make test` (scripts/with_ros) exports ROS_DISTRO, and the Fast DDS generation the ROS middleware loads in
    this process is the one the names above are chosen for."""
    import importlib.util

    if importlib.util.find_spec("rclpy") is None:
        pytest.skip("no rclpy in this environment (ROS-free run of the core tests)")
    import rclpy

    distro = ros_distro()
    assert distro in ("kilted", "jazzy"), f"ROS_DISTRO={distro!r}: run the tests through scripts/with_ros"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("fastdds_generation_probe", context=context)
        maps = Path("/proc/self/maps").read_text()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    loaded = {2: "libfastrtps.so.2" in maps, 3: "libfastdds.so.3" in maps}
    assert loaded == {2: uses_fastdds2(distro), 3: not uses_fastdds2(distro)}, loaded


def test_ros_free_modules_import_nothing_from_ros():
    """The modules marked `ros_free` (run once in CI, not per distribution) load no ROS package when imported
    and do not start ROS processes."""
    test_dir = Path(__file__).parent
    marked = sorted(p.stem for p in test_dir.glob("test_*.py")
                    if re.search(r"^pytestmark = .*pytest\.mark\.ros_free", p.read_text(), re.M))
    assert len(marked) >= 10, marked
    code = ("import sys; sys.path[:0] = [sys.argv[1]]; import importlib\n"
            "for m in sys.argv[2:]: importlib.import_module(m)\n"
            "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in ('rclpy', 'rosidl_parser', "
            "'sensor_msgs', 'std_msgs', 'builtin_interfaces', 'rcl_interfaces') or n.startswith(('molmo2_ros.ros', "
            "'molmo2_ros.msg', 'molmo2_ros.srv', 'molmo2_ros.action')))))")
    out = subprocess.run([sys.executable, "-c", code, str(test_dir), *marked], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # molmo2_ros.ros.environment (environment variables only, no ROS import) comes in through conftest
    assert set(out.stdout.split()) <= {"molmo2_ros.ros", "molmo2_ros.ros.environment"}, out.stdout
    for name in marked:
        source = (test_dir / f"{name}.py").read_text()
        assert not any(s in source for s in ("with_ros", "NodeProcess", "ros_env", "ros_client")), name


def test_allocator_env_preloads_the_library_found():
    found = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
             "tcmalloc_minimal": "libtcmalloc_minimal.so.4"}.get
    assert allocator_env("jemalloc", {}, found) == {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}
    # ahead of what the environment preloads already (the allocator must come first to serve malloc)
    assert allocator_env("jemalloc", {"LD_PRELOAD": "/opt/x.so"}, found) == {
        "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:/opt/x.so"}
    assert allocator_env("tcmalloc", {}, found) == {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}
    # an allocator the environment preloads already gives way to the one named (both would claim malloc)
    assert allocator_env("tcmalloc", {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2:/opt/x.so"}, found) == {
        "LD_PRELOAD": "libtcmalloc_minimal.so.4:/opt/x.so"}
    assert allocator_env("", {}, found) == allocator_env("glibc", {}, found) == {}


def test_allocator_env_says_what_to_install_or_choose():
    with pytest.raises(ValueError, match=r"libjemalloc not found; install it \(sudo apt install libjemalloc2\)"):
        allocator_env("jemalloc", {}, lambda name: None)
    with pytest.raises(ValueError, match=r"libtcmalloc_minimal not found; install it \(sudo apt install "
                                         r"libgoogle-perftools-dev\)"):
        allocator_env("tcmalloc", {}, lambda name: None)
    with pytest.raises(ValueError, match="use auto, glibc, jemalloc or tcmalloc"):
        allocator_env("mimalloc", {})


def test_allocator_auto_is_tcmalloc_where_installed():
    """The launch's default: tcmalloc when its library is found, glibc's malloc (nothing preloaded) when not, and
    nothing added when the inherited LD_PRELOAD already names an allocator."""
    found = {"tcmalloc_minimal": "libtcmalloc_minimal.so.4"}.get
    assert allocator_env("auto", {}, found) == {"LD_PRELOAD": "libtcmalloc_minimal.so.4"}
    assert allocator_env("auto", {"LD_PRELOAD": "/opt/x.so"}, found) == {
        "LD_PRELOAD": "libtcmalloc_minimal.so.4:/opt/x.so"}
    assert allocator_env("auto", {}, lambda name: None) == {}
    assert allocator_env("auto", {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, found) == {}
