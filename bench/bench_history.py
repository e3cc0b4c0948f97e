"""The history's write cost, size, restart and kill -9 figures (core/history.py), and SQLite blobs against a
rolling split MCAP of the same JPEGs.

`measure(seconds)` returns a dict (bench/bench_rewind.py folds it into bench/out/rewind.json); `main()` prints it.
Frames: the synthetic world (offline/data/scenario.py) rendered at 1920x1080, i.e. a 1080p30 camera whose sampled
frames (2 fps, the defaults) are offered to a HistoryStore at the defaults (640 px, JPEG 80).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from molmo2_ros.core.history import HistoryConfig, HistoryStore, encode_frame
from molmo2_ros.core.types import NS_PER_S, Frame

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000 * NS_PER_S


def scene_frames(count: int, fps: float = 2.0, width: int = 1920, height: int = 1080) -> list[Frame]:
    """`count` frames of the synthetic world, `fps` apart in source time."""
    from molmo2_ros.offline.data.scenario import build_world, render_frame, textured_background

    seconds = count / fps
    objects = build_world(max(seconds, 20.0), width, height)
    background = textured_background(width, height, 0)
    frames = []
    for i in range(count):
        t = (i / fps) % 20.0
        positions = {o.id: (o.motion(t)[0] * width, o.motion(t)[1] * height) for o in objects}
        frames.append(Frame(T0 + round(i * NS_PER_S / fps), render_frame(background, objects, positions), "camera"))
    return frames


def writer_cpu(store: HistoryStore, frames: list[Frame], fps: float) -> tuple[float, float]:
    """(writer thread CPU s, wall s) while `frames` are offered in real time at `fps`."""
    writer = store._writer  # the thread whose CPU time is the cost of the history
    start_cpu = _thread_cpu(writer)
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        store.offer_frame("", frame, epoch=0, sample_index=i)
        time.sleep(max(0.0, started + (i + 1) / fps - time.perf_counter()))
    store.flush(30.0)
    return _thread_cpu(writer) - start_cpu, time.perf_counter() - started


def _thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds of another thread of this process (Linux: its clock via pthread_getcpuclockid)."""
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


KILL_CHILD = """
import sys, time
import numpy as np
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench.bench_history import scene_frames
from molmo2_ros.core.history import HistoryConfig, HistoryStore
frames = scene_frames(20)
store = HistoryStore(HistoryConfig(Path(sys.argv[1])))
for i in range(100000):
    f = frames[i % len(frames)]
    frame = type(f)(f.stamp_ns + (i // len(frames)) * 10 * 10**9, f.image, f.frame_id)
    if store.offer_frame("", frame, epoch=0, sample_index=i):
        print(frame.stamp_ns, flush=True)
    time.sleep(0.05)
"""


