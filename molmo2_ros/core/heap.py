"""Give freed heap memory back to the operating system (glibc's `malloc_trim`), tell which malloc serves the
process, and read its account of the heap (glibc's malloc_info, tcmalloc's numeric properties).

Why: a node with several cameras frees megabyte-sized buffers (serialized messages, decoded frames, activations)
at camera rate on several threads. glibc keeps those freed chunks inside its heaps when smaller live allocations
sit around them, so the resident size of a four-camera node climbed about 0.5 MB per window although no Python
object leaked (tracemalloc: traced memory flat; bench/README.md). `malloc_trim(0)` returns every whole free page
inside the heaps (glibc >= 2.8), which a fixed `mmap` threshold or fewer arenas did not do without slowing
inference. There is no Python or library API for it, hence ctypes; on a C library without it (musl, macOS)
trimming is unavailable and says so. Under a preloaded allocator (tcmalloc, which the launch's default
`allocator:=auto` preloads, or jemalloc) glibc's heap holds nothing: there is nothing to trim, and diagnostics say so.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import re
import sys
import threading
import time
import tracemalloc
import types
from collections import deque


# Shared objects of the allocators people preload into ROS nodes (LD_PRELOAD) instead of glibc's malloc.
PRELOADED_ALLOCATORS = {"libjemalloc": "jemalloc", "libtcmalloc": "tcmalloc", "libmimalloc": "mimalloc"}


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library's functions as this process resolves them (dlopen(NULL)), None where that fails. Resolved this
    way, malloc and free are the preloaded allocator's when there is one: memory that libc allocates inside a call
    (open_memstream) is then freed by the allocator that made it. Opening libc.so.6 by name would give glibc's free
    for jemalloc's memory, which aborts the process ("free(): invalid pointer")."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


@functools.cache
def allocator(maps: str = "/proc/self/maps") -> str:
    """Which malloc serves this process: "jemalloc", "tcmalloc" or "mimalloc" when its library is mapped (preloaded),
    else "glibc" ("unknown" without procfs)."""
    try:
        text = open(maps).read()
    except OSError:
        return "unknown"
    return next((name for lib, name in PRELOADED_ALLOCATORS.items() if f"/{lib}" in text), "glibc")


def _glibc_malloc() -> ctypes.CDLL | None:
    """libc() where glibc's malloc serves this process, else None: another C library, or an allocator preloaded
    (glibc's heap then holds none of the process's memory)."""
    lib = libc()
    return lib if lib is not None and allocator() == "glibc" else None


def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none or another allocator serves malloc (that allocator
    manages its own: jemalloc gives freed memory back after its decay time, tcmalloc keeps its high-water mark and
    gives it back only slowly)."""
    lib = _glibc_malloc()
    if lib is None:
        return None
    try:
        trim = lib.malloc_trim
    except AttributeError:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls malloc_trim(0) on demand and keeps its cost (count, mean and max milliseconds) for diagnostics."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._lock = threading.Lock()
        self.calls = 0
        self._ms_total = 0.0
        self._ms_max = 0.0
        self._trimmed_at = time.monotonic()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> bool:
        """Return free heap pages to the OS; True if any memory was released (False also when unavailable)."""
        if self._trim is None:
            return False
        started = time.perf_counter()
        released = bool(self._trim(0))
        ms = (time.perf_counter() - started) * 1e3
        with self._lock:
            self.calls += 1
            self._ms_total += ms
            self._ms_max = max(self._ms_max, ms)
        return released

    def trim_every(self, period_s: float, now: float) -> bool:
        """Trim when `period_s` (> 0) has passed since the last trim by this call, give or take half a second (a
        caller ticking once a second trims on the tick nearest the period); True when it was time."""
        if period_s > 0 and now - self._trimmed_at >= period_s - 0.5:
            self.trim()
            self._trimmed_at = now
            return True
        return False

    def values(self) -> dict[str, str]:
        """Diagnostics key/values: the allocator serving malloc, and the trims' calls, mean and max cost."""
        if self._trim is None:
            return {"allocator": allocator(), "heap_trim": f"unavailable (no malloc_trim with allocator {allocator()})"}
        with self._lock:
            mean = self._ms_total / self.calls if self.calls else 0.0
            return {"allocator": allocator(), "heap_trim_calls": str(self.calls), "heap_trim_ms_mean": f"{mean:.2f}",
                    "heap_trim_ms_max": f"{self._ms_max:.2f}"}


