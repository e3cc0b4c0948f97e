#!/usr/bin/env python3
"""Repair the CMake export files that the PyPI ROS 2 wheels ship with the wheel builder's paths.

The `ros-*` wheels install a ROS prefix into the virtual environment. Their
`share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake` files set the imported target's
INTERFACE_INCLUDE_DIRECTORIES to the build machine's Python and NumPy include folders, e.g.
`/opt/python/cp311-cp311/include/python3.11` and
`/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include`. Those folders do not exist
here, so CMake refuses to configure any package whose interfaces depend on such a package (std_msgs,
builtin_interfaces, ...). This script rewrites them to this interpreter's include folder and the installed
NumPy's include folder.

Run it with the virtual environment's interpreter. It is idempotent: a file that already points at the
right folders is left untouched. Exit status 0 on success; prints what it changed.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from pathlib import Path

# The builder's folders: /opt/python/cpXY-cpXY/include/pythonX.Y and
# /opt/python/cpXY-cpXY/lib/pythonX.Y/site-packages/numpy/(_core/)include
_PY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/include/python\d+\.\d+t?")
_NP_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/lib/python\d+\.\d+t?/site-packages/numpy(?:/_core|/core)?/include")


def _targets(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("share/*/cmake/*__rosidl_generator_pyExport.cmake"))


def fix(prefix: Path, py_include: str, np_include: str, check: bool = False) -> int:
    """Rewrite the files under `prefix`; return how many files needed (or, with check, would need) a change."""
    changed = 0
    for path in _targets(prefix):
        text = path.read_text()
        # NumPy first: its builder path also starts with /opt/python/cpXY-cpXY/.
        new = _NP_INCLUDE.sub(np_include, text)
        new = _PY_INCLUDE.sub(py_include, new)
        if new != text:
            changed += 1
            if check:
                print(f"needs fixing: {path}")
            else:
                path.write_text(new)
                print(f"fixed: {path}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default=sys.prefix, help="ROS prefix = the virtual environment (default: this interpreter's)")
    parser.add_argument("--check", action="store_true", help="only report files that still need fixing (exit 1 if any)")
    args = parser.parse_args(argv)

    prefix = Path(args.prefix).resolve()
    py_include = sysconfig.get_paths()["include"]
    if not Path(py_include, "Python.h").is_file():
        print(f"warning: no Python.h in {py_include}; install the Python development headers", file=sys.stderr)
    try:
        import numpy
    except ImportError:
        print("error: numpy is not installed in this interpreter", file=sys.stderr)
        return 2
    np_include = numpy.get_include()

    files = _targets(prefix)
    if not files:
        print(f"error: no *__rosidl_generator_pyExport.cmake under {prefix}/share: are the ros-* wheels installed?", file=sys.stderr)
        return 2
    n = fix(prefix, py_include, np_include, check=args.check)
    if args.check:
        return 1 if n else 0
    print(f"fix_ros_wheels: {n} of {len(files)} export files rewritten (python include {py_include}, numpy include {np_include})")
    # Anything still pointing at the builder's folders means a path form this script does not know.
    leftovers = [str(p) for p in files if "/opt/python/" in p.read_text()]
    if leftovers:
        print("error: builder paths remain in:\n  " + "\n  ".join(leftovers), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
