"""Stand-in for `launch_ros.actions.Node` and `LifecycleNode`: build the command line launch_ros would run."""

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


class Command(list):
    """A process's command line; `env` holds the variables launch would add to the inherited environment."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        super().__init__(argv)
        self.env = dict(env or {})


class Node:
    def __init__(self, *, package: str, executable: str, name: str = "", namespace: str = "",
                 parameters: list | None = None, remappings: list | None = None, ros_arguments: list | None = None,
                 arguments: list | None = None, additional_env: dict | None = None, output: str = "log",
                 emulate_tty: bool = False) -> None:
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters, self.remappings = list(parameters or []), list(remappings or [])
        self.arguments, self.ros_arguments = list(arguments or []), list(ros_arguments or [])
        self.additional_env = dict(additional_env or {})

    def visit(self, context) -> list:
        # The order of launch_ros' Node: executable, arguments, [--ros-args ros_arguments], --ros-args, name, ...
        cmd = [_executable(self.package, self.executable), *self.arguments]
        if self.ros_arguments:
            cmd += ["--ros-args", *self.ros_arguments]
        cmd.append("--ros-args")
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
        return [Command(cmd, self.additional_env)]


class LifecycleNode(Node):
    """launch_ros requires the name and the namespace of a lifecycle node (it talks to its services)."""

    def __init__(self, *, name: str, namespace: str, **kwargs) -> None:
        super().__init__(name=name, namespace=namespace, **kwargs)
