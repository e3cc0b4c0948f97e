"""Stand-in for `launch.substitutions`: LaunchConfiguration."""

from __future__ import annotations


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context) -> str:
        return context.launch_configurations[self.name]
