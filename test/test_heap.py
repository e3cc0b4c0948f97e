"""HeapTrimmer: malloc_trim gives back heap memory that glibc kept after the buffers were freed (the four-camera
node's RSS growth, bench/README.md), and reports its cost."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from molmo2_ros.core.heap import HeapTrimmer, allocator

# The preloadable allocators installed here (make malloc-libs installs both; the launch's default preloads tcmalloc).
PRELOADS = {name: ctypes.util.find_library(library) for name, library in (("jemalloc", "jemalloc"),
                                                                          ("tcmalloc", "tcmalloc_minimal"))}

# In a fresh interpreter: raise glibc's dynamic mmap threshold by freeing one large mmapped block (as the node's
# first frames do), fill the heap with 1 MiB buffers interleaved with small live objects and under a live block,
# free the buffers, and read RSS before and after one trim. Printed: MiB freed-but-resident before the trim, MiB given
# back by it.
FRAGMENT = textwrap.dedent("""
    import json, os
    from molmo2_ros.core.heap import HeapTrimmer

    def rss_mb():
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    block = bytearray(8 << 20)  # an mmapped 8 MiB block; freeing it raises the threshold above 1 MiB
    del block
    big, small = [], []
    for i in range(200):
        big.append(bytearray(1 << 20))
        small.append(bytes(1000) + bytes([i % 256]))  # > 512 bytes: malloc, not Python's small-object pools
    cap = bytearray(256 << 10)  # a live block above the buffers (no free chunk is that large): the heap's top
    before_free = rss_mb()
    del big
    before, trimmer = rss_mb(), HeapTrimmer()
    released = trimmer.trim()
    print(json.dumps({"kept_mb": before - before_free + 200, "given_back_mb": before - rss_mb(),
                      "released": released, **trimmer.values()}))
""")


def test_trim_gives_back_freed_heap():
    trimmer = HeapTrimmer()
    if not trimmer.available:
        pytest.skip("this C library has no malloc_trim")
    out = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    assert result["kept_mb"] > 150, result  # glibc kept the freed 1 MiB buffers resident ...
    assert result["given_back_mb"] > 150 and result["released"], result  # ... and the trim returned them
    assert result["heap_trim_calls"] == "1" and float(result["heap_trim_ms_max"]) >= 0


def test_values_count_calls():
    trimmer = HeapTrimmer()
    if not trimmer.available:
        assert "unavailable" in trimmer.values()["heap_trim"]
        return
    for _ in range(3):
        trimmer.trim()
    values = trimmer.values()
    assert values["heap_trim_calls"] == "3" and float(values["heap_trim_ms_mean"]) <= float(values["heap_trim_ms_max"])


def test_allocator_is_named_by_the_library_mapped(tmp_path):
    maps = tmp_path / "maps"
    line = "7f0000000000-7f0000100000 r-xp 00000000 fd:00 42 {}\n"
    maps.write_text(line.format("/usr/lib/x86_64-linux-gnu/libc.so.6"))
    assert allocator(str(maps)) == "glibc"
    preloaded = tmp_path / "maps_preloaded"
    preloaded.write_text(line.format("/usr/lib/x86_64-linux-gnu/libc.so.6") +
                         line.format("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"))
    assert allocator(str(preloaded)) == "jemalloc"
    assert allocator(str(tmp_path / "absent")) == "unknown"
    assert HeapTrimmer().values()["allocator"] == allocator() == "glibc"  # this process: glibc's malloc


# The node's memory tools in a process with tcmalloc (the launch's default) or jemalloc preloaded: glibc's free on
# jemalloc's memory (open_memstream's buffer freed through libc.so.6 by name) used to abort it.
UNDER_PRELOAD = textwrap.dedent("""
    import json
    from molmo2_ros.core.heap import HeapTrimmer, memory_stats
    from molmo2_ros.core.shared_pages import SharedPageReleaser

    trimmer, releaser = HeapTrimmer(), SharedPageReleaser()
    trimmer.trim_every(1.0, 1e9)
    releaser.release()
    print(json.dumps({"stats": memory_stats(), "trim": trimmer.values(), "release": releaser.values()}))
""")


@pytest.mark.parametrize("name", sorted(PRELOADS))
def test_memory_tools_under_a_preloaded_allocator(name):
    if not PRELOADS[name]:
        pytest.skip(f"{name} is not installed (make malloc-libs)")
    out = subprocess.run([sys.executable, "-c", UNDER_PRELOAD], env={**os.environ, "LD_PRELOAD": PRELOADS[name]},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    stats = result["stats"]
    assert stats["allocator"] == name
    if name == "tcmalloc":  # its own account of the heap, in malloc_info's terms
        assert 0 <= stats["free_mb"] <= stats["system_mb"] and "arenas" not in stats
    else:  # glibc's heap is unused and jemalloc's account is not read
        assert "system_mb" not in stats
    assert result["trim"] == {"allocator": name, "heap_trim": f"unavailable (no malloc_trim with allocator {name})"}
    assert result["release"]["shm_release_calls"] == "1"  # the shared pages are released all the same


def test_tcmalloc_info_sees_freed_heap():
    """tcmalloc keeps what the node freed (its high-water mark): its account shows it as held and free, the way
    malloc_info shows glibc's freed chunks; in a fresh interpreter with tcmalloc preloaded."""
    if not PRELOADS["tcmalloc"]:
        pytest.skip("tcmalloc is not installed (make malloc-libs)")
    code = ("import json; from molmo2_ros.core.heap import tcmalloc_info; before = tcmalloc_info(); "
            "kept = [bytearray(50_000) for _ in range(4000)]; middle = tcmalloc_info(); del kept; "
            "print(json.dumps([before, middle, tcmalloc_info()]))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "LD_PRELOAD": PRELOADS["tcmalloc"]},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    before, middle, after = json.loads(out.stdout)
    assert middle["system_mb"] >= before["system_mb"] + 150 and middle["free_mb"] < 50  # 190 MB in use
    # freed: free inside the heap, or (tcmalloc may give pages back as it goes) no longer held
    assert after["free_mb"] >= middle["free_mb"] + 150 or after["system_mb"] <= middle["system_mb"] - 150
