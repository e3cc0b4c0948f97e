"""The soak summaries' RSS slope (scripts/soak_stats.py) and glibc's heap account (molmo2_ros/core/heap.py): a
wrong slope would pass or fail a shift-long run on a number that does not mean what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.soak_stats import (ProcSampler, floor_slope_mb_per_hour, memstats_slopes,  # noqa: E402
                                rss_slope_mb_per_hour, shm_mapped_mb, where_it_goes)


def test_slope_is_mb_per_hour_after_the_warmup_only() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 1800.0, 1.0)
    # a steep warm-up (100 MB in 10 min), then 5 MB/h with a +-3 MB saw-tooth and noise
    rss = np.where(t < 600, 1000 + t / 6, 1100 + (t - 600) * 5 / 3600) + 3 * np.sin(t / 2) + rng.normal(0, 1, t.size)
    slope = rss_slope_mb_per_hour(list(zip(t, rss)), 600.0)
    assert slope == pytest.approx(5.0, abs=1.0)
    assert rss_slope_mb_per_hour(list(zip(t, rss)), 0.0) > 100  # the warm-up's growth would dominate


def test_slope_needs_two_samples_after_the_warmup() -> None:
    assert rss_slope_mb_per_hour([(0.0, 1.0), (10.0, 2.0)], 600.0) is None
    assert rss_slope_mb_per_hour([(600.0, 1.0)], 600.0) is None
    assert rss_slope_mb_per_hour([(600.0, 1.0), (660.0, 2.0)], 600.0) == pytest.approx(60.0)


def test_sampler_samples_this_process() -> None:
    sampler = ProcSampler(os.getpid(), period_s=0.05).start()
    while len(sampler.samples) < 3:
        pass
    samples = sampler.stop()
    assert all(mb > 1 and threads >= 2 for _, mb, threads in samples)  # the sampler's thread counts too
    assert [t for t, _, _ in samples] == sorted(t for t, _, _ in samples)


def test_floor_slope_sees_a_slow_drift_under_a_large_saw_tooth() -> None:
    """Heap trims every few seconds leave RSS swinging +-50 MB above a floor; a 5 MB/h rise of the floor is what
    stays. The floor slope finds it; a least-squares fit over a saw-tooth that is busier late in the run does not."""
    t = np.arange(0.0, 3600.0, 1.0)
    floor = 1000 + np.where(t < 600, 0.0, (t - 600) * 5 / 3600)
    busy = np.where(t > 2400, 100.0, 40.0)  # the swing grows when the node is busier
    rss = floor + busy * ((t % 7) / 7)
    assert floor_slope_mb_per_hour(list(zip(t, rss)), 600.0) == pytest.approx(5.0, abs=0.5)
    assert rss_slope_mb_per_hour(list(zip(t, rss)), 600.0) > 25
    assert floor_slope_mb_per_hour(list(zip(t, rss)), 3600.0) is None


def test_where_it_goes_splits_the_slope_by_part() -> None:
    t = np.arange(600.0, 3600.0, 10.0)
    parts = [(x, 700.0, 300.0, 70 + 20 * (x - 600) / 3000) for x in t]  # shared memory pages touched as they cycle
    where = where_it_goes([(x, a + f + s) for x, a, f, s in parts], parts, 600.0, 192.0)
    assert where["rss_part_slopes_mb_per_hour_after_warmup"] == {"anon": 0.0, "file": 0.0, "shmem": 24.0}
    assert where["rss_parts_mb_end"]["shmem"] == pytest.approx(90.0, abs=0.1) and where["shm_mapped_mb"] == 192.0
    # 3000 s after the warm-up in 10 s steps: ten whole 5-minute buckets, medians rising 2 MB each (20 MB in 3000 s)
    medians = where["rss_mb_medians_per_5min_after_warmup"]
    assert len(medians) == 10 and medians == pytest.approx([1071.0 + 2 * i for i in range(10)], abs=0.01)
    longer = [(x, 1000.0) for x in np.arange(600.0, 3700.0, 10.0)]  # 100 s into an eleventh bucket: not a median
    assert len(where_it_goes(longer, [], 600.0, None)["rss_mb_medians_per_5min_after_warmup"]) == 10


def test_sampler_splits_rss_and_sees_shared_memory_mappings(tmp_path) -> None:
    """This process maps a 4 MiB /dev/shm file and touches it: RssShmem and the mapped size both see it."""
    import mmap

    path = Path("/dev/shm") / f"molmo2_test_soak_{os.getpid()}"
    try:
        with open(path, "w+b") as f:
            f.truncate(4 << 20)
            region = mmap.mmap(f.fileno(), 4 << 20)
        region[:] = b"x" * (4 << 20)
        sampler = ProcSampler(os.getpid(), period_s=0.05).start()
        while len(sampler.parts) < 2:
            pass
        sampler.stop()
        assert shm_mapped_mb(os.getpid()) >= 4.0
        assert all(shmem >= 4.0 and anon > 1 for _, anon, _, shmem in sampler.parts)
        assert sampler.where(0.0)["shm_mapped_mb"] >= 4.0
        region.close()
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_info_sees_freed_heap() -> None:
    """In a fresh interpreter (a test session's heap already holds free chunks that would serve the allocation)."""
    code = ("import json; from molmo2_ros.core.heap import malloc_info; before = malloc_info(); "
            "kept = [bytearray(50_000) for _ in range(4000)]; "  # below the mmap threshold: from the heap
            "del kept[::2]; "  # half freed, each free chunk between live ones: glibc keeps it
            "print(json.dumps([before, malloc_info()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout)
    assert after["arenas"] >= 1 and after["system_mb"] >= before["system_mb"] + 150
    assert after["free_mb"] >= before["free_mb"] + 80


def test_memstats_lines_tell_a_python_leak_from_kept_heap() -> None:
    """A child keeps 2,000 more objects every period: its memstats lines (log_memory_stats) show Python's blocks
    and tracked objects growing, and memstats_slopes turns them into slopes after the warm-up."""
    code = ("import sys, time; from molmo2_ros.core.heap import log_memory_stats; kept = []\n"
            "class Holder:\n"
            "    def __init__(self): self.items = {}; self.recent = __import__('collections').deque(maxlen=10**6)\n"
            "holder = Holder(); log_memory_stats(0.2); t0 = time.monotonic()\n"
            "while time.monotonic() - t0 < 4.0:\n"
            "    kept.extend([[i] for i in range(2000)]); holder.items.update((len(holder.items) + i, i) "
            "for i in range(600)); holder.recent.extend(range(700)); time.sleep(0.2)\n")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    # a line every 0.2 s plus the scan's own time (0.1-0.5 s on a loaded 2-core machine)
    assert sum(line.startswith("memstats: ") for line in out.stderr.splitlines()) >= 4
    slopes = memstats_slopes(out.stderr, t0, 0.0)
    assert slopes["gc_objects"]["last"] - slopes["gc_objects"]["first"] >= 10_000
    assert slopes["gc_objects"]["per_hour"] > 0 and slopes["py_blocks"]["per_hour"] > 0
    assert {"system_mb", "free_mb", "in_use_mb", "mmap_mb"} <= set(slopes)
    assert memstats_slopes(out.stderr, t0, 3600.0) is None  # no line after the warm-up
    growing = [g for line in out.stderr.splitlines() if line.startswith("memstats: ")
               for g in json.loads(line.removeprefix("memstats: "))["growing"]]
    assert any(g.startswith("__main__.kept (list) +") for g in growing)  # where the growth is, by name
    assert any(g.startswith("Holder.items (dict) +") for g in growing)
    assert any(g.startswith("Holder.recent (deque) +") for g in growing)  # held by an instance's own slot
    assert slopes["growing"]["__main__.kept (list)"]["dumps"] >= 3
    assert slopes["growing"]["Holder.items (dict)"]["len_last"] >= 2000


def test_memstats_slopes_under_a_preloaded_allocator() -> None:
    """With jemalloc preloaded the memstats lines carry no glibc heap keys (heap.malloc_info is empty): the slopes
    are Python's only, and the allocator is named (the soak summary used to fail on the missing keys)."""
    lines = "\n".join("memstats: " + json.dumps({"monotonic": 100.0 + 60 * i, "py_blocks": 1000 + 10 * i,
                                                 "gc_objects": 500, "allocator": "jemalloc", "growing": []})
                      for i in range(4))
    slopes = memstats_slopes(lines, 100.0, 0.0)
    assert slopes["allocator"] == "jemalloc" and slopes["dumps"] == 4
    assert slopes["py_blocks"] == {"first": 1000, "last": 1030, "per_hour": 600.0}
    assert not {"system_mb", "free_mb", "in_use_mb", "mmap_mb"} & set(slopes)


def test_memstats_slopes_under_tcmalloc() -> None:
    """tcmalloc's account (heap.tcmalloc_info: held and free, no mmap-ed chunks) gives the heap slopes as glibc's
    does: a high-water mark (held and free grow, in use flat) tells itself from a native leak."""
    lines = "\n".join("memstats: " + json.dumps({"monotonic": 100.0 + 60 * i, "py_blocks": 1000, "gc_objects": 500,
                                                 "allocator": "tcmalloc", "system_mb": 700 + 2 * i,
                                                 "free_mb": 100 + 2 * i, "growing": []})
                      for i in range(4))
    slopes = memstats_slopes(lines, 100.0, 0.0)
    assert slopes["allocator"] == "tcmalloc" and "mmap_mb" not in slopes
    assert slopes["system_mb"]["per_hour"] == slopes["free_mb"]["per_hour"] == 120.0
    assert slopes["in_use_mb"] == {"first": 600, "last": 600, "per_hour": 0.0}
