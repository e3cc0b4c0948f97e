"""Process environment variables whose names differ between ROS 2 distributions.

No rclpy import: the launch file, the tests, the benchmarks and the soak script use it before any ROS process
starts. The distribution is `$ROS_DISTRO` (every ROS setup script exports it; scripts/with_ros does too).

- Fast DDS 2.x (Humble, Iron, Jazzy) reads an XML profile from FASTRTPS_DEFAULT_PROFILES_FILE only; Fast DDS 3.x
  (Kilted and newer) reads FASTDDS_DEFAULT_PROFILES_FILE and warns once per participant when the old name is set.
- Discovery on this host only: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST from Iron on; Humble's rcl knows only
  ROS_LOCALHOST_ONLY=1, which Jazzy deprecates and Kilted ignores.
- Another malloc for the node's process: LD_PRELOAD of the allocator's shared library (README "Reliability").
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from molmo2_ros.core.heap import PRELOADED_ALLOCATORS

FASTDDS2_DISTROS = frozenset({"foxy", "galactic", "humble", "iron", "jazzy"})
LOCALHOST_ONLY_DISTROS = frozenset({"foxy", "galactic", "humble"})
FASTDDS3_PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS2_PROFILE_VAR = "FASTRTPS_DEFAULT_PROFILES_FILE"
# allocator name -> (library name for ctypes.util.find_library, the Debian/Ubuntu package that ships it: for
# tcmalloc the one rosdep's key `gperftools` installs, named alike on Ubuntu 22.04 and 24.04)
ALLOCATORS = {"jemalloc": ("jemalloc", "libjemalloc2"), "tcmalloc": ("tcmalloc_minimal", "libgoogle-perftools-dev")}
# The launch's default: tcmalloc where installed (package.xml depends on it) and the inherited LD_PRELOAD names no
# allocator; otherwise nothing preloaded: glibc's malloc or the inherited allocator (README "Reliability").
AUTO_ALLOCATOR = "auto"


def ros_distro(env: Mapping[str, str] | None = None) -> str:
    """The distribution's lower-case name from ROS_DISTRO ("" when unset: treated as the newest)."""
    return (os.environ if env is None else env).get("ROS_DISTRO", "").strip().lower()


def uses_fastdds2(distro: str | None = None) -> bool:
    return (ros_distro() if distro is None else distro) in FASTDDS2_DISTROS


def fastdds_profile_env(profile: str | Path, distro: str | None = None) -> dict[str, str]:
    """Variables that make Fast DDS of `distro` (default: $ROS_DISTRO) load `profile` as its default profiles,
    with its QoS settings honoured in full (RMW_FASTRTPS_USE_QOS_FROM_XML=1; rmw_fastrtps otherwise overrides
    the history memory policy). Both names on Fast DDS 2.x distributions (2.x reads the old one), only the new
    name otherwise (3.x warns about the old one)."""
    env = {FASTDDS3_PROFILE_VAR: str(profile), "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}
    if uses_fastdds2(distro):
        env[FASTDDS2_PROFILE_VAR] = str(profile)
    return env


def localhost_discovery_env(distro: str | None = None) -> dict[str, str]:
    """Variables that keep ROS discovery on this host for `distro` (default: $ROS_DISTRO)."""
    distro = ros_distro() if distro is None else distro
    if distro in LOCALHOST_ONLY_DISTROS:
        return {"ROS_LOCALHOST_ONLY": "1"}
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def conflicting_variables(distro: str | None = None) -> tuple[str, ...]:
    """Variables to remove from an inherited environment before applying the two functions above: the
    deprecated or ignored localhost switch, and on Fast DDS 3.x the old profile name (it only warns there)."""
    distro = ros_distro() if distro is None else distro
    stale = [] if distro in LOCALHOST_ONLY_DISTROS else ["ROS_LOCALHOST_ONLY"]
    if not uses_fastdds2(distro):
        stale.append(FASTDDS2_PROFILE_VAR)
    return tuple(stale)


def allocator_env(name: str, inherited: Mapping[str, str] | None = None,
                  find: Callable[[str], str | None] = ctypes.util.find_library) -> dict[str, str]:
    """LD_PRELOAD that gives a process `name`'s malloc, ahead of the other libraries the inherited LD_PRELOAD
    (default: os.environ's) names (an allocator named there is dropped: two would each claim malloc). "" or
    "glibc": none, {}; "auto": tcmalloc where its library is installed and the inherited LD_PRELOAD names no
    allocator, else none. ValueError naming the package to install when a named allocator's library is not found,
    or the choices for an unknown name."""
    if name in ("", "glibc"):
        return {}
    entries = [e for e in (os.environ if inherited is None else inherited).get("LD_PRELOAD", "").split(":") if e]
    others = [entry for entry in entries if not any(lib in entry for lib in PRELOADED_ALLOCATORS)]
    if name == AUTO_ALLOCATOR:  # an allocator preloaded already is kept
        path = find(ALLOCATORS["tcmalloc"][0]) if len(others) == len(entries) else None
        if not path:
            return {}
    elif name not in ALLOCATORS:
        choices = [AUTO_ALLOCATOR, "glibc", *ALLOCATORS]
        raise ValueError(f"allocator {name!r}: use {', '.join(choices[:-1])} or {choices[-1]} (or leave it empty "
                         "for glibc)")
    else:
        library, package = ALLOCATORS[name]
        path = find(library)
        if not path:
            raise ValueError(f"allocator {name}: lib{library} not found; install it (sudo apt install {package}) "
                             f"or use allocator:={AUTO_ALLOCATOR} or glibc")
    return {"LD_PRELOAD": ":".join([path, *others])}
