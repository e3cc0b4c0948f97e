"""Stale shared-memory segments left in /dev/shm by processes the tests kill on purpose.

Fast DDS (data-sharing and SHM-transport segments, their port files and semaphores) and vLLM (multiprocessing
`psm_*` ring buffers) unlink their segments at a clean exit only. The tests SIGKILL nodes and servers, and each
leaked segment keeps its RAM: one CI run left about 4 GB, and over a day of runs /dev/shm held 20 GB and the
kernel OOM-killed a vLLM server. So they are removed before and after a test session, but only the ones no live
process uses, which takes more than "not mapped": a Fast DDS port or data-sharing segment `<base>` comes with its
lock file `<base>_el` (flock-ed by the live owner, never mapped) and its named semaphore `sem.<base>_mutex` (opened
only while a message is pushed, so usually neither mapped nor locked). Deleting those of a live node (as the first
version did, for anything unmapped older than 30 s) made a new participant take over the port of a live listener:
frames stopped reaching a node that ran beside a test session. Now a whole group (`<base>`, its `_el`/`_sl` lock
files and its semaphore) stays while any of its files is mapped or locked (/proc/locks).
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


def locked_inodes() -> set[tuple[int, int]]:
    """(device, inode) of every file some process holds a lock on (/proc/locks: `MAJ:MIN:INODE`, hex device)."""
    locked: set[tuple[int, int]] = set()
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                ids = next((f for f in fields if f.count(":") == 2), "")
                if ids:
                    major, minor, inode = ids.split(":")
                    locked.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
    except OSError:
        pass
    return locked


def group_of(name: str) -> str:
    """The segment a file belongs to: `fastdds_port7000` for itself, its `_el`/`_sl` lock files and its
    `sem.fastdds_port7000_mutex` semaphore."""
    name = name.removeprefix("sem.")
    for suffix in ("_el", "_sl", "_mutex"):
        name = name.removesuffix(suffix)
    return name


def remove_stale_segments() -> tuple[int, int]:
    """Remove the Fast DDS and vLLM segments no live process uses (module docstring); returns (files removed,
    bytes freed)."""
    if not SHM.is_dir():
        return 0, 0
    mapped, locked = mapped_paths(), locked_inodes()
    entries = [e for e in SHM.iterdir() if e.name.startswith(PREFIXES)]
    in_use: set[str] = set()
    for entry in entries:
        try:
            stat = entry.stat()
        except OSError:
            continue
        if str(entry) in mapped or (stat.st_dev, stat.st_ino) in locked:
            in_use.add(group_of(entry.name))
    removed = freed = 0
    for entry in entries:
        if group_of(entry.name) in in_use:
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
