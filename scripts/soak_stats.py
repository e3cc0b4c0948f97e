"""What both soak runs (scripts/soak.py: one camera, scripts/soak_multicam.py: the multi-camera bench's four)
measure of the node process, in one place so their summaries mean the same: periodic RSS/thread samples and the
least-squares RSS slope after a warm-up (a start/end difference hides a slow drift behind the saw-tooth of heap
trims; a slope over every sample does not), and where a drift goes: the slope of RSS's parts (anonymous memory,
mapped files, shared memory such as the Fast DDS segments), the slope of each minute's lowest RSS (what stays after
the heap trims, without their saw-tooth), and the size of the shared memory mapped (RssShmem cannot grow past it).
Pure: no ROS, so a unit test can check it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np


PARTS = ("anon", "file", "shmem")  # RssAnon, RssFile, RssShmem


def proc_stats(pid: int) -> dict:
    """RSS (MB), its parts (MB: anon, file, shmem) and thread count of a process, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    mb = {part: int(fields[f"Rss{part.capitalize()}"].split()[0]) / 1024.0 for part in PARTS}
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]), **mb}


def shm_mapped_mb(pid: int) -> float:
    """Total size (MB) of the process's mappings of /dev/shm files: the bound on its RssShmem."""
    total = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            total += hi - lo
    return total / 2**20