def malloc_info() -> dict[str, int]:
    """glibc's own account of its heap (malloc_info): arenas, bytes it holds from the OS, and how much of that is
    free inside it (freed chunks not given back: fragmentation when it grows with RSS). Empty without glibc's
    malloc (another C library, or an allocator preloaded: glibc's heap is then not where the memory is)."""
    lib = _glibc_malloc()
    if lib is None:
        return {}
    try:
        buf, size = ctypes.c_char_p(), ctypes.c_size_t()
        lib.open_memstream.restype = ctypes.c_void_p
        stream = lib.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        lib.malloc_info(0, ctypes.c_void_p(stream))
        lib.fclose(ctypes.c_void_p(stream))
        xml = ctypes.string_at(buf, size.value).decode()
        lib.free(buf)
    except AttributeError:
        return {}
    tail = xml[xml.rfind("</heap>"):]  # the totals over all arenas follow the last heap
    free = sum(int(n) for n in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', tail))
    current = re.search(r'<system type="current" size="(\d+)"', tail)
    mmap = re.search(r'<total type="mmap" count="\d+" size="(\d+)"', tail)
    return {"arenas": xml.count("<heap nr="), "system_mb": int(current.group(1)) >> 20 if current else -1,
            "free_mb": free >> 20, "mmap_mb": int(mmap.group(1)) >> 20 if mmap else -1}


def tcmalloc_info() -> dict[str, int]:
    """A preloaded tcmalloc's account of its heap in malloc_info's terms: bytes it holds from the OS (mapped, so
    resident once touched) and how much of that is free inside it (page heap and caches: a high-water mark it
    keeps when that grows with RSS, a native leak when the rest grows). Empty without tcmalloc."""
    lib = libc() if allocator() == "tcmalloc" else None
    try:
        get = lib.MallocExtension_GetNumericProperty  # gperftools' C API (malloc_extension_c.h)
    except AttributeError:  # lib None, or a tcmalloc without the C API
        return {}
    get.argtypes, get.restype = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)], ctypes.c_int
    value = ctypes.c_size_t()
    numbers = []
    # in use first: read while other threads allocate, held then covers it
    for name in ("generic.current_allocated_bytes", "generic.heap_size", "tcmalloc.pageheap_unmapped_bytes"):
        if not get(name.encode(), ctypes.byref(value)):
            return {}
        numbers.append(value.value)
    in_use, size, unmapped = numbers
    held = size - unmapped
    return {"system_mb": held >> 20, "free_mb": max(0, held - in_use) >> 20}


def heap_account() -> dict[str, int]:
    """The account of the allocator serving malloc: glibc's malloc_info or tcmalloc's (empty under jemalloc)."""
    return malloc_info() or tcmalloc_info()


def memory_stats(objects: list | None = None) -> dict:
    """Python's and the allocator's account of this process's memory, cheap enough to take once a minute in a live
    node (unlike tracemalloc): pymalloc blocks in use, objects the garbage collector tracks (`objects`: that list
    when the caller has it), heap_account()."""
    return {"monotonic": round(time.monotonic(), 1), "py_blocks": sys.getallocatedblocks(),
            "gc_objects": len(gc.get_objects() if objects is None else objects), "allocator": allocator(),
            **heap_account()}


class GrowingContainers:
    """Names the Python containers (list, dict, set, deque) of at least `min_len` items that grew since the
    previous call: a slow Python leak is usually one container that is never pruned, which object counts alone do
    not show (its items may be untracked ints and strings). Dicts of such atomic items are not tracked by the
    garbage collector either: they are found as attributes of tracked instances (gc.get_referents, which does not
    materialize an instance's dict) and as values of tracked dicts. Costs a pass over the tracked objects plus
    `gc.get_referrers` passes per named container (~0.1-0.3 s with 500 k objects): an investigation aid."""

    def __init__(self, min_len: int = 500, top: int = 5) -> None:
        self.min_len, self.top = min_len, top
        self._lengths: dict[int, tuple[type, int]] = {}

    def __call__(self, objects: list | None = None) -> list[str]:
        """`objects`: gc.get_objects() when the caller has it already."""
        kinds = (list, dict, set, deque)
        found: dict[int, tuple[object, object]] = {}  # id -> (container, the instance holding it, or None)

        def consider(obj, owner=None) -> None:
            if issubclass(type(obj), kinds) and len(obj) >= self.min_len and id(obj) not in found:
                found[id(obj)] = (obj, owner)

        for obj in gc.get_objects() if objects is None else objects:
            consider(obj)
            if type(obj) is dict:
                for value in obj.values():
                    if type(value) is dict and not gc.is_tracked(value):
                        consider(value)
            elif type(obj).__module__ != "builtins" and not issubclass(type(obj), kinds):  # type(): no __class__
                for value in gc.get_referents(obj):
                    if type(value) is dict and not gc.is_tracked(value):
                        consider(value, obj)
        grown = []
        for key, (obj, owner) in found.items():
            before = self._lengths.get(key)
            if before is not None and before[0] is type(obj) and len(obj) > before[1]:
                grown.append((len(obj) - before[1], obj, owner))
        self._lengths = {key: (type(obj), len(obj)) for key, (obj, _) in found.items()}
        grown.sort(key=lambda g: g[0], reverse=True)
        return [f"{_owner(obj, owner)} ({type(obj).__name__}) +{n} -> {len(obj)}"
                for n, obj, owner in grown[:self.top]]


