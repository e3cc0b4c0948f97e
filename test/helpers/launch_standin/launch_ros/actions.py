"""Stand-in for `launch_ros.actions.Node`: builds the command line launch_ros would run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml


def _executable(package: str, executable: str) -> str:
    """<prefix>/lib/<package>/<executable> of the first prefix on AMENT_PREFIX_PATH that has it."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "lib" / package / executable
        if prefix and path.is_file():
            return str(path)
    raise FileNotFoundError(f"executable '{executable}' of package '{package}' not found on AMENT_PREFIX_PATH")


class Node:
    def __init__(self, *, package: str, executable: str, name: str = "", namespace: str = "",
                 parameters: list | None = None, remappings: list | None = None, output: str = "log",
                 emulate_tty: bool = False, arguments: list | None = None) -> None:
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters, self.remappings = list(parameters or []), list(remappings or [])
        self.arguments = list(arguments or [])

    def visit(self, context) -> list:
        cmd = [_executable(self.package, self.executable), *self.arguments, "--ros-args"]
        if self.name:
            cmd += ["-r", f"__node:={self.name}"]
        if self.namespace:
            ns = self.namespace if self.namespace.startswith("/") else f"/{self.namespace}"
            cmd += ["-r", f"__ns:={ns}"]
        for params in self.parameters:
            if isinstance(params, dict):
                fd, path = tempfile.mkstemp(prefix="launch_params_", suffix=".yaml")
                with os.fdopen(fd, "w") as f:
                    yaml.safe_dump({"/**": {"ros__parameters": params}}, f)
                params = path
            cmd += ["--params-file", str(params)]
        for src, dst in self.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        return [cmd]
