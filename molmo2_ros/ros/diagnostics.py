"""/diagnostics of the molmo2 node: one status for the node (lifecycle, model, engine, scheduling) and one per camera
(input, windows, latency, drops), with levels that rise on real trouble:
- node ERROR: configure failed, or the history cannot write (disk full: the node keeps running, writing resumes
  when space returns); WARN: worker or inference errors in the last period.
- camera WARN: no frames for `no_frame_warn_s`; inference slower than the stride (windows are being skipped);
  frames dropped as bad in the last period.
Every value is copied under the lock of its owner; nothing here iterates a live dict of another thread.
"""

from __future__ import annotations

import sys
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


class StatusReporter:
    """Assembles the node's DiagnosticArray once a tick: one status for the node, one per camera. Runs on the
    node's timer thread; what it reads from other threads (window stats, counters, input stats, the engine's
    memory) is copied under their owners' locks. `stats[camera]` is written by the runtime's worker."""

    def __init__(self) -> None:
        self.rises = Rises()
        self.stats: dict[str, WindowStats] = {}

    def reset(self, cameras: list[str]) -> None:
        self.stats = {c: WindowStats() for c in cameras}

    def array(self, node, header) -> DiagnosticArray:
        """The statuses of `node` (a Molmo2Node: its lifecycle, model, runtime, inputs and parameters)."""
        runtime = node.runtime
        name = node.get_fully_qualified_name()
        model = str(node.get_parameter("model").value or node.get_parameter("engine_plugin").value)
        values: dict[str, object] = {
            "state": node.lifecycle_state, "model_state": node.model_state, "model": model,
            "cameras": ", ".join(c or "(unnamed)" for c in node.cameras), "model_loads": node.model_loads,
            "schedule": node.get_parameter("schedule").value, "active_goals": node.query_server.active_goals,
            "threads": threading.active_count(), "last_error": node.error, "visuals_skipped": node.visuals.skipped,
            "gil_switch_interval_ms": f"{sys.getswitchinterval() * 1e3:.3f}", **node.heap.values(),
            **node.shared_pages.values(),
        }
        level, message = OK, node.lifecycle_state if node.lifecycle_state != "active" else "ok"
        cameras = []
        if runtime is not None:
            pending, pinned = runtime.pending()
            values.update({"pending_clips": pending, "pending_mb": f"{pinned / 2**20:.1f}"})
            memory = runtime.engine.memory_report()
            values["device"] = memory.device
            if runtime.engine.capabilities.local_memory:  # a server's memory is not this machine's
                values.update({"gpu_memory_mb": f"{memory.allocated_mb:.1f}", "gpu_reserved_mb":
                               f"{memory.reserved_mb:.1f}", "cached_frames": memory.cached_frames,
                               "feature_cache_host_mb": f"{memory.host_cache_mb:.1f}"})
            values.update(runtime.engine.diagnostics())
            counts = runtime.counters.snapshot()
            values.update(sorted(counts.items()))
            if self.rises.rose("worker_errors", counts.get("worker_errors", 0)):
                level, message = WARN, f"worker error: {runtime.last_error}"
            cameras = [self._camera(node, name, camera, runtime) for camera in node.cameras]
        history = node.history
        if history is not None:
            health, note = history.health()
            values.update({"history": note, "history_path": str(history.config.path),
                           "history_mb": f"{history.stored_bytes() / 2**20:.1f}",
                           **dict(sorted(history.counters.snapshot().items()))})
            if health != "ok" and level == OK:
                level, message = ERROR, note
        if node.model_state == "failed":
            level, message = ERROR, f"configure failed: {node.error}"
        hardware = values.get("device") or model
        return DiagnosticArray(header=header, status=[status(node_status_name(name), str(hardware), level, message,
                                                             values), *cameras])

    def _camera(self, node, node_name: str, camera: str, runtime) -> DiagnosticStatus:
        stream = runtime.streams[camera]
        camera_input = node.inputs[camera]
        counts = {**camera_input.counters.snapshot(), **stream.counter_snapshot()}
        stats = self.stats[camera]
        values: dict[str, object] = {"camera": camera or "(unnamed)", **camera_input.stats(), **stats.values(),
                                     "standing_queries": len(stream.queries)}
        for key in ("frames_received", "windows_processed", "windows_skipped", "windows_dropped_budget",
                    "windows_stopped", "inference_errors"):
            values[key] = counts.get(key, 0)
        values["frames_dropped"] = sum(v for k, v in counts.items() if k.startswith(("bad_", "buffer_dropped_")))
        depth = node.depth_inputs[camera]
        if depth.enabled:
            values.update(depth.values())
        values.update(sorted((k, v) for k, v in counts.items() if k not in values))
        level, message = OK, "ok"
        stride = node.get_parameter("stride_s").value
        p50 = stats.latency_p50()
        key = f"{camera}:"
        if node.lifecycle_state != "active":
            message = node.lifecycle_state
        elif camera_input.silent:
            level, message = WARN, f"no frames on {camera_input.topic}"
        elif self.rises.rose(key + "bad", sum(v for k, v in counts.items() if k.startswith("bad_"))):
            level, message = WARN, "bad frames dropped (see the bad_* counts)"
        elif self.rises.rose(key + "errors", counts.get("inference_errors", 0)):
            level, message = WARN, f"inference failed: {runtime.last_error}"
        elif depth_warning := depth.warning():
            level, message = WARN, depth_warning
        elif p50 is not None and p50 > stride:
            level, message = WARN, (f"inference p50 {p50:.2f} s is slower than the stride ({stride:.2f} s): "
                                    "windows are skipped")
        return status(camera_status_name(node_name, camera), camera_input.topic, level, message, values)