def _attribute(instance, container) -> str | None:
    """The name of `instance`'s attribute (in its dict or a slot) that is `container`, or None."""
    attrs = getattr(instance, "__dict__", None)
    name = next((k for k, v in attrs.items() if v is container), None) if isinstance(attrs, dict) else None
    slots = (n for c in type(instance).__mro__ for n in c.__dict__.get("__slots__", ()))
    return name or next((n for n in slots if getattr(instance, n, None) is container), None)


def _holder_name(holder) -> str:
    """A module's name, else the holder's class name."""
    return holder.__name__ if issubclass(type(holder), types.ModuleType) else type(holder).__qualname__


def _owner(container, holder=None) -> str:
    """`Class.attribute` or `module.name` holding `container` (`holder`: the instance, when known), else `?`."""
    if holder is not None:
        return f"{_holder_name(holder)}.{_attribute(holder, container) or '?'}"
    for ref in gc.get_referrers(container):
        if type(ref) is not dict:  # an instance holding it directly (its dict not materialized, or a slot)
            name = None if issubclass(type(ref), (list, tuple, set, deque)) else _attribute(ref, container)
            if name is not None:
                return f"{_holder_name(ref)}.{name}"
            continue
        name = next((k for k, v in ref.items() if v is container), None)
        if name is None:
            continue
        if isinstance(ref.get("__name__"), str) and ref.get("__builtins__") is not None:
            return f"{ref['__name__']}.{name}"  # a module's globals
        for owner in gc.get_referrers(ref):
            if getattr(owner, "__dict__", None) is ref:
                return f"{_holder_name(owner)}.{name}"
    return "?"


def log_memory_stats(period_s: float) -> None:
    """Investigation switch (env MOLMO2_MEMSTATS_S, read by the node's entry point): log `memstats: {json}` of
    memory_stats() and the containers that grew (GrowingContainers) to stderr every `period_s`, for a long run to
    tell a Python leak (py_blocks, gc_objects grow; `growing` names where) from heap the allocator keeps (glibc's or
    tcmalloc's: system_mb and free_mb grow) or a native leak (system_mb - free_mb grow, or glibc's mmap_mb).
    scripts/soak_stats.py turns the lines into slopes."""
    growing = GrowingContainers()

    def dump() -> None:
        while True:
            objects = gc.get_objects()  # one pass serves both
            stats = {**memory_stats(objects), "growing": growing(objects)}
            del objects
            print(f"memstats: {json.dumps(stats)}", file=sys.stderr, flush=True)
            time.sleep(period_s)

    threading.Thread(target=dump, name="memory_stats", daemon=True).start()


def trace_memory(period_s: float, top: int = 10) -> None:
    """Investigation switch (env MOLMO2_TRACEMALLOC_S, read by the node's entry point): start tracemalloc and log
    to stderr every `period_s` the Python memory traced, heap_account() and the `top` line-level growths since the
    previous dump, to tell a Python leak (traced memory grows) from heap the allocator keeps (RSS and
    free_mb grow, traced memory flat). Slows the node: not for production."""
    tracemalloc.start()

    def dump() -> None:
        previous = tracemalloc.take_snapshot()
        while True:
            time.sleep(period_s)
            snapshot = tracemalloc.take_snapshot()
            current, peak = tracemalloc.get_traced_memory()
            lines = [f"tracemalloc: traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f}), malloc {heap_account()}"]
            lines += [f"tracemalloc:   {stat}" for stat in snapshot.compare_to(previous, "lineno")[:top]]
            print("\n".join(lines), file=sys.stderr, flush=True)
            previous = snapshot

    threading.Thread(target=dump, name="trace_memory", daemon=True).start()
