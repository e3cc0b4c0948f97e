"""The on-disk history (core/history.py): thinning, pixel mapping, eviction by age and size, restart, kill -9 while
writing, corrupt and missing frames, a full disk (RLIMIT_FSIZE in a child process) and recovery, permissions,
sightings, wiping."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from molmo2_ros.core.history import (DB_NAME, HistoryConfig, HistoryError, HistoryStore, Sighting, StoredFrame,
                                     is_history, wipe_history)
from molmo2_ros.core.sampling import SlowFastConfig, plan_clip
from molmo2_ros.core.types import (NS_PER_S, Event, EventState, Frame, GroundedPoint, Lifted3D, LiftStatus, Point3D,
                                   Query, QueryResult, TaskKind, Track, TrackStatus)

pytestmark = pytest.mark.ros_free

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000 * NS_PER_S
HALF_S = NS_PER_S // 2


def scene(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth image with a bright disc (JPEG-friendly, like a real scene)."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 90)], -1)
    cx, cy = (seed * 37) % width, (seed * 23) % height
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < (min(width, height) // 8) ** 2] = (250, 40, 40)
    return img.astype(np.uint8)


def write(store: HistoryStore, n: int, camera: str = "", start_ns: int = T0, period_ns: int = HALF_S,
          size: tuple[int, int] = (320, 240)) -> list[int]:
    """Offer n frames one by one (each committed before the next: no queue drops); their stamps."""
    stamps = []
    for i in range(n):
        stamp = start_ns + i * period_ns
        assert store.offer_frame(camera, Frame(stamp, scene(*size, seed=i), "cam"), epoch=0, sample_index=i)
        assert store.flush()
        stamps.append(stamp)
    return stamps


def stamps_of(store: HistoryStore, camera: str = "") -> list[int]:
    return [f.stamp_ns for f in store.frames(camera, 0, 2**62)]


def test_thinning_to_fps_by_source_stamp(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h", fps=2.0)) as store:
        kept = []
        for i in range(30):  # 10 fps source
            kept.append(store.offer_frame("", Frame(T0 + i * NS_PER_S // 10, scene()), epoch=0, sample_index=i))
            assert store.flush()
        assert kept == [i % 5 == 0 for i in range(30)]
        assert stamps_of(store) == [T0 + i * HALF_S for i in range(6)]
        counts = store.counters.snapshot()
        assert counts["frames_written"] == 6 and "history_queue_full" not in counts  # thinning is not a drop
        # a new epoch (the buffer reset: stamps may go back) starts thinning over
        assert store.offer_frame("", Frame(T0 + NS_PER_S // 10, scene()), epoch=1, sample_index=0)


def test_a_full_queue_drops_and_counts(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h", queue_s=1.0, fps=2.0)) as store:
        big = scene(1920, 1080)
        kept = [store.offer_frame("", Frame(T0 + i * HALF_S, big), epoch=0, sample_index=i) for i in range(20)]
        assert store.flush()
        assert kept[:2] == [True, True] and sum(kept) < 20  # offered faster than one frame is encoded
        assert store.counters["history_queue_full"] == 20 - sum(kept) == 20 - store.counters["frames_written"]


def test_full_size_frame_maps_to_the_original_pixels(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h", max_side_px=640)) as store:
        store.offer_frame("front", Frame(T0, scene(1920, 1080), "cam_optical"), epoch=3, sample_index=7)
        assert store.flush()
        [stored] = store.frames("front", T0, T0)
        assert stored == StoredFrame("front", T0, 3, 7, 1920, 1080, "cam_optical", False)
        frame = store.load(stored)
    assert frame.image.shape == (360, 640, 3) and frame.source_size == (1920, 1080)
    assert (frame.width, frame.height) == (1920, 1080) and frame.stamp_ns == T0 and frame.frame_id == "cam_optical"
    # the disc at (0, 0)..: colours survive JPEG (not noise)
    assert np.abs(frame.image.astype(int) - scene(640, 360).astype(int)).mean() < 12


def test_eviction_by_age_oldest_first(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h", max_age_s=2.0)) as store:
        write(store, 5, camera="a")
        stamps = write(store, 12)  # 6 s of the unnamed camera
        assert stamps_of(store) == [s for s in stamps if s >= stamps[-1] - 2 * NS_PER_S]
        assert len(stamps_of(store, "a")) == 5  # each camera ages behind its own newest frame
        assert store.counters["frames_evicted"] == 12 - 5


def test_eviction_by_size_oldest_first(tmp_path):
    config = HistoryConfig(tmp_path / "h", max_gb=1e-9)  # placeholder to measure one frame's size
    with HistoryStore(replace_path(config, tmp_path / "probe")) as probe:
        write(probe, 1)
        one = probe.stored_bytes()
    config = HistoryConfig(tmp_path / "h", max_gb=3.5 * one / 1e9)
    with HistoryStore(config) as store:
        stamps = write(store, 10)
        kept = stamps_of(store)
        assert kept == stamps[-len(kept):] and 2 <= len(kept) <= 4
        assert store.stored_bytes() <= config.max_bytes
        assert store.counters["frames_evicted"] == 10 - len(kept)
    with HistoryStore(config) as store:  # the size bound holds across a restart
        write(store, 3, start_ns=stamps[-1] + HALF_S)
        assert store.stored_bytes() <= config.max_bytes


def replace_path(config: HistoryConfig, path: Path) -> HistoryConfig:
    from dataclasses import replace
    return replace(config, path=path, max_gb=1.0)


def test_restart_serves_every_committed_frame(tmp_path):
    config = HistoryConfig(tmp_path / "h")
    with HistoryStore(config) as store:
        first = write(store, 6, camera="front")
    with HistoryStore(config) as store:
        assert stamps_of(store, "front") == first
        second = write(store, 4, camera="front", start_ns=first[-1] + HALF_S)
        assert stamps_of(store, "front") == first + second
    with HistoryStore(config, read_only=True) as reader:
        stored = reader.frames("front", 0, 2**62)
        assert [f.stamp_ns for f in stored] == first + second
        assert all(reader.load(f) is not None for f in stored)
        assert reader.span("front") == (first[0], second[-1]) and reader.span() == reader.span("front")
        assert reader.span("") is None and reader.cameras() == ["front"]
        assert reader.offer_frame("front", Frame(T0 * 2, scene()), epoch=0, sample_index=0) is False


def test_permissions_and_refused_folders(tmp_path):
    path = tmp_path / "deep" / "h"
    with HistoryStore(HistoryConfig(path)) as store:
        write(store, 2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        names = {p.name for p in path.iterdir()}
        assert DB_NAME in names and f"{DB_NAME}-wal" in names  # WAL files exist while it is open
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in path.iterdir())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(HistoryError, match="not empty and not a history"):
        HistoryStore(HistoryConfig(tmp_path / "other"))
    with pytest.raises(HistoryError, match="not a history"):
        HistoryStore(HistoryConfig(tmp_path / "missing"), read_only=True)
    assert not (tmp_path / "missing").exists()


def test_corrupt_and_missing_frames_are_skipped_and_counted(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h")) as store:
        depth = np.full((240, 320), 1500, np.uint16)
        for i in range(4):
            store.offer_frame("", Frame(T0 + i * HALF_S, scene(seed=i)), epoch=0, sample_index=i, depth=depth)
            assert store.flush()
        stored = store.frames("", 0, 2**62)
        conn = sqlite3.connect(tmp_path / "h" / DB_NAME)
        ids = [r[0] for r in conn.execute("SELECT id FROM frames ORDER BY stamp_ns")]
        conn.execute("UPDATE blobs SET jpeg = substr(jpeg, 1, length(jpeg) / 2) WHERE id=?", (ids[0],))  # truncated
        conn.execute("UPDATE blobs SET jpeg = X'FFD8FF00' || substr(jpeg, 5) WHERE id=?", (ids[1],))  # bit flip
        conn.execute("DELETE FROM blobs WHERE id=?", (ids[2],))  # missing blob
        conn.execute("UPDATE blobs SET depth = substr(depth, 1, 20) WHERE id=?", (ids[3],))
        conn.commit()
        conn.close()
        assert [store.load(f) is None for f in stored] == [True, True, True, False]
        assert store.load_depth(stored[3]) is None
        gone = StoredFrame("", T0 - NS_PER_S, 0, 0, 320, 240, "", False)  # evicted meanwhile
        assert store.load(gone) is None
        assert store.counters["history_frames_skipped"] == 4 and store.counters["history_depth_skipped"] == 1


def test_depth_round_trip_in_metres(tmp_path):
    with HistoryStore(HistoryConfig(tmp_path / "h", max_side_px=160)) as store:
        mm = np.full((240, 320), 1234, np.uint16)
        mm[0, 0] = 0
        metres = np.full((120, 160), 2.5, np.float32)
        metres[5, 5] = np.nan
        # wait_s: on a loaded machine the bounded write queue (1 s of frames) could otherwise drop the third offer
        assert store.offer_frame("", Frame(T0, scene()), epoch=0, sample_index=0, depth=mm, wait_s=10.0)
        assert store.offer_frame("", Frame(T0 + HALF_S, scene()), epoch=0, sample_index=1, depth=metres, wait_s=10.0)
        assert store.offer_frame("", Frame(T0 + NS_PER_S, scene()), epoch=0, sample_index=2, wait_s=10.0)
        assert store.flush()
        a, b, c = store.frames("", 0, 2**62)
        da, db = store.load_depth(a), store.load_depth(b)
        assert a.has_depth and b.has_depth and not c.has_depth and store.load_depth(c) is None
    assert da.shape == (120, 160) and da.dtype == np.float32 and da[0, 0] == 0 and da[60, 80] == pytest.approx(1.234)
    assert db[5, 5] == 0 and db[0, 0] == pytest.approx(2.5)


def test_offer_clip_offers_each_kept_frame_once(tmp_path):
    frames = [(i, Frame(T0 + i * HALF_S, scene(seed=i))) for i in range(12)]
    sf = SlowFastConfig()
    with HistoryStore(HistoryConfig(tmp_path / "h")) as store:
        total = 0
        for end in (4, 6, 8, 12):  # overlapping windows, as the buffer emits them
            total += store.offer_clip("", plan_clip(frames[max(0, end - 6):end], end, 128, sf), wait_s=5.0)
            assert store.flush()
        assert total == 12 and stamps_of(store) == [f.stamp_ns for _, f in frames]
        assert [f.sample_index for f in store.frames("", 0, 2**62)] == list(range(12))
        # a buffer reset (epoch 1) with stamps going back: offered again
        assert store.offer_clip("", plan_clip(frames[:2], 0, 128, sf, epoch=1)) == 2


# ---- sightings ----------------------------------------------------------------------------------------------
def result(query: Query, **fields) -> QueryResult:
    base = dict(query=query, clip_index=0, clip_start_ns=T0, clip_end_ns=T0 + 4 * NS_PER_S, frame_id="cam_optical",
                width=1920, height=1080, num_frames=8, num_visual_tokens=0, text="", model_id="m", inference_s=0.0)
    return QueryResult(**{**base, **fields})


def test_sightings_of_points_tracks_and_events(tmp_path):
    cup = Query("cup", TaskKind.POINT, "the red Cup")
    ball = Query("balls", TaskKind.TRACK, "ball")
    fall = Query("fall", TaskKind.EVENT, "something falls")
    p1, p2 = GroundedPoint(T0, 10.0, 20.0), GroundedPoint(T0 + NS_PER_S, 11.0, 21.0)
    traj = [GroundedPoint(T0 + i * HALF_S, 100.0 + i, 50.0, object_id="balls/1") for i in range(3)]
    track = Track("balls/1", "ball", TrackStatus.TRACKED, traj[0].stamp_ns, traj[-1].stamp_ns, traj)
    ev = Event("fall/0", "fall", "something falls", "a box falls", T0 + NS_PER_S, T0 + 2 * NS_PER_S, EventState.ENDED,
               [GroundedPoint(T0 + 2 * NS_PER_S, 500.0, 600.0)])
    lifted = Lifted3D("cam_optical", points=[Point3D(p1, LiftStatus.OK, (0.1, 0.2, 1.5)),
                                             Point3D(p2, LiftStatus.NO_DEPTH)])
    with HistoryStore(HistoryConfig(tmp_path / "h")) as store:
        store.record("front", [result(cup, points=[p1, p2], lifted=lifted), result(ball, tracks=[track]),
                               result(fall, events=[ev], points=list(ev.evidence))])
        store.record("back", [result(cup, points=[GroundedPoint(T0 + 3 * NS_PER_S, 1.0, 2.0)])])
        store.record("front", [result(ball, tracks=[track])])  # the same trajectory reported again: kept once
        assert store.flush()
        assert store.counters["sightings_written"] == 2 + 3 + 1 + 1

        last = store.sightings("red cup")  # case-insensitive, in the query text
        assert last == [Sighting("back", "cup", "point", "the red Cup", "the red Cup", T0 + 3 * NS_PER_S, 1.0, 2.0,
                                 1920, 1080, "", "cam_optical", None)]
        front = store.sightings("CUP", camera="front", limit=10)
        assert [s.stamp_ns for s in front] == [T0 + NS_PER_S, T0]  # newest first
        assert front[1].position == (0.1, 0.2, 1.5) and front[0].position is None
        balls = store.sightings(query_id="balls", limit=0)
        assert len(balls) == 1 and balls[0].object_id == "balls/1" and balls[0].stamp_ns == traj[-1].stamp_ns
        assert len(store.sightings(query_id="balls", limit=100)) == 3
        [fell] = store.sightings("falls", limit=5)
        assert fell.object_id == "fall/0" and fell.task == "event" and (fell.x, fell.y) == (500.0, 600.0)
        ranged = store.sightings(start_ns=T0 + HALF_S, end_ns=T0 + NS_PER_S, limit=10)
        assert sorted(s.stamp_ns for s in ranged) == [T0 + HALF_S, T0 + NS_PER_S, T0 + NS_PER_S]
        assert store.sightings("toolbox") == [] and store.cameras() == ["back", "front"]


# ---- faults in a child process ------------------------------------------------------------------------------
def run_child(code: str, *args: str, timeout: float = 60.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


KILL_CHILD = """
import sys, time
import numpy as np
from pathlib import Path
from molmo2_ros.core.history import HistoryConfig, HistoryStore
from molmo2_ros.core.types import Frame
store = HistoryStore(HistoryConfig(Path(sys.argv[1])))
rng = np.random.default_rng(0)
base = np.zeros((1080, 1920, 3), np.uint8)
base[:, :, 0] = np.arange(1920) % 256
i = 0
while True:
    frame = Frame(1_000_000_000 + i * 500_000_000, np.roll(base, i * 7, axis=1), "cam")
    if store.offer_frame("", frame, epoch=0, sample_index=i):
        print(frame.stamp_ns, flush=True)
    i += 1
    time.sleep(0.03)  # 2 fps of source time offered ~16x faster than real time: the queue is often full
