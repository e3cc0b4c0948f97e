"""Plain-Python install of molmo2_ros (the ROS-free core and the CLI), e.g. `pip install --no-deps -e .`.

The ROS 2 package (messages, node) is built by colcon from CMakeLists.txt/package.xml instead; this file is
only for using `molmo2_ros.core` without ROS. Requirements live in requirements/*.txt.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).resolve().parent
_VERSION = re.search(r'^__version__ = "([^"]+)"', (_HERE / "molmo2_ros" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="molmo2_ros",
    version=_VERSION,
    description="Video grounding for robots with Ai2's Molmo2 (ROS-free core)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["molmo2_ros*"]),
    # The released model configs read by the memory planner (molmo2_ros/core/released/) and the model presets.
    package_data={"molmo2_ros.core": ["released/*.json", "released/SOURCES.md"], "molmo2_ros": ["presets/*.yaml"]},
    entry_points={"console_scripts": ["molmo2-ros = molmo2_ros.cli:main"]},
)
