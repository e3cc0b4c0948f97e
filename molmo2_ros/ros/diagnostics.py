"""/diagnostics of the molmo2 node: one status for the node (lifecycle, model, engine, scheduling) and one per camera
(input, windows, latency, drops), with levels that rise on real trouble:
- node ERROR: configure failed; WARN: worker or inference errors in the last period.
- camera WARN: no frames for `no_frame_warn_s`; inference slower than the stride (windows are being skipped);
  frames dropped as bad in the last period.
Every value is copied under the lock of its owner; nothing here iterates a live dict of another thread.
"""

from __future__ import annotations

import threading
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class WindowStats:
    """Latency of the engine call and age of the outputs (publish time - newest frame stamp) of one camera's
    recent windows. Written by the runtime's worker, read by the diagnostics timer."""

    def __init__(self, maxlen: int = 50) -> None:
        self._lock = threading.Lock()
        self._latency_s: deque[float] = deque(maxlen=maxlen)
        self._age_s: deque[float] = deque(maxlen=maxlen)

    def add(self, latency_s: float, age_s: float) -> None:
        with self._lock:
            self._latency_s.append(latency_s)
            self._age_s.append(age_s)

    def values(self) -> dict[str, str]:
        with self._lock:
            lat, age = sorted(self._latency_s), list(self._age_s)
        return {"inference_latency_s": f"{lat[-1]:.3f}" if lat else "",
                "inference_latency_p50_s": f"{lat[len(lat) // 2]:.3f}" if lat else "",
                "output_age_s": f"{age[-1]:.3f}" if age else "",
                "output_age_max_s": f"{max(age):.3f}" if age else ""}

    def latency_p50(self) -> float | None:
        with self._lock:
            lat = sorted(self._latency_s)
        return lat[len(lat) // 2] if lat else None


class Rises:
    """Which counters rose since the previous period (levels react to new trouble, not to old totals)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def rose(self, key: str, value: int) -> bool:
        previous = self._last.get(key, value)
        self._last[key] = value
        return value > previous


def node_status_name(node: str) -> str:
    """Name of a node's own status (`node`: its fully qualified name)."""
    return f"molmo2_ros: {node}"


def camera_status_name(node: str, camera: str) -> str:
    """Name of the status of one camera of a node ("" = the unnamed camera of a single-camera node)."""
    return f"molmo2_ros: {node} camera {camera}".rstrip()


def merged_values(msg: DiagnosticArray, node: str, camera: str = "") -> dict[str, str] | None:
    """The node's status values with one camera's values on top (what a single-camera client wants), plus
    `_level`/`_message` of the worse of the two; None when the message holds no status of that node."""
    by_name = {s.name: s for s in msg.status}
    node_status = by_name.get(node_status_name(node))
    if node_status is None:
        return None
    values = {kv.key: kv.value for kv in node_status.values}
    level, message = _level(node_status.level), node_status.message
    cam = by_name.get(camera_status_name(node, camera))
    if cam is not None:
        values.update({kv.key: kv.value for kv in cam.values})
        if _level(cam.level) > level:
            level, message = _level(cam.level), cam.message
    values["_level"], values["_message"] = level, message
    return values


def _level(level) -> int:
    return int.from_bytes(level, "little") if isinstance(level, bytes) else int(level)


def status(name: str, hardware_id: str, level: int, message: str, values: dict[str, object]) -> DiagnosticStatus:
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def array(stamp_header, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    return DiagnosticArray(header=stamp_header, status=statuses)
