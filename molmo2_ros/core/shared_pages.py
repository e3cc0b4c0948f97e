"""Keep the pages of Fast DDS shared-memory segments out of the node's resident size once they are read.

Why: with the shared-memory transport (config/fastdds_shm.xml) a publisher writes each message into its own
segment (64 MiB) and the node reads it there. The kernel counts a segment page in the node's RSS (RssShmem) from
the first time the node reads it and keeps counting it, so as a camera's allocator places images in parts of its
segment not used before, a four-camera node's RSS rose about 54 MB an hour, up to the size of the segments it maps
(about 200 MB with the bench's cameras), while the node's own memory stayed flat (bench/README.md). No memory is
allocated by that growth: the pages belong to the segments, counted once system-wide.

madvise(MADV_DONTNEED) on a *shared* mapping drops this process's page-table entries only: the data stays in the
segment and the next read maps the page again (a minor fault). Releasing now and then makes RSS count the segment
pages read since the last release, so it shows the memory the node owns. Private (copy-on-write) mappings are never
touched: there MADV_DONTNEED would discard data. Python's mmap.madvise covers only mappings Python made, hence
ctypes. Each mapping is released as soon as its line of /proc/self/maps is read: the one race left is Fast DDS
unmapping that segment and a private mapping taking its exact address within those microseconds; segments are
unmapped when their publisher goes away, so a node whose cameras restart often can turn this off
(`release_dds_shared_pages`).
"""

from __future__ import annotations

import collections.abc
import ctypes
import re
import threading
import time

from molmo2_ros.core.heap import libc

# Fast DDS 3.x (Kilted) names its segments /dev/shm/fastdds_<hex>, 2.x (Humble, Jazzy) /dev/shm/fastrtps_<hex>;
# port files (fastdds_port<N>) hold the small notification rings and are left alone.
SEGMENT_PATH = re.compile(r"/dev/shm/fast(?:dds|rtps)_[0-9a-f]+")
MADV_DONTNEED = 4  # the same value on every Linux architecture


def _madvise():
    """libc's madvise, or None where the C library has none."""
    lib = libc()
    try:
        madvise = lib.madvise
    except AttributeError:  # also lib None
        return None
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return madvise


def segment_mappings(maps: str = "/proc/self/maps",
                     path: re.Pattern = SEGMENT_PATH) -> collections.abc.Iterator[tuple[int, int]]:
    """(start address, length) of the shared mappings in `maps` whose file matches `path`, each yielded as soon as
    its line is read. Nothing where there is no procfs (not Linux)."""
    try:
        lines = open(maps)
    except OSError:
        return
    with lines:
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[1][3] == "s" and path.fullmatch(fields[5].rstrip("\n")):
                start, end = (int(a, 16) for a in fields[0].split("-"))
                yield start, end - start


def rss_shmem_mb(status: str = "/proc/self/status") -> float:
    """This process's RssShmem in MB (-1 where procfs has no such line)."""
    try:
        with open(status) as lines:
            for line in lines:
                if line.startswith("RssShmem:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


class SharedPageReleaser:
    """Drops this process's page-table entries of the shared mappings whose file matches `path` (Fast DDS
    segments by default) and keeps, for diagnostics, the calls, their mean and max cost, the size mapped and the
    RssShmem given back by the last call."""

    def __init__(self, path: re.Pattern = SEGMENT_PATH) -> None:
        self._madvise = _madvise()
        self._path = path
        self._lock = threading.Lock()
        self.calls = 0
        self.mapped_mb = 0.0
        self.released_mb = 0.0
        self._ms_total = 0.0
        self._ms_max = 0.0

    def release(self) -> float:
        """Release every matching mapping; returns the MB of RssShmem given back (0 when unavailable)."""
        if self._madvise is None:
            return 0.0
        started, before, mapped = time.perf_counter(), rss_shmem_mb(), 0
        for start, length in segment_mappings(path=self._path):
            self._madvise(start, length, MADV_DONTNEED)  # fails only for a mapping unmapped meanwhile: nothing to do
            mapped += length
        released = max(0.0, before - rss_shmem_mb())
        ms = (time.perf_counter() - started) * 1e3
        with self._lock:
            self.calls += 1
            self.mapped_mb = mapped / 2**20
            self.released_mb = released
            self._ms_total += ms
            self._ms_max = max(self._ms_max, ms)
        return released

    def values(self) -> dict[str, str]:
        """Diagnostics key/values."""
        if self._madvise is None:
            return {"shm_release": "unavailable (no madvise in this C library)"}
        with self._lock:
            return {"shm_release_calls": str(self.calls), "shm_mapped_mb": f"{self.mapped_mb:.1f}",
                    "shm_released_mb_last": f"{self.released_mb:.1f}",
                    "shm_release_ms_mean": f"{self._ms_total / self.calls if self.calls else 0.0:.2f}",
                    "shm_release_ms_max": f"{self._ms_max:.2f}"}
