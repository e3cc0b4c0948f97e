#!/usr/bin/env python3
"""Multi-camera soak: the multi-camera bench's cameras (bench/bench_multicam.py: 2 x 720p rgb8 30 Hz + 2 x 480p JPEG
15 Hz) into one live molmo2 node (tiny random Molmo2 on the CPU) for SOAK_S seconds, to see whether the node's
memory keeps growing after warm-up over a robot's shift (issue 29). The node run is the bench's own (`run`).

    SOAK_S=3600 scripts/with_ros .venv/bin/python scripts/soak_multicam.py      (or: make soak-multicam)

Environment: SOAK_S (length in s, default 3600), SOAK_WARMUP_S (default 600: RSS samples from then on give the
slope), SOAK_SCHEDULE (live, the robot setting, or every_window), SOAK_PARAMS (extra node parameters,
space-separated NAME:=VALUE), SOAK_ALLOCATOR (the malloc of the node and cameras, as the launch argument `allocator`:
default auto, i.e. tcmalloc where installed; glibc, jemalloc, tcmalloc). The node inherits this environment (e.g.
MALLOC_ARENA_MAX for a glibc A/B with SOAK_ALLOCATOR=glibc; MOLMO2_TRACEMALLOC_S to have it log tracemalloc
differences, see molmo2_ros/core/heap.py). MOLMO2_MEMSTATS_S
(default 60; 0 turns it off) has the node log Python's and the allocator's memory account, summarized as `memstats`.

Prints progress on stderr and, as its LAST stdout line, one JSON object: seconds, frames_sent, frames_received,
windows_processed, windows_skipped, crashes, rss_mb_start, rss_mb_end (the first and last sample after the
cameras started), rss_mb_slope_per_hour_after_warmup (least-squares, None when the run is not longer than the
warm-up), threads_start, threads_end, where the memory went (scripts/soak_stats.py where_it_goes: the slope of
each minute's lowest RSS, the slopes of RSS's anon/file/shmem parts, the shared memory mapped), plus latencies and
per_camera (frames sent/received/decoded, windows and latencies of each camera: which one lost frames).
Exit status 1 on a crash or a frame not received, else 0 (the slope is a figure to read, not a pass/fail).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_multicam import OUT_DIR, run  # noqa: E402 (puts test/ on sys.path for helpers)
from helpers.ros_env import ros_environment  # noqa: E402
from molmo2_ros.ros.environment import AUTO_ALLOCATOR, allocator_env  # noqa: E402
from scripts.soak_stats import memstats_slopes, rss_slope_mb_per_hour, where_it_goes  # noqa: E402
from scripts.tiny_model import build_tiny_model  # noqa: E402

KEPT = ("rss_split_mb_start", "rss_split_mb_end", "rss_mb_peak", "inference_s_p50", "output_age_s_max",
        "callback_ms_p99", "heap_trim", "feature_cache_host_mb", "node_exit_code", "per_camera")


def summarize(result: dict, seconds: float, warmup_s: float) -> dict:
    """The soak summary of one bench run (`run`'s result)."""
    samples = result["samples"]
    return {"seconds": round(seconds, 1), "schedule": result["schedule"], "extra_params": result["extra_params"],
            **{k: result[k] for k in ("frames_sent", "frames_received", "windows_processed", "windows_skipped")},
            "crashes": int(result["node_exit_code"] != 0),
            "rss_mb_start": round(samples[0][1], 1), "rss_mb_end": round(samples[-1][1], 1),
            "rss_mb_slope_per_hour_after_warmup": rss_slope_mb_per_hour([(t, mb) for t, mb, _ in samples], warmup_s),
            "warmup_s": warmup_s, "threads_start": samples[0][2], "threads_end": samples[-1][2],
            **where_it_goes([(t, mb) for t, mb, _ in samples], result["rss_parts"], warmup_s, result["shm_mapped_mb"]),
            "memstats": memstats_slopes(Path(result["node_log"]).read_text(errors="replace"), result["t0_monotonic"],
                                        warmup_s),
            **{k: result[k] for k in KEPT}}


def main() -> int:
    seconds = float(os.environ.get("SOAK_S", "3600"))
    warmup_s = float(os.environ.get("SOAK_WARMUP_S", "600"))
    schedule = os.environ.get("SOAK_SCHEDULE", "live")
    extra = tuple(os.environ.get("SOAK_PARAMS", "").split())
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="molmo2_soak_multicam_"))
    started = time.monotonic()
    try:
        with ros_environment(tmp / "ros_home") as ros:
            env = {"MOLMO2_MEMSTATS_S": "60", **ros, "PYTHONUNBUFFERED": "1",
                   **allocator_env(os.environ.get("SOAK_ALLOCATOR", AUTO_ALLOCATOR), ros)}
            print(f"soak-multicam: {seconds:.0f} s, schedule {schedule}, warm-up {warmup_s:.0f} s, domain "
                  f"{env['ROS_DOMAIN_ID']}, node log in {OUT_DIR}", file=sys.stderr, flush=True)
            result = run(seconds, schedule, True, env, build_tiny_model(tmp / "tiny"), tmp, extra)
        summary = summarize(result, time.monotonic() - started, warmup_s)
        (OUT_DIR / f"soak_multicam_{schedule}_samples.json").write_text(
            json.dumps({"samples": result["samples"], "rss_parts": result["rss_parts"]}) + "\n")
    except Exception as error:  # noqa: BLE001 - a node that died or stopped answering: a crash in the summary
        summary = {"seconds": round(time.monotonic() - started, 1), "schedule": schedule, "crashes": 1,
                   **dict.fromkeys(("frames_sent", "frames_received", "windows_processed", "windows_skipped",
                                    "rss_mb_start", "rss_mb_end", "rss_mb_slope_per_hour_after_warmup",
                                    "threads_start", "threads_end")), "error": str(error)[-500:]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return 1 if summary["crashes"] or summary["frames_received"] < summary["frames_sent"] else 0


if __name__ == "__main__":
    sys.exit(main())
