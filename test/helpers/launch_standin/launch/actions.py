"""Stand-in for `launch.actions`: DeclareLaunchArgument and OpaqueFunction."""

from __future__ import annotations


class DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: str = "", description: str = "") -> None:
        if not description:
            raise ValueError(f"launch argument '{name}' has no description")
        self.name, self.default_value, self.description = name, default_value, description

    def visit(self, context) -> None:
        context.launch_configurations[self.name] = context.arguments.get(self.name, self.default_value)


class OpaqueFunction:
    def __init__(self, *, function, args=None, kwargs=None) -> None:
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})

    def visit(self, context) -> list:
        return list(self.function(context, *self.args, **self.kwargs) or [])
