#!/usr/bin/env python3
"""Soak test: a 30 Hz 640x480 camera process -> the live molmo2 node (tiny random Molmo2 on the CPU) for SOAK_S
seconds (default 1800), measuring the node process and its /diagnostics.

    SOAK_S=1800 scripts/with_ros .venv/bin/python scripts/soak.py      (or: make soak)

Environment: SOAK_S (length in s), SOAK_WARMUP_S (default min(120, SOAK_S / 4): RSS and threads are sampled
this long after the first processed window and again at the end; RSS samples once a second from then on give
the least-squares slope, as in scripts/soak_multicam.py), SOAK_GROWTH (allowed relative growth, 0.05),
MOLMO2_MEMSTATS_S (default 60, 0 off: the node's memory account, summarized as `memstats`), SOAK_PARAMS (extra
node parameters, space-separated NAME:=VALUE, e.g. "history.enabled:=true"), SOAK_ALLOCATOR (the malloc of the
node and camera processes, as the launch argument `allocator` gives the node: default auto, i.e. tcmalloc where
installed; glibc, jemalloc, tcmalloc).
ROS traffic stays on this host (localhost discovery and the SHM Fast DDS profile under the variable names of
$ROS_DISTRO, as in the tests) on a ROS_DOMAIN_ID claimed like the tests do.

Prints progress on stderr and, as its LAST stdout line, one JSON object: rss_mb_start, rss_mb_end,
threads_start, threads_end, frames_in, frames_dropped_by_reason, windows_processed, windows_skipped, crashes,
rss_mb_slope_per_hour_after_warmup (plus frames_sent, clips, inference_errors, worker_errors, seconds). Exit
status 1 when RSS or thread count grew by more than SOAK_GROWTH, the node crashed, or a clip is unaccounted for
(every clip the buffer emitted must be processed, counted as skipped, or counted as an inference error); else 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # test/helpers (not conftest: pytest's)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402

from helpers.ros_env import ros_environment  # noqa: E402
from helpers.ros_client import SpunNode, terminate  # noqa: E402
from scripts.tiny_model import TinySpec, build_tiny_model  # noqa: E402
from molmo2_ros.ros.diagnostics import merged_values  # noqa: E402
from molmo2_ros.ros.environment import AUTO_ALLOCATOR, allocator_env  # noqa: E402
from scripts.soak_stats import ProcSampler, memstats_slopes, proc_stats  # noqa: E402

NODE_NAME = f"molmo2_soak_{os.getpid()}"
TOPIC = f"/soak_{os.getpid()}/image"
RATE_HZ, WIDTH, HEIGHT = 30.0, 640, 480


def log(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


class Diagnostics(SpunNode):
    """Newest /diagnostics values of the node under test."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.updated = 0.0
        self._lock = threading.Lock()
        super().__init__("molmo2_soak_monitor")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, QoSProfile(depth=10))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        values = merged_values(msg, f"/{NODE_NAME}")
        if values is not None:
            with self._lock:
                self.values = values
                self.updated = time.monotonic()

    def get(self) -> dict[str, str]:
        with self._lock:
            return dict(self.values)

    def fresh(self, after: float, timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.updated > after:
                    return dict(self.values)
            time.sleep(0.1)
        return self.get()


def as_int(values: dict, key: str) -> int:
    try:
        return int(values.get(key, 0))
    except ValueError:
        return 0


def main() -> int:
    seconds = float(os.environ.get("SOAK_S", "1800"))
    warmup = float(os.environ.get("SOAK_WARMUP_S", str(min(120.0, seconds / 4))))
    growth = float(os.environ.get("SOAK_GROWTH", "0.05"))
    tmp = Path(tempfile.mkdtemp(prefix="molmo2_soak_"))
    with ros_environment(tmp / "ros_home") as ros:
        env = {"MOLMO2_MEMSTATS_S": "60", **ros, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), ros.get("PYTHONPATH", "")) if p),
               **allocator_env(os.environ.get("SOAK_ALLOCATOR", AUTO_ALLOCATOR), ros)}
        return soak(env, tmp, seconds, warmup, growth)


