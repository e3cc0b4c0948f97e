"""Shared pieces of the reliability, sim-time and soak tests: starting the node with a plugin engine, reading
/proc of a process, publishing hand-made frames from the test process, and output normalisation."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from helpers.ros_client import Client, NodeProcess, wait_until

SCRIPTED = "helpers.scripted_engine:ScriptedEngine"
FAULT = "helpers.fault_engine:FaultEngine"
ORACLE = "helpers.oracle_plugin:OraclePlugin"


def unique_names() -> tuple[str, str]:
    """(node name, camera topic) unique to this process: a ROS process outside the test suite that uses the same
    ROS_DOMAIN_ID without claiming it (e.g. a benchmark on a fixed domain) cannot answer for the node under test
    or feed it frames."""
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    return f"molmo2_{tag}", f"/cam_{tag}/image"


def write_params(folder: Path, queries: str, **params) -> Path:
    """A params file with the `queries` YAML text and other parameters."""
    lines = ["/**:", "  ros__parameters:", "    queries: |"]
    lines += [f"      {line}" for line in queries.strip().splitlines()] or ["      []"]
    for key, value in params.items():
        v = ("true" if value else "false") if isinstance(value, bool) else value
        lines.append(f"    {key}: {v!r}" if isinstance(v, str) and v not in ("true", "false") else f"    {key}: {v}")
    path = folder / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_node(client: Client, env: dict, folder: Path, *, queries: str, topic: str = "/cam/image",
               name: str = "molmo2", timeout: float = 60.0, extra: list[str] | None = None, **params) -> NodeProcess:
    """Start the node process and wait until it is active."""
    params_file = write_params(folder, queries, **params)
    proc = NodeProcess(["--ros-args", "-r", f"__node:={name}", "-r", f"image:={topic}",
                        "--params-file", str(params_file), *(extra or [])], env, folder / f"{name}.log")
    try:
        wait_until(lambda: proc.proc.poll() is not None or client.state(f"/{name}") == "active", timeout,
                   what="node active")
        assert proc.proc.poll() is None, f"node exited ({proc.proc.returncode}):\n{proc.output()}"
    except AssertionError:
        proc.stop()
        raise AssertionError(f"node did not become active:\n{proc.output()[-4000:]}") from None
    return proc


# ---- /proc ---------------------------------------------------------------------------------------------------
def proc_stats(pid: int) -> dict[str, float]:
    """rss_mb, threads, fds of a process (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


# ---- frames from the test process ----------------------------------------------------------------------------
def stamp(t_s: float) -> Time:
    ns = int(round(t_s * 1e9))
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def rgb_image(t_s: float, w: int = 64, h: int = 48, color=(200, 100, 50), frame_id: str = "cam") -> Image:
    data = np.empty((h, w, 3), np.uint8)
    data[:] = color
    return Image(header=Header(stamp=stamp(t_s), frame_id=frame_id), height=h, width=w, encoding="rgb8",
                 is_bigendian=0, step=w * 3, data=data.tobytes())


def ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


class FrameSender:
    """Publishes hand-made Image/CompressedImage messages (RELIABLE) from the test's client node, paced so that
    the node's keep-last-5 input queue never overflows."""

    def __init__(self, client: Client, topic: str, compressed: bool = False, rate_hz: float = 30.0) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.client = client
        self.pub = client.node.create_publisher(CompressedImage if compressed else Image, topic,
                                                QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        self.period = 1.0 / rate_hz
        wait_until(lambda: self.pub.get_subscription_count() > 0, 20.0, what=f"the node subscribing to {topic}")

    def send(self, messages) -> int:
        n = 0
        for msg in messages:
            self.pub.publish(msg)
            n += 1
            time.sleep(self.period)
        from rclpy.duration import Duration

        assert self.pub.wait_for_all_acked(Duration(seconds=10)), "frames not acknowledged"
        return n

    def close(self) -> None:
        self.client.node.destroy_publisher(self.pub)


def counters(d: dict[str, str]) -> dict[str, int]:
    """The integer values of a diagnostics dict."""
    out = {}
    for k, v in d.items():
        try:
            out[k] = int(v)
        except (TypeError, ValueError):
            pass
    return out


def delta(before: dict[str, str], after: dict[str, str]) -> dict[str, int]:
    b, a = counters(before), counters(after)
    return {k: a[k] - b.get(k, 0) for k in a if a[k] != b.get(k, 0)}
