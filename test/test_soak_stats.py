"""The soak summaries' RSS slope (scripts/soak_stats.py) and glibc's heap account (molmo2_ros/core/heap.py): a
wrong slope would pass or fail a shift-long run on a number that does not mean what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.soak_stats import ProcSampler, rss_slope_mb_per_hour  # noqa: E402


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