def rss_slope_mb_per_hour(samples: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Least-squares slope (MB per hour) of (seconds, rss_mb) samples taken at or after `warmup_s` seconds; None
    with fewer than two such samples (a run shorter than its warm-up)."""
    after = np.array([(t, mb) for t, mb in samples if t >= warmup_s], dtype=float).reshape(-1, 2)
    if len(after) < 2 or np.ptp(after[:, 0]) == 0:
        return None
    return float(np.polyfit(after[:, 0], after[:, 1], 1)[0] * 3600.0)


def floor_slope_mb_per_hour(samples: list[tuple[float, float]], warmup_s: float,
                            bucket_s: float = 60.0) -> float | None:
    """rss_slope_mb_per_hour of the lowest sample of each `bucket_s` after the warm-up (placed at the bucket's
    middle): memory that stays between heap trims, not the saw-tooth above it."""
    buckets: dict[int, float] = {}
    for t, mb in samples:
        if t >= warmup_s:
            b = int((t - warmup_s) // bucket_s)
            buckets[b] = min(mb, buckets.get(b, mb))
    return rss_slope_mb_per_hour([(warmup_s + (b + 0.5) * bucket_s, mb) for b, mb in buckets.items()], warmup_s)


def medians_mb(samples: list[tuple[float, float]], warmup_s: float, bucket_s: float = 300.0) -> list[float]:
    """The median RSS of each whole `bucket_s` after the warm-up: the level over the hour, which a least-squares
    slope under the heap trims' saw-tooth does not show by itself."""
    buckets: dict[int, list[tuple[float, float]]] = {}
    for t, mb in samples:
        if t >= warmup_s:
            buckets.setdefault(int((t - warmup_s) // bucket_s), []).append((t, mb))
    whole = [b for b in sorted(buckets)  # samples over at least 95 % of it: a run's last partial bucket would bias
             if buckets[b][-1][0] - buckets[b][0][0] >= 0.95 * bucket_s]
    return [round(float(np.median([mb for _, mb in buckets[b]])), 1) for b in whole]


class ProcSampler:
    """Samples a process's RSS and threads every `period_s` on a daemon thread; times are seconds since start()."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float, int]] = []  # seconds, rss_mb, threads
        self.parts: list[tuple[float, ...]] = []  # seconds, then MB of each of PARTS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc_sampler", daemon=True)

    def start(self) -> ProcSampler:
        self.t0 = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the node's memstats lines use the same clock
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = proc_stats(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return  # the process is gone: the caller counts that as a crash
            t = time.monotonic() - self.t0
            self.samples.append((t, stats["rss_mb"], stats["threads"]))
            self.parts.append((t, *(stats[part] for part in PARTS)))
            self._stop.wait(self.period_s)

    def stop(self) -> list[tuple[float, float, int]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return list(self.samples)

    def slope(self, warmup_s: float) -> float | None:
        """rss_slope_mb_per_hour of the samples so far."""
        return rss_slope_mb_per_hour([(t, mb) for t, mb, _ in self.samples], warmup_s)

    def where(self, warmup_s: float) -> dict:
        """Where the memory after the warm-up went (where_it_goes), with the shared memory mapped now."""
        try:
            mapped = shm_mapped_mb(self.pid)
        except OSError:  # the process is gone
            mapped = None
        return where_it_goes([(t, mb) for t, mb, _ in self.samples], self.parts, warmup_s, mapped)


def where_it_goes(samples: list[tuple[float, float]], parts: list[tuple[float, ...]], warmup_s: float,
                  shm_mapped: float | None) -> dict:
    """The soak summaries' attribution keys: slopes (MB per hour, after the warm-up) of the minute floors and of
    each part of RSS, the 5-minute medians, from (seconds, rss_mb) samples and (seconds, anon, file, shmem) parts; the parts at the end and
    the shared memory mapped (MB, the bound on the shmem part)."""
    slopes = {part: rss_slope_mb_per_hour([(p[0], p[1 + i]) for p in parts], warmup_s) for i, part in enumerate(PARTS)}
    return {"rss_mb_floor_slope_per_hour_after_warmup": floor_slope_mb_per_hour(samples, warmup_s),
            "rss_mb_medians_per_5min_after_warmup": medians_mb(samples, warmup_s),
            "rss_part_slopes_mb_per_hour_after_warmup": {k: None if v is None else round(v, 2)
                                                         for k, v in slopes.items()},
            "rss_parts_mb_end": dict(zip(PARTS, (round(x, 1) for x in parts[-1][1:]))) if parts else None,
            "shm_mapped_mb": None if shm_mapped is None else round(shm_mapped, 1)}


MEMSTATS = ("py_blocks", "gc_objects", "system_mb", "free_mb", "in_use_mb", "mmap_mb")


def memstats_slopes(log_text: str, t0_monotonic: float, warmup_s: float) -> dict | None:
    """From a node log with `memstats: {json}` lines (env MOLMO2_MEMSTATS_S, molmo2_ros/core/heap.py): per hour
    after the warm-up, the slopes of Python's blocks and tracked objects and of the allocator's heap (held from the
    OS, free inside it, in use = held - free; glibc's mmap-ed chunks too), with the first and last value after the
    warm-up; None without two such lines. tcmalloc's account has no mmap_mb; jemalloc's is not read (Python's keys
    only). `allocator` names the one in the lines."""
    rows = []
    for line in log_text.splitlines():
        if line.startswith("memstats: "):
            stats = json.loads(line.removeprefix("memstats: "))
            if "system_mb" in stats:
                stats["in_use_mb"] = stats["system_mb"] - stats["free_mb"]
            if stats["monotonic"] - t0_monotonic >= warmup_s:
                rows.append(stats)
    if len(rows) < 2:
        return None
    out = {"allocator": rows[-1].get("allocator", "glibc")}
    for key in (k for k in MEMSTATS if k in rows[0]):
        slope = rss_slope_mb_per_hour([(r["monotonic"] - t0_monotonic, r[key]) for r in rows], warmup_s)
        out[key] = {"first": rows[0][key], "last": rows[-1][key],
                    "per_hour": None if slope is None else round(slope, 1)}
    # containers that kept growing: in how many dumps after the warm-up each grew, and its last length
    grew: dict[str, dict] = {}
    for r in rows:
        for line in r.get("growing", []):
            name, _, length = line.rpartition(" -> ")
            name = name.rpartition(" +")[0]
            grew.setdefault(name, {"dumps": 0})["dumps"] += 1
            grew[name]["len_last"] = int(length)
    out["growing"] = dict(sorted(grew.items(), key=lambda kv: -kv[1]["dumps"])[:8])
    out["dumps"] = len(rows)
    return out
