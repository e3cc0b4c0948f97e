"""Soak: scripts/soak.py (30 Hz 640x480 camera process -> live node with the tiny Molmo2 on the CPU). A short run
(SOAK_S=30) is part of the default suite; the full length (SOAK_S, default 1800 s) is marked `soak`
(`pytest -m soak test/test_reliability_soak.py`, or `make soak` for the script alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
KEYS = {"rss_mb_start", "rss_mb_end", "threads_start", "threads_end", "frames_in", "frames_dropped_by_reason",
        "windows_processed", "windows_skipped", "crashes"}


def run_soak(seconds: float, warmup: float | None = None) -> dict:
    env = {**os.environ, "SOAK_S": str(seconds)}
    if warmup is not None:
        env["SOAK_WARMUP_S"] = str(warmup)
    out = subprocess.run([sys.executable, str(SOAK)], env=env, capture_output=True, text=True,
                         timeout=seconds + 300)
    lines = out.stdout.strip().splitlines()
    assert lines, f"soak printed nothing (exit {out.returncode}):\n{out.stderr[-3000:]}"
    summary = json.loads(lines[-1])
    print(f"soak {seconds:.0f} s: {lines[-1]}")
    assert KEYS <= set(summary), summary
    assert out.returncode == 0, f"{summary}\n{out.stderr[-3000:]}"
    return summary


def _check(s: dict, seconds: float) -> None:
    assert s["crashes"] == 0
    assert s["rss_mb_end"] <= s["rss_mb_start"] * 1.05 and s["threads_end"] <= s["threads_start"] * 1.05, s
    assert s["frames_in"] >= 0.9 * 30 * seconds, s  # the SHM profile delivers 640x480 at 30 Hz
    assert sum(s["frames_dropped_by_reason"].values()) == s["frames_sent"] - s["frames_in"], s  # only transport
    assert s["windows_processed"] >= seconds / 2, s  # a clip per second of stream (stride 1 s)
    assert s["clips"] == s["windows_processed"] + s["windows_skipped"] + s["inference_errors"], s


def test_short_soak(ros_env):
    _check(run_soak(30.0, warmup=8.0), 30.0)


@pytest.mark.soak
def test_full_soak(ros_env):
    seconds = float(os.environ.get("SOAK_S", "1800"))
    _check(run_soak(seconds), seconds)