"""


@pytest.mark.parametrize("kill_after_s", [1.3, 2.2])
def test_kill_9_while_writing_loses_at_most_the_queue(tmp_path, kill_after_s):
    path = tmp_path / "h"
    child = run_child(KILL_CHILD, str(path))
    accepted: list[int] = []
    deadline = time.monotonic() + 60
    while len(accepted) < 3 and time.monotonic() < deadline:  # writing has begun
        accepted.append(int(child.stdout.readline()))
    time.sleep(kill_after_s)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    accepted += [int(line) for line in out.split()]
    config = HistoryConfig(path)
    with HistoryStore(config, read_only=True) as store:  # the index opens (a leftover WAL is read)
        stored = store.frames("", 0, 2**62)
        assert stored, "nothing was committed"
        assert all(store.load(f) is not None for f in stored)  # never a half-written frame
        lost = set(accepted) - {f.stamp_ns for f in stored}
        assert {f.stamp_ns for f in stored} <= set(accepted)
        assert len(lost) <= config.queue_frames, (len(lost), len(accepted))
        assert store.counters["history_frames_skipped"] == 0
    with HistoryStore(config) as store:  # and writing goes on after it
        assert store.offer_frame("", Frame(max(accepted) + 10 * NS_PER_S, scene()), epoch=0, sample_index=0)
        assert store.flush() and len(store.frames("", 0, 2**62)) == len(stored) + 1


DISK_FULL_CHILD = """
import json, os, resource, signal, sys, time
import numpy as np
from pathlib import Path
from molmo2_ros.core.history import HistoryConfig, HistoryStore
from molmo2_ros.core.types import Frame
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
path = Path(sys.argv[1])
store = HistoryStore(HistoryConfig(path, retry_s=0.5, max_side_px=1024))
rng = np.random.default_rng(0)
stamp = [1_000_000_000]
def offer():
    stamp[0] += 500_000_000
    kept = store.offer_frame("", Frame(stamp[0], rng.integers(0, 255, (576, 1024, 3), np.uint8)), epoch=0,
                             sample_index=0)
    store.flush()
    return kept