def soak(env: dict[str, str], tmp: Path, seconds: float, warmup: float, growth: float) -> int:
    """Node and camera processes in `env` for `seconds`; prints the summary, returns the exit code."""
    model = build_tiny_model(tmp / "tiny", TinySpec(seed=0))
    node_log = open(tmp / "node.log", "wb")
    node = subprocess.Popen([sys.executable, str(REPO / "scripts" / "molmo2_node"), "--ros-args",
                             "-r", f"__node:={NODE_NAME}", "-r", f"image:={TOPIC}",
                             "--params-file", str(REPO / "config" / "tiny_cpu.yaml"), "-p", f"model:={model}",
                             "-p", "max_new_tokens:=8",
                             *[arg for p in os.environ.get("SOAK_PARAMS", "").split() for arg in ("-p", p)]],
                            env=env, stdout=node_log, stderr=subprocess.STDOUT)
    diag = Diagnostics()
    camera = None
    summary: dict = {}
    crashes = 0
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 120.0
        while diag.get().get("state") != "active":
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not become active:\n{(tmp / 'node.log').read_text()[-3000:]}")
            time.sleep(0.2)
        count = int(round(seconds * RATE_HZ))
        spec = {"topic": TOPIC, "qos": "best_effort", "rate": RATE_HZ, "count": count, "t0": 1000.0,
                "dt": 1.0 / RATE_HZ, "width": WIDTH, "height": HEIGHT, "frame_id": "soak_camera"}
        camera = subprocess.Popen([sys.executable, str(REPO / "test" / "helpers" / "camera_publisher.py"),
                                   json.dumps(spec)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log(f"node pid {node.pid} active; camera: {count} frames {WIDTH}x{HEIGHT} at {RATE_HZ:.0f} Hz "
            f"({seconds:.0f} s), domain {env['ROS_DOMAIN_ID']}, logs in {tmp}")
        t_cam = time.monotonic()
        while as_int(diag.get(), "windows_processed") == 0:
            if node.poll() is not None or camera.poll() is not None or time.monotonic() - t_cam > 120:
                raise RuntimeError("no window processed")
            time.sleep(0.2)
        first_window = time.monotonic()
        sampler = ProcSampler(node.pid).start()
        start = end = None
        next_report = time.monotonic() + 60
        while camera.poll() is None:
            if node.poll() is not None:
                crashes = 1
                log(f"node exited with {node.returncode}")
                break
            now = time.monotonic()
            if start is None and now - first_window >= warmup:
                start = proc_stats(node.pid)
                log(f"after warm-up ({warmup:.0f} s): {start}")
            if now >= next_report:
                d = diag.get()
                log(f"{now - t_cam:.0f} s: {proc_stats(node.pid)} frames_in {d.get('frames_received')} windows "
                    f"{d.get('windows_processed')} skipped {d.get('windows_skipped')}")
                next_report = now + 60
            if start is not None and node.poll() is None:
                end = proc_stats(node.pid)  # the last sample before the camera finishes
            time.sleep(0.5)
        if camera.returncode not in (0, None):
            log(f"camera exited with {camera.returncode}: {camera.stderr.read().decode()[-1000:]}")
        if node.poll() is None:
            # let the last windows finish, then read the final counters
            settle = time.monotonic() + 30.0
            d = diag.fresh(time.monotonic())
            while as_int(d, "pending_clips") > 0 and time.monotonic() < settle:
                d = diag.fresh(time.monotonic())
        else:
            crashes = 1
            d = diag.get()
        start = start or {"rss_mb": 0.0, "threads": 0}
        end = end or start
        dropped = {k.removeprefix("bad_").removeprefix("buffer_dropped_"): as_int(d, k) for k in d
                   if k.startswith(("bad_", "buffer_dropped_")) and as_int(d, k)}
        frames_in = as_int(d, "frames_received")
        dropped["not_received"] = max(0, count - frames_in)  # lost in transport (best-effort camera)
        summary = {
            "rss_mb_start": round(start["rss_mb"], 1), "rss_mb_end": round(end["rss_mb"], 1),
            "threads_start": start["threads"], "threads_end": end["threads"], "frames_in": frames_in,
            "frames_dropped_by_reason": dropped, "windows_processed": as_int(d, "windows_processed"),
            "windows_skipped": as_int(d, "windows_skipped"), "crashes": crashes, "frames_sent": count,
            "clips": as_int(d, "buffer_clips"), "inference_errors": as_int(d, "inference_errors"),
            "feature_cache_host_mb": float(d.get("feature_cache_host_mb") or 0.0),
            "worker_errors": as_int(d, "worker_errors"), "seconds": round(time.monotonic() - started, 1),
            "rss_mb_slope_per_hour_after_warmup": sampler.slope(warmup), **sampler.where(warmup),
            "memstats": memstats_slopes((tmp / "node.log").read_text(errors="replace"), sampler.t0, warmup),
        }
        sampler.stop()
    except Exception as error:  # noqa: BLE001 - report as a crash in the summary
        log(f"error: {error}")
        crashes = 1
        summary = {"rss_mb_start": 0.0, "rss_mb_end": 0.0, "threads_start": 0, "threads_end": 0, "frames_in": 0,
                   "frames_dropped_by_reason": {}, "windows_processed": 0, "windows_skipped": 0, "crashes": 1,
                   "error": str(error)[-500:]}
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
            camera.wait()
        if node.poll() is None:
            code = terminate(node)
            if code != 0:
                summary["crashes"] = 1
                summary["exit_code"] = code
        node_log.close()
        diag.close()
    failures = []
    if summary["crashes"]:
        failures.append("the node crashed")
    if summary["rss_mb_end"] > summary["rss_mb_start"] * (1 + growth):
        failures.append(f"RSS grew by more than {growth:.0%}")
    if summary["threads_end"] > summary["threads_start"] * (1 + growth):
        failures.append(f"thread count grew by more than {growth:.0%}")
    accounted = summary["windows_processed"] + summary["windows_skipped"] + summary.get("inference_errors", 0)
    if not summary["crashes"] and summary.get("clips", 0) != accounted:
        failures.append(f"{summary.get('clips')} clips but {accounted} processed + skipped + failed")
    if summary["windows_processed"] == 0:
        failures.append("no window processed")
    for failure in failures:
        log(f"FAIL: {failure}")
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