def kill9_frames_lost(folder: Path, run_s: float = 3.0) -> tuple[int, int]:
    """(frames accepted but lost, frames accepted) when a writing process is killed with SIGKILL."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_CHILD), str(folder), str(REPO)],
                             stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    accepted = [int(child.stdout.readline())]
    time.sleep(run_s)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    accepted += [int(s) for s in out.split()]
    with HistoryStore(HistoryConfig(folder), read_only=True) as store:
        stored = store.frames("", 0, 2**62)
        readable = {f.stamp_ns for f in stored if store.load(f) is not None}
    return len(set(accepted) - readable), len(accepted)


def mcap_compare(jpegs: list[bytes], folder: Path, split_s: float = 60.0, fps: float = 2.0) -> dict:
    """The same JPEGs as sensor_msgs/CompressedImage in a rolling split MCAP (rosbags' writer, one bag per
    `split_s`): write CPU per frame, bytes, and what a killed writer leaves readable (the bag in progress, before
    close(): no metadata.yaml, its chunk still in memory)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    CompressedImage = store.types["sensor_msgs/msg/CompressedImage"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    per_split = int(split_s * fps)
    cpu = time.thread_time()
    written, splits = 0, 0
    writer = None
    for i, jpeg in enumerate(jpegs):
        if i % per_split == 0:
            if writer is not None:
                writer.close()
            writer = Writer(folder / f"split_{splits:04d}", version=9, storage_plugin=StoragePlugin.MCAP)
            writer.open()
            conn = writer.add_connection("/camera/image/compressed", CompressedImage.__msgtype__, typestore=store)
            splits += 1
        stamp = T0 + round(i * NS_PER_S / fps)
        msg = CompressedImage(Header(Time(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S), "camera"), "jpeg",
                              np.frombuffer(jpeg, np.uint8))
        writer.write(conn, stamp, store.serialize_cdr(msg, CompressedImage.__msgtype__))
        written += 1
    cpu = time.thread_time() - cpu
    # the split in progress as a kill -9 would leave it: what reached the file, no metadata.yaml
    open_split = folder / f"split_{splits - 1:04d}"
    on_disk = sum(p.stat().st_size for p in open_split.iterdir())
    in_open_split = written - (splits - 1) * per_split
    readable = _mcap_messages_readable(open_split)
    writer.close()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"mcap_write_ms_per_frame": round(1000 * cpu / len(jpegs), 3),
            "mcap_bytes_per_frame": round(total / len(jpegs)),
            "mcap_frames_in_open_split": in_open_split, "mcap_open_split_bytes_on_disk": on_disk,
            "mcap_kill9_frames_lost": in_open_split - readable}


def _mcap_messages_readable(split: Path) -> int:
    """Messages a reader gets from an unfinished split's .mcap (streamed, no summary needed)."""
    from mcap.reader import make_reader

    count = 0
    for path in split.glob("*.mcap"):
        try:
            with open(path, "rb") as f:
                for _ in make_reader(io.BytesIO(f.read())).iter_messages():  # non-seekable: streams records
                    count += 1
        except Exception:  # noqa: BLE001 - a truncated file ends the stream; what was read counts
            pass
    return count


def measure(seconds: float = 60.0) -> dict:
    """The history's figures at the defaults for `seconds` of a 1080p camera (2 fps stored: 2 * seconds frames
    offered in real time). Keys: history_write_cpu_pct_per_camera, history_gb_per_camera_hour, restart_frames_kept,
    kill9_frames_lost (and kill9_frames_accepted, queue bound), SQLite and MCAP write ms per frame and bytes."""
    fps = 2.0
    count = max(4, int(seconds * fps))
    frames = scene_frames(count, fps)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = HistoryConfig(tmp / "history")
        with HistoryStore(config) as store:
            cpu_s, wall_s = writer_cpu(store, frames, fps)
            stored = store.stored_bytes()
            committed = len(store.frames("", 0, 2**62))
            counters = store.counters.snapshot()
        db_bytes = sum(p.stat().st_size for p in config.path.iterdir())
        with HistoryStore(config, read_only=True) as store:
            kept = sum(store.load(f) is not None for f in store.frames("", 0, 2**62))
        lost, accepted = kill9_frames_lost(tmp / "killed")
        jpegs = [encode_frame(f.image, config.max_side_px, config.jpeg_quality)[0] for f in frames]
        mcap = mcap_compare(jpegs, tmp / "mcap", fps=fps)
    frames_per_hour = 3600 * fps
    return {
        "history_write_cpu_pct_per_camera": round(100 * cpu_s / wall_s, 3),
        "history_write_ms_per_frame": round(1000 * cpu_s / count, 3),
        "history_gb_per_camera_hour": round(stored / committed * frames_per_hour / 1e9, 4),
        "history_file_gb_per_camera_hour": round(db_bytes / committed * frames_per_hour / 1e9, 4),
        "history_frames_offered": count, "history_frames_committed": committed,
        "history_queue_full": counters.get("history_queue_full", 0),
        "restart_frames_kept": round(kept / committed, 6) if committed else 0.0,
        "kill9_frames_lost": lost, "kill9_frames_accepted": accepted, "kill9_queue_bound": config.queue_frames,
        "sqlite_bytes_per_frame": round(stored / committed), **mcap,
        "seconds": seconds,
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    result = measure(seconds)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
