"""The molmo2 node under a 1080p camera stream: three processes, shared-memory Fast DDS.

- camera process (bench/camera.py): 1920x1080 rgb8 at 30 Hz for --seconds, pre-built frames
  (`msg.data = bytes`), header.stamp = its own clock, RELIABLE depth 10 (the node's qos=auto matches it);
- node process (scripts/molmo2_node): a tiny random Molmo2 (build_tiny_model) on the CPU, window_s 8,
  stride_s 1, two standing queries (point + caption), max_new_tokens 16;
- this process: subscribes to the node's outputs and /diagnostics, samples the node's CPU time and RSS (psutil).

Measured: frames_sent (camera), frames_received (node diagnostics), image callback duration p50/p99 (node
diagnostics, last 2048 callbacks), node CPU %, output age (receive wall time - header stamp; the stamps are
the camera's wall-clock times), windows processed/skipped, inference latency, node RSS.

Targets: all frames received; output age max <= stride + 2 x inference p50; RSS growth <= 5 % between the end of
warm-up (first full window buffered) and the end of the run. The callback p99 is reported, not a target (why: at
`targets` in run()).

Run: `scripts/with_ros .venv/bin/python -m bench.bench_node [--seconds 60]`; writes bench/out/node.json, exit
code 1 on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # test/helpers (not conftest: pytest's)

from helpers.ros_env import FASTDDS_PROFILE, ros_environment  # noqa: E402
from helpers.ros_client import SpunNode, terminate, wait_until  # noqa: E402
from molmo2_ros.msg import Answer, PointArray  # noqa: E402
from molmo2_ros.ros.diagnostics import merged_values  # noqa: E402
from scripts.soak_stats import PARTS, proc_stats  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
NODE_SCRIPT = REPO / "scripts" / "molmo2_node"
NODE_ENTRY = {  # how the node process starts, per --executor
    "handoff": [str(NODE_SCRIPT)],
    "rclpy": ["-c", "import sys; from rclpy.executors import MultiThreadedExecutor; "
                    "from molmo2_ros.ros.main import main; sys.exit(main(executor_class=MultiThreadedExecutor))"],
}
TOPIC = "/bench/camera/image_raw"
NODE = "/molmo2"
WINDOW_S, STRIDE_S = 8.0, 1.0
OUTPUTS = {f"{NODE}/points/ball": PointArray, f"{NODE}/answers/ball": Answer, f"{NODE}/answers/scene": Answer}
PARAMS = f"""/**:
  ros__parameters:
    device: cpu
    dtype: float32
    max_new_tokens: 16
    window_s: {WINDOW_S}
    stride_s: {STRIDE_S}
    sample_fps: 2.0
    qos: auto
    queries: |
      - {{id: ball, task: point, text: red square}}
      - {{id: scene, task: caption}}
"""


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


class Watcher(SpunNode):
    """In-process client: records every output with its receive wall time, and the newest diagnostics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outputs: list[tuple[str, float, int, float]] = []  # topic, recv wall s, stamp ns, inference_s
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        super().__init__("bench_node_watcher")
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msg_type in OUTPUTS.items():
            self.node.create_subscription(msg_type, topic, lambda m, t=topic: self._on_output(t, m), reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, QoSProfile(depth=10))

    def _on_output(self, topic: str, msg) -> None:
        now = time.time()
        with self.lock:
            self.outputs.append((topic, now, ns(msg.header.stamp), float(getattr(msg, "inference_time", 0.0))))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        values = merged_values(msg, NODE)
        if values is not None:
            with self.lock:
                self.diag = values
                self.diag_count += 1

    def diagnostics(self) -> tuple[int, dict[str, str]]:
        with self.lock:
            return self.diag_count, dict(self.diag)

    def fresh_diagnostics(self, timeout: float = 5.0) -> dict[str, str]:
        """The first diagnostics published after this call."""
        count, _ = self.diagnostics()
        wait_until(lambda: self.diagnostics()[0] > count, timeout, what="fresh diagnostics")
        return self.diagnostics()[1]

    def outputs_matched(self) -> bool:
        return all(self.node.count_publishers(t) > 0 for t in OUTPUTS)


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def rss_parts_mb(pid: int) -> dict[str, float]:
    """RssAnon / RssFile / RssShmem of a process (the Fast DDS shared-memory segment counts as RssShmem)."""
    stats = proc_stats(pid)
    return {f"Rss{part.capitalize()}": round(stats[part], 1) for part in PARTS}


def spin_thread_cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process's main thread: the node's executor spin loop (its callbacks run on pool threads)."""
    main = next(t for t in proc.threads() if t.id == proc.pid)
    return main.user_time + main.system_time


def other_load() -> list[dict]:
    """Processes other than ours using the CPU (the host may be shared)."""
    ours = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    busy = []
    for p in psutil.process_iter(["pid", "name", "cpu_percent"]):
        if p.info["pid"] not in ours and (p.info["cpu_percent"] or 0) >= 20:
            busy.append({"pid": p.info["pid"], "name": p.info["name"], "cpu_percent": p.info["cpu_percent"]})
    return busy


def run(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict:
    from scripts.tiny_model import build_tiny_model

    model = build_tiny_model(tmp / "tiny")
    params = tmp / "params.yaml"
    params.write_text(PARAMS)
    node_log = open(OUT_DIR / "node.log", "wb")
    node_cmd = [sys.executable, *NODE_ENTRY[args.executor], "--ros-args", "-r", "__node:=molmo2", "--params-file",
                str(params), "-p", f"model:={model}", "-r", f"image:={TOPIC}"]
    for extra in args.param:
        node_cmd += ["-p", extra]
    node = subprocess.Popen(node_cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT)
    watcher = Watcher()
    camera = None
    try:
        node_ps = psutil.Process(node.pid)
        started = time.monotonic()
        wait_until(lambda: node.poll() is not None or watcher.diagnostics()[1].get("state") == "active", 120.0,
                   what="node active")
        if node.poll() is not None:
            raise RuntimeError(f"node exited ({node.returncode}); see bench/out/node.log")
        startup_s = time.monotonic() - started
        wait_until(watcher.outputs_matched, 10.0, what="output publishers matched")
        rss_idle = rss_mb(node_ps)
        for p in psutil.process_iter():  # prime cpu_percent for other_load()
            try:
                p.cpu_percent(None)
            except psutil.Error:
                pass
        camera = subprocess.Popen([sys.executable, "-m", "bench.camera", "--topic", TOPIC, "--seconds",
                                   str(args.seconds), "--rate", str(args.rate)], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        events: list[dict] = []

        def read_camera() -> None:
            for line in camera.stdout:
                if line.startswith("{"):
                    events.append(json.loads(line))

        reader = threading.Thread(target=read_camera, daemon=True)
        reader.start()
        wait_until(lambda: any(e["event"] in ("first", "error") for e in events) or camera.poll() is not None,
                   90.0, what="camera matched and publishing")
        if not any(e["event"] == "first" for e in events):
            raise RuntimeError(f"camera failed: {events} {camera.stderr.read()[-2000:]}")
        t_first = time.monotonic()
        cpu0, wall0 = node_ps.cpu_times(), time.monotonic()
        spin0 = spin_thread_cpu_s(node_ps)
        # rss at the first frame(s), then after warm-up: the first full window buffered plus two strides
        rss_first = rss_mb(node_ps)
        wait_until(lambda: time.monotonic() - t_first >= WINDOW_S + 2 * STRIDE_S or camera.poll() is not None,
                   WINDOW_S + 10, what="warm-up")
        rss_start = rss_mb(node_ps)
        rss_parts_start = rss_parts_mb(node_ps.pid)
        rss_samples = [(round(time.monotonic() - t_first, 1), round(rss_start, 1))]
        load_mid = None
        while camera.poll() is None:
            time.sleep(1.0)
            rss_samples.append((round(time.monotonic() - t_first, 1), round(rss_mb(node_ps), 1)))
            if load_mid is None and time.monotonic() - t_first > args.seconds / 2:
                load_mid = other_load()
        reader.join(timeout=10.0)
        cpu1, wall1, spin1 = node_ps.cpu_times(), time.monotonic(), spin_thread_cpu_s(node_ps)
        done = next((e for e in events if e["event"] == "done"), None)
        if camera.returncode != 0 or done is None:
            raise RuntimeError(f"camera failed ({camera.returncode}): {camera.stderr.read()[-2000:]}")
        sent = int(done["frames_sent"])
        # wait until every frame is counted (or stops changing), and the last pending clip is processed
        last = [-1, time.monotonic()]

        def settled() -> bool:
            d = watcher.fresh_diagnostics()
            got = int(d.get("frames_received") or 0)
            if got != last[0]:
                last[:] = [got, time.monotonic()]
            quiet = time.monotonic() - last[1] >= 2.0
            return (got >= sent or quiet) and d.get("pending_clips") == "0"

        wait_until(settled, 30.0, what="node drained", interval=0.0)
        diag = watcher.fresh_diagnostics()
        # RSS swings by +-50 MB with the 6 MB frames in flight: compare the medians of the first and the last
        # 10 one-second samples of the streaming phase rather than two single samples.
        rss_start = statistics.median(v for _, v in rss_samples[:10])
        rss_end = statistics.median(v for _, v in rss_samples[-10:])
        rss_parts_end = rss_parts_mb(node_ps.pid)
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        node_cpu_percent = 100.0 * cpu_s / (wall1 - wall0)
        spin_cpu_percent = 100.0 * (spin1 - spin0) / (wall1 - wall0)
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
        terminate(node)
        node_log.close()
        watcher.close()

    with watcher.lock:
        outputs = list(watcher.outputs)
    ages = [recv - stamp / 1e9 for _, recv, stamp, _ in outputs]
    inference = [inf for topic, _, _, inf in outputs if topic.endswith("/answers/scene")]
    # whole-clip processing time (both queries, shared video prefix), node's p50 over its last 50 clips
    inference_p50 = float(diag.get("inference_latency_p50_s") or "nan")
    age_max = max(ages) if ages else None
    received = int(diag.get("frames_received") or 0)
    cb_p50 = float(diag.get("callback_ms_p50") or "nan")
    cb_p99 = float(diag.get("callback_ms_p99") or "nan")
    age_limit = STRIDE_S + 2 * inference_p50
    growth = (rss_end - rss_start) / rss_start
    # No frame lost and fresh outputs decide the verdict (and a flat RSS). The image callback's p99 is reported only:
    # the intake deserialises each sampled frame (2 of 30 at 30 Hz) inside the callback, so the p99 is that
    # deserialisation of a 6 MB frame, plus callbacks behind a heap trim (heap_trim_period_s). `--seconds 30` on
    # 2026-12-06 (2 cores shared with test runs): p99 7.7, 7.8 and 9.4 ms (p50 0.07-0.08 ms), 6.1 ms with
    # heap_trim_period_s:=0.0, every frame received, output age max 0.32-0.50 s. The old "<= 2 ms" dates from
    # an intake that deserialised nothing in the callback; one too slow for the camera shows as lost frames or
    # late outputs here.
    targets = {
        "all_frames_received": {"value": f"{received}/{sent}", "target": f"= {sent}", "pass": received >= sent},
        "output_age_s_max": {"value": age_max, "target": f"<= {age_limit:.3f} (stride + 2 x inference_s_p50)",
                             "pass": age_max is not None and age_max <= age_limit},
        "rss_growth": {"value": round(growth, 4), "target": "<= 0.05", "pass": growth <= 0.05},
    }
    return {
        "frames_sent": sent, "frames_received": received,
        "callback_ms_p50": cb_p50, "callback_ms_p99": cb_p99,
        "node_cpu_percent": round(node_cpu_percent, 1),
        "spin_thread_cpu_percent": round(spin_cpu_percent, 1),
        "output_age_s_p50": pct(ages, 0.5), "output_age_s_max": age_max, "outputs_received": len(outputs),
        "windows_processed": int(diag.get("windows_processed") or 0),
        "windows_skipped": int(diag.get("windows_skipped") or 0),
        "inference_s_p50": inference_p50, "inference_s_max_last50": float(diag.get("inference_latency_s") or "nan"),
        "caption_answer_inference_time_s_p50": pct(inference, 0.5),
        "rss_mb_idle": round(rss_idle, 1), "rss_mb_first_frame": round(rss_first, 1),
        "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_end, 1), "rss_mb_samples": rss_samples,
        "rss_parts_mb_start": rss_parts_start, "rss_parts_mb_end": rss_parts_end,
        "targets": targets, "all_pass": all(t["pass"] for t in targets.values()),
        "camera": done, "node_startup_s": round(startup_s, 2), "node_diagnostics": diag,
        "scenario": {"seconds": args.seconds, "rate_hz": args.rate, "size": "1920x1080 rgb8", "qos": "reliable "
                     "depth 10 (node qos=auto)", "window_s": WINDOW_S, "stride_s": STRIDE_S, "sample_fps": 2.0,
                     "queries": ["point", "caption"], "max_new_tokens": 16, "model": "tiny random Molmo2 (TinySpec())",
                     "fastdds_profile": str(FASTDDS_PROFILE.relative_to(REPO)), "extra_params": args.param,
                     "executor": args.executor},
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg(), "python": platform.python_version(),
                 "other_busy_processes_mid_run": load_mid},
    }


def table(result: dict) -> str:
    rows = [("metric", "value", "target", "")]
    for name, t in result["targets"].items():
        value = t["value"]
        value = f"{value:.3f}" if isinstance(value, float) else str(value)
        rows.append((name, value, t["target"], "PASS" if t["pass"] else "MISS"))
    for key in ("frames_sent", "frames_received", "callback_ms_p50", "callback_ms_p99", "node_cpu_percent",
                "spin_thread_cpu_percent",
                "output_age_s_p50", "output_age_s_max", "windows_processed", "windows_skipped", "inference_s_p50",
                "rss_mb_first_frame", "rss_mb_start", "rss_mb_end"):
        value = result[key]
        rows.append((key, f"{value:.3f}" if isinstance(value, float) else str(value), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description="molmo2 node under a 1080p 30 Hz camera (three processes)")
    parser.add_argument("--seconds", type=float, default=60.0, help="camera stream duration")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    parser.add_argument("--executor", choices=sorted(NODE_ENTRY), default="handoff",
                        help="the node's executor: its default (handoff) or rclpy's MultiThreadedExecutor")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter (repeatable), e.g. --param input_depth:=30")
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="molmo2_bench_node_"))
    try:
        with ros_environment(tmp / "ros_home") as ros:  # a free domain id, claimed like the tests do
            result = run(args, tmp, {**ros, "PYTHONUNBUFFERED": "1"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (OUT_DIR / "node.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {OUT_DIR / 'node.json'}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
