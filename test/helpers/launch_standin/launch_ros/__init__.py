"""Stand-in for `launch_ros` (see ../README.md)."""

from . import actions

__all__ = ["actions"]
