"""Running things the way a robot workspace does: only the colcon install space sourced, no source tree.

`install_env(env)` sources <install>/setup.bash (the install space this test run uses, found through the ament
index) on top of the ROS prefix (the venv) in a clean shell and returns the resulting environment: PYTHONPATH then
holds only the install space, so `molmo2_ros` comes from there, not from this checkout. Processes started with it
should also run in a folder outside the checkout (cwd).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "launch_standin"
_DROP = ("PYTHONPATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "AMENT_CURRENT_PREFIX", "AMENT_PREFIX_PATH")


def install_dir() -> Path:
    """The colcon install space of this run (install/ or install-jazzy/)."""
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix("molmo2_ros")).parent


def install_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without any workspace, then `source <install>/setup.bash` with the venv as the ROS prefix."""
    base = {k: v for k, v in env.items() if k not in _DROP}
    base["AMENT_PREFIX_PATH"] = sys.prefix  # the venv is the ROS prefix of the PyPI wheels (/opt/ros/... on a robot)
    script = f'set +u; source "{install_dir()}/setup.bash"; "{sys.executable}" -c "import json, os; ' \
             f'print(json.dumps(dict(os.environ)))"'
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, text=True, check=True, timeout=60)
    sourced = json.loads(out.stdout.splitlines()[-1])
    repo, install = str(Path(__file__).resolve().parents[2]), str(install_dir())
    paths = sourced.get("PYTHONPATH", "").split(os.pathsep)
    assert paths and all(p.startswith(install) for p in paths if p.startswith(repo)), paths
    return sourced


def installed_executable(name: str = "molmo2_node") -> Path:
    return install_dir() / "molmo2_ros" / "lib" / "molmo2_ros" / name


def installed_share() -> Path:
    return install_dir() / "molmo2_ros" / "share" / "molmo2_ros"


_LAUNCH = """
import json, runpy, sys
sys.path.insert(0, {standin!r})
import launch
description = runpy.run_path({launch_file!r})["generate_launch_description"]()
print(json.dumps([{{"cmd": list(c), "env": c.env}} for c in launch.run(description, json.loads(sys.argv[1]))]))
"""


def launch_installed(arguments: dict[str, str], env: dict[str, str], cwd: Path) -> list[dict]:
    """The processes the installed launch file starts (through the launch stand-in), evaluated in `env`:
    [{"cmd": [...], "env": {additional variables}}]."""
    code = _LAUNCH.format(standin=str(STANDIN), launch_file=str(installed_share() / "launch" / "molmo2.launch.py"))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])
