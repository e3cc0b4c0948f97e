"""Several cameras into one molmo2 node (one model): 4 camera processes + the node + this watcher.

Cameras (bench/camera.py, stamps = their own clocks): 2 x 1280x720 rgb8 at 30 Hz and 2 x 640x480 JPEG at 15 Hz,
RELIABLE depth 10, for --seconds. Node: a tiny random Molmo2 on the CPU, window 8 s, stride 1 s, 2 standing
queries per camera (point + caption, shared), max_new_tokens 16.

Three runs with the same camera streams:
1. schedule live, batch_cameras true: the robot setting. Measured: frames sent/received, windows processed/skipped,
   model loads, inference p50, output age (receive wall time - header stamp), image callback p99, RSS.
2. and 3. schedule every_window (every window runs, so both process the same windows), batch_cameras true, then
   false: `wall_ratio_unbatched_over_batched` = the node's engine busy time (sum of engine-call wall times,
   runtime counter engine_ms) unbatched / batched, over the same windows. In the node the two runs do not share
   the CPU alike: the batched node keeps up and computes while the cameras stream, the unbatched one falls behind
   and runs part of its windows after they stopped, on an idle CPU.
4. the same A/B in the core runtime alone (no ROS, no camera processes, the same synthetic frames and windows, each
   mode twice, best of two): `core_ab`, for the node's 16 new tokens and for 64 (an answer with a few points).

Targets: all frames received; one model load; output age max <= stride + 2 x inference p50; RSS growth <= 5 %;
batched >= 1.5x faster than unbatched (node and core figures both reported; the target is read on the core one,
where both modes get the same CPU).

Run: `scripts/with_ros .venv/bin/python -m bench.bench_multicam [--seconds 60]`; writes bench/out/multicam.json.
`--live-only [--param NAME:=VALUE ...]`: the live run alone (A/B of a node parameter, long RSS runs).
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

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # test/helpers (not conftest: pytest's)

from bench.bench_node import rss_parts_mb  # noqa: E402
from helpers.ros_env import ros_environment  # noqa: E402
from helpers.ros_client import SpunNode, terminate, wait_until  # noqa: E402
from molmo2_ros.core.clip_buffer import BufferConfig  # noqa: E402
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine  # noqa: E402
from molmo2_ros.core.runtime import Runtime  # noqa: E402
from molmo2_ros.core.schedule import make_policy  # noqa: E402
from molmo2_ros.core.stream import Stream, StreamConfig  # noqa: E402
from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind  # noqa: E402
from molmo2_ros.msg import Answer, PointArray  # noqa: E402
from molmo2_ros.ros.diagnostics import merged_values  # noqa: E402
from scripts.soak_stats import ProcSampler, shm_mapped_mb  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
NODE = "/molmo2"
WINDOW_S, STRIDE_S = 8.0, 1.0
MAX_NEW_TOKENS = 16
WARMUP_S = WINDOW_S + 2 * STRIDE_S  # until the first windows ran: RSS start/end/peak are read after it
CAMERAS = {  # name -> camera.py arguments
    "hd0": ["--width", "1280", "--height", "720", "--rate", "30"],
    "hd1": ["--width", "1280", "--height", "720", "--rate", "30"],
    "jpg0": ["--width", "640", "--height", "480", "--rate", "15", "--jpeg"],
    "jpg1": ["--width", "640", "--height", "480", "--rate", "15", "--jpeg"],
}
PARAMS = f"""/**:
  ros__parameters:
    device: cpu
    dtype: float32
    max_new_tokens: {MAX_NEW_TOKENS}
    window_s: {WINDOW_S}
    stride_s: {STRIDE_S}
    sample_fps: 2.0
    qos: auto
    cameras: [{", ".join(CAMERAS)}]
""" + "".join(f"    {c}.input_compressed: true\n" for c, a in CAMERAS.items() if "--jpeg" in a) + """    queries: |
      - {id: ball, task: point, text: red square}
      - {id: scene, task: caption}
"""


def topic(camera: str) -> str:
    return f"/bench/{camera}/image"


class Watcher(SpunNode):
    """Records every output with its receive wall time, and the newest diagnostics of the node and each camera."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outputs: list[tuple[str, float, int]] = []  # topic, receive wall s, stamp ns
        self.diag: dict[str, dict[str, str]] = {}
        self.count = 0
        super().__init__("bench_multicam_watcher")
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for camera in CAMERAS:
            for name, msg_type in ((f"{NODE}/{camera}/points/ball", PointArray),
                                   (f"{NODE}/{camera}/answers/scene", Answer)):
                self.node.create_subscription(msg_type, name, lambda m, t=name: self._on_output(t, m), reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, QoSProfile(depth=10))

    def _on_output(self, name: str, msg) -> None:
        now = time.time()
        with self.lock:
            self.outputs.append((name, now, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        values = {c: merged_values(msg, NODE, c) for c in CAMERAS}
        if all(v is not None for v in values.values()):
            with self.lock:
                self.diag = values
                self.count += 1

    def fresh(self, timeout: float = 5.0) -> dict[str, dict[str, str]]:
        with self.lock:
            count = self.count
        wait_until(lambda: self.count > count, timeout, what="fresh diagnostics")
        with self.lock:
            return dict(self.diag)


def pct(values: list[float], q: float) -> float | None:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] if values else None


def as_int(d: dict[str, str], key: str) -> int:
    try:
        return int(d.get(key) or 0)
    except ValueError:
        return 0


def run(seconds: float, schedule: str, batch: bool, env: dict[str, str], model: Path, tmp: Path,
        extra: tuple[str, ...] = ()) -> dict:
    """One node run with all cameras streaming for `seconds`; returns its measurements, with `samples`: the node's
    (seconds since the cameras started, RSS MB, threads) once a second, and its exit code."""
    params = tmp / "params.yaml"
    params.write_text(PARAMS)
    log = open(OUT_DIR / f"multicam_node_{schedule}_{'batched' if batch else 'unbatched'}.log", "wb")
    cmd = [sys.executable, str(REPO / "scripts" / "molmo2_node"), "--ros-args", "-r", "__node:=molmo2",
           "--params-file", str(params), "-p", f"model:={model}", "-p", f"schedule:={schedule}",
           "-p", f"batch_cameras:={'true' if batch else 'false'}", "-p", "input_depth:=30",
           *[arg for e in extra for arg in ("-p", e)],
           *[arg for c in CAMERAS for arg in ("-r", f"{c}/image:={topic(c)}")]]
    node = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    watcher = Watcher()
    cameras: dict[str, subprocess.Popen] = {}
    sampler = ProcSampler(node.pid)
    try:
        wait_until(lambda: node.poll() is not None or (watcher.diag and next(iter(watcher.diag.values())).get(
            "state") == "active"), 180.0, what="node active")
        if node.poll() is not None:
            raise RuntimeError(f"node exited ({node.returncode}); see {log.name}")
        for name, camera_args in CAMERAS.items():
            cameras[name] = subprocess.Popen(
                [sys.executable, "-m", "bench.camera", "--topic", topic(name), "--seconds", str(seconds),
                 "--frame-id", f"{name}_optical", *camera_args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        sampler.start()
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 >= WARMUP_S or any(
            c.poll() is not None for c in cameras.values()), WINDOW_S + 30, what="warm-up")
        rss_split_start = rss_parts_mb(node.pid)
        while any(c.poll() is None for c in cameras.values()):
            time.sleep(1.0)
        samples = sampler.stop()
        rss_split_end = rss_parts_mb(node.pid)
        shm_mapped = shm_mapped_mb(node.pid)
        sent = {}
        for name, cam in cameras.items():
            out, err = cam.communicate(timeout=30)
            done = [json.loads(line) for line in out.splitlines() if line.startswith('{"event": "done"')]
            if cam.returncode != 0 or not done:
                raise RuntimeError(f"camera {name} failed ({cam.returncode}): {err[-1500:]}")
            sent[name] = int(done[0]["frames_sent"])

        def drained() -> bool:
            d = watcher.fresh()
            return all(as_int(v, "pending_clips") == 0 for v in d.values())
        wait_until(drained, 600.0, what="node drained", interval=0.0)
        diag = watcher.fresh()
    finally:
        for cam in cameras.values():
            if cam.poll() is None:
                cam.kill()
        sampler.stop()
        exit_code = terminate(node)
        log.close()
        watcher.close()
    with watcher.lock:
        outputs = list(watcher.outputs)
    ages = [recv - stamp / 1e9 for _, recv, stamp in outputs]
    first = next(iter(diag.values()))
    per_camera = {c: {"frames_sent": sent[c], "frames_received": as_int(d, "frames_received"),
                      "frames_decoded": as_int(d, "frames_decoded"),
                      "windows_processed": as_int(d, "windows_processed"),
                      "windows_skipped": as_int(d, "windows_skipped"),
                      "inference_s_p50": float(d.get("inference_latency_p50_s") or "nan"),
                      "callback_ms_p99": float(d.get("callback_ms_p99") or "nan")} for c, d in diag.items()}
    rss_samples = [mb for t, mb, _ in samples if t >= WARMUP_S] or [samples[-1][1]]
    rss_start = statistics.median(rss_samples[:10])
    rss_end = statistics.median(rss_samples[-10:])
    return {
        "schedule": schedule, "batch_cameras": batch, "cameras": list(CAMERAS), "extra_params": list(extra),
        "frames_sent": sum(sent.values()), "frames_received": sum(p["frames_received"] for p in per_camera.values()),
        "frames_decoded": sum(p["frames_decoded"] for p in per_camera.values()),
        "windows_processed": sum(p["windows_processed"] for p in per_camera.values()),
        "windows_skipped": sum(p["windows_skipped"] for p in per_camera.values()),
        "model_loads": as_int(first, "model_loads"),
        "engine_calls": as_int(first, "engine_calls"), "engine_busy_s": as_int(first, "engine_ms") / 1e3,
        "inference_s_p50": statistics.median(p["inference_s_p50"] for p in per_camera.values()),
        "output_age_s_p50": pct(ages, 0.5), "output_age_s_max": max(ages) if ages else None,
        "callback_ms_p99": max(p["callback_ms_p99"] for p in per_camera.values()),
        "rss_mb_start": round(rss_start, 1), "rss_mb_end": round(rss_end, 1),
        "rss_mb_peak": round(max(rss_samples), 1), "rss_mb_every_5s": [round(r, 1) for r in rss_samples[::5]],
        "rss_split_mb_start": rss_split_start, "rss_split_mb_end": rss_split_end,
        "threads_start": samples[0][2], "threads_end": samples[-1][2],
        "per_camera": per_camera, "outputs_received": len(outputs), "samples": samples, "rss_parts": sampler.parts,
        "shm_mapped_mb": shm_mapped, "t0_monotonic": sampler.t0, "node_log": log.name, "node_exit_code": exit_code,
        "heap_trim": {k: first.get(k) for k in ("heap_trim_calls", "heap_trim_ms_mean", "heap_trim_ms_max",
                                                 "shm_release_calls", "shm_released_mb_last", "shm_release_ms_mean",
                                                 "shm_release_ms_max")},
        "feature_cache_host_mb": float(first.get("feature_cache_host_mb") or 0.0),
    }


def core_ab(model: Path, seconds: float, max_new_tokens: int) -> dict:
    """Engine busy time over the same windows, batched vs one call per clip, in the core runtime (every_window):
    the cameras' sizes, 2 fps sampled frames pushed directly, no ROS and no camera processes sharing the CPU."""
    queries = [Query("ball", TaskKind.POINT, "red square"), Query("scene", TaskKind.CAPTION, "")]
    sizes = {c: (int(a[a.index("--height") + 1]), int(a[a.index("--width") + 1])) for c, a in CAMERAS.items()}
    rng = np.random.RandomState(0)
    images = {c: [rng.randint(0, 255, (*hw, 3), np.uint8) for _ in range(8)] for c, hw in sizes.items()}
    busy: dict[bool, list[float]] = {True: [], False: []}
    windows: dict[bool, int] = {}
    for batch in (True, False, True, False):
        engine = Molmo2Engine(EngineConfig(model=str(model), device="cpu", dtype="float32",
                                           max_new_tokens=max_new_tokens))
        engine.load()
        config = StreamConfig(buffer=BufferConfig(window_s=WINDOW_S, stride_s=STRIDE_S, sample_fps=2.0),
                              max_new_tokens=max_new_tokens)
        runtime = Runtime(engine, [Stream(c, queries, config) for c in sizes], make_policy("every_window", 1024),
                          batch_streams=batch)
        elapsed, done = 0.0, 0
        for i in range(int(seconds * 2)):
            for c in sizes:
                runtime.push(c, Frame(1_700_000_000 * NS_PER_S + i * NS_PER_S // 2, images[c][i % 8], c))
            t0 = time.perf_counter()
            done += len(runtime.step())
            elapsed += time.perf_counter() - t0
        engine.unload()
        busy[batch].append(elapsed)
        windows[batch] = done
    return {"max_new_tokens": max_new_tokens, "windows": [windows[True], windows[False]],
            "busy_s_batched": round(min(busy[True]), 2), "busy_s_unbatched": round(min(busy[False]), 2),
            "ratio": round(min(busy[False]) / min(busy[True]), 3)}


def main() -> int:
    from scripts.tiny_model import build_tiny_model

    parser = argparse.ArgumentParser(description="4 cameras into one molmo2 node (tiny model, CPU)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra node parameter for every run (e.g. gil_switch_interval_ms:=0.5)")
    parser.add_argument("--live-only", action="store_true",
                        help="only the live run (an A/B of a node parameter, a long RSS run): "
                             "writes bench/out/multicam_live.json, no targets")
    args = parser.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="molmo2_bench_multicam_"))
    try:
        with ros_environment(tmp / "ros_home") as ros:
            env = {**ros, "PYTHONUNBUFFERED": "1"}
            model = build_tiny_model(tmp / "tiny")
            extra = tuple(args.param)
            live = run(args.seconds, "live", True, env, model, tmp, extra)
            if args.live_only:
                live.pop("samples"), live.pop("rss_parts")
                (OUT_DIR / "multicam_live.json").write_text(json.dumps(live, indent=2) + "\n")
                print(json.dumps({k: v for k, v in live.items() if k != "per_camera"}))
                return 0
            batched = run(args.seconds, "every_window", True, env, model, tmp, extra)
            unbatched = run(args.seconds, "every_window", False, env, model, tmp, extra)
            core = [core_ab(model, args.seconds, tokens) for tokens in (MAX_NEW_TOKENS, 64)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for node_run in (live, batched, unbatched):
        node_run.pop("samples"), node_run.pop("rss_parts")
    ratio = unbatched["engine_busy_s"] / batched["engine_busy_s"] if batched["engine_busy_s"] else None
    core_ratio = core[0]["ratio"]
    age_limit = STRIDE_S + 2 * live["inference_s_p50"]
    growth = (live["rss_mb_end"] - live["rss_mb_start"]) / live["rss_mb_start"]
    same_windows = batched["windows_processed"] == unbatched["windows_processed"]
    targets = {
        "all_frames_received": {"value": f"{live['frames_received']}/{live['frames_sent']}",
                                "pass": live["frames_received"] >= live["frames_sent"]},
        "model_loads": {"value": live["model_loads"], "pass": live["model_loads"] == 1},
        "output_age_s_max": {"value": live["output_age_s_max"], "limit": round(age_limit, 3),
                             "pass": live["output_age_s_max"] is not None and live["output_age_s_max"] <= age_limit},
        "rss_growth": {"value": round(growth, 4), "pass": growth <= 0.05},
        "wall_ratio_unbatched_over_batched_core": {"value": core_ratio, "node": ratio,
                                                   "pass": core_ratio >= 1.5 and len(set(core[0]["windows"])) == 1},
    }
    result = {**{k: live[k] for k in ("cameras", "frames_sent", "frames_received", "frames_decoded",
                                      "windows_processed", "windows_skipped", "model_loads", "inference_s_p50",
                                      "output_age_s_max", "output_age_s_p50", "callback_ms_p99", "rss_mb_start",
                                      "rss_mb_end")},
              "stride_s": STRIDE_S, "wall_ratio_unbatched_over_batched": ratio,
              "every_window_windows": [batched["windows_processed"], unbatched["windows_processed"]],
              "same_windows": same_windows, "wall_ratio_unbatched_over_batched_core": core_ratio, "core_ab": core,
              "targets": targets, "all_pass": all(t["pass"] for t in targets.values()),
              "runs": {"live_batched": live, "every_window_batched": batched, "every_window_unbatched": unbatched},
              "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg(), "python": platform.python_version()}}
    (OUT_DIR / "multicam.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [(k, str(round(v, 3) if isinstance(v, float) else v)) for k, v in result.items()
            if k not in ("targets", "runs", "host", "cameras", "core_ab")]
    rows += [(f"core A/B, {c['max_new_tokens']} new tokens",
              (f"{c['windows'][0]} windows: batched {c['busy_s_batched']} s, unbatched {c['busy_s_unbatched']} s, "
               f"ratio {c['ratio']}")) for c in core]
    rows += [(f"target {k}", f"{t['value']} {'PASS' if t['pass'] else 'MISS'}") for k, t in targets.items()]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    print(f"wrote {OUT_DIR / 'multicam.json'}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
