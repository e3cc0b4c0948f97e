"""Stale shared-memory segments left in /dev/shm by processes the tests kill on purpose.

Fast DDS (data-sharing and SHM-transport segments, their port files and semaphores) and vLLM (multiprocessing
`psm_*` ring buffers) unlink their segments at a clean exit only. The tests SIGKILL nodes and servers, and each
leaked segment keeps its RAM: one CI run left about 4 GB, and over a day of runs /dev/shm held 20 GB and the
kernel OOM-killed a vLLM server. A segment that no live process maps is garbage (every user of these segments,
semaphores included, keeps it mapped while it uses it), so it is removed before and after a test session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM = Path("/dev/shm")
PREFIXES = ("fast_datasharing_", "fastrtps_", "fastdds_", "sem.fastrtps_", "sem.fastdds_", "psm_")
MIN_AGE_S = 30.0  # a segment younger than this may be between its creation and its first mapping


def mapped_paths() -> set[str]:
    """Every /dev/shm file that some process on this host (that we can see) has mapped."""
    mapped: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        mapped.add(line[i:].rstrip("\n").removesuffix(" (deleted)"))
        except OSError:  # the process ended meanwhile, or it is not ours to read
            continue
    return mapped


def remove_stale_segments() -> tuple[int, int]:
    """Remove the Fast DDS and vLLM segments no process maps; returns (files removed, bytes freed)."""
    if not SHM.is_dir():
        return 0, 0
    in_use = mapped_paths()
    removed = freed = 0
    for entry in SHM.iterdir():
        if not entry.name.startswith(PREFIXES) or str(entry) in in_use:
            continue
        try:
            stat = entry.stat()
            if time.time() - stat.st_mtime < MIN_AGE_S:
                continue
            size = stat.st_blocks * 512
            entry.unlink()
        except OSError:
            continue
        removed += 1
        freed += size
    return removed, freed
