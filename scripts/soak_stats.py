"""What both soak runs (scripts/soak.py: one camera, scripts/soak_multicam.py: the multi-camera bench's four)
measure of the node process, in one place so their summaries mean the same: periodic RSS/thread samples and the
least-squares RSS slope after a warm-up (a start/end difference hides a slow drift behind the saw-tooth of heap
trims; a slope over every sample does not). Pure: no ROS, so a unit test can check it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np


def proc_stats(pid: int) -> dict:
    """RSS (MB) and thread count of a process, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"])}


def rss_slope_mb_per_hour(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Least-squares slope (MB per hour) of (seconds, rss_mb) samples taken at or after `warmup_s` seconds; None
    with fewer than two such samples (a run shorter than its warm-up)."""
    after = np.array([(t, mb) for t, mb in samples if t >= warmup_s], dtype=float).reshape(-1, 2)
    if len(after) < 2 or np.ptp(after[:, 0]) == 0:
        return None
    return float(np.polyfit(after[:, 0], after[:, 1], 1)[0] * 3600.0)


class ProcSampler:
    """Samples a process's RSS and threads every `period_s` on a daemon thread; times are seconds since start()."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float, int]] = []  # seconds, rss_mb, threads
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc_sampler", daemon=True)

    def start(self) -> ProcSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = proc_stats(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return  # the process is gone: the caller counts that as a crash
            self.samples.append((time.monotonic() - self._t0, stats["rss_mb"], stats["threads"]))
            self._stop.wait(self.period_s)

    def stop(self) -> list[tuple[float, float, int]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return list(self.samples)

    def slope(self, warmup_s: float) -> float | None:
        """rss_slope_mb_per_hour of the samples so far."""
        return rss_slope_mb_per_hour([(t, mb) for t, mb, _ in self.samples], warmup_s)