for _ in range(3):
    offer()
largest = max(p.stat().st_size for p in path.iterdir())
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 200_000, hard))  # the disk fills up
for _ in range(40):
    offer()
    if store.health()[0] == "error":
        break
full = {"health": store.health(), "refused": offer(), "written": store.counters["frames_written"],
        "counters": store.counters.snapshot()}
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space returns
time.sleep(0.6)
resumed = [offer() for _ in range(3)]
print(json.dumps({"full": full, "resumed": resumed, "health": store.health(),
                  "written": store.counters["frames_written"], "stored": len(store.frames("", 0, 2**62))}))
store.close()
"""


def test_disk_full_stops_writing_and_resumes_when_space_returns(tmp_path):
    child = run_child(DISK_FULL_CHILD, str(tmp_path / "h"))
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    report = json.loads(out)
    full = report["full"]
    assert full["health"][0] == "error" and "disk full" in full["health"][1], full
    assert full["refused"] is False and full["counters"]["history_disk_full"] >= 1
    assert full["counters"]["history_frames_dropped_disk_full"] >= 1
    assert report["resumed"] == [True, True, True] and report["health"][0] == "ok"
    assert report["written"] == full["written"] + 3
    with HistoryStore(HistoryConfig(tmp_path / "h"), read_only=True) as store:  # nothing half-written
        stored = store.frames("", 0, 2**62)
        assert len(stored) == report["stored"] and all(store.load(f) is not None for f in stored)


# ---- wiping -------------------------------------------------------------------------------------------------
def test_wipe_removes_only_a_history(tmp_path):
    path = tmp_path / "h"
    with HistoryStore(HistoryConfig(path)) as store:
        write(store, 3)
    assert is_history(path)
    size = sum(p.stat().st_size for p in path.iterdir())
    assert wipe_history(path) == size and not path.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / DB_NAME).write_text("")
    (other / "photo.jpg").write_text("keep me")
    with pytest.raises(HistoryError, match="not a history folder"):
        wipe_history(other)
    assert (other / "photo.jpg").exists()
    with pytest.raises(HistoryError, match="does not exist"):
        wipe_history(tmp_path / "nothing")
