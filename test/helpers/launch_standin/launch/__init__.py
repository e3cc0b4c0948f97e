"""Stand-in for `launch` (see ../README.md): LaunchDescription, LaunchContext and run()."""

from __future__ import annotations

from . import actions, substitutions


class LaunchDescription:
    def __init__(self, entities: list | None = None) -> None:
        self.entities = list(entities or [])


class LaunchContext:
    def __init__(self, arguments: dict[str, str]) -> None:
        self.arguments = dict(arguments)
        self.launch_configurations: dict[str, str] = {}


def run(description: LaunchDescription, arguments: dict[str, str]) -> list[list[str]]:
    """Visit the description like `ros2 launch` does; returns the command lines of the processes to start."""
    context = LaunchContext(arguments)
    commands: list[list[str]] = []
    pending = list(description.entities)
    while pending:
        entity = pending.pop(0)
        produced = entity.visit(context)
        if isinstance(produced, list):
            pending[:0] = [e for e in produced if not isinstance(e, list)]
            commands += [e for e in produced if isinstance(e, list)]
    unknown = set(arguments) - set(context.launch_configurations)
    if unknown:
        raise ValueError(f"unknown launch arguments: {sorted(unknown)}")
    return commands


__all__ = ["LaunchContext", "LaunchDescription", "actions", "run", "substitutions"]
