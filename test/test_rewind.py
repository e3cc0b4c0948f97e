"""Rewind (core/rewind.py): range-to-clips planning, merging across clip borders, dense vs sparse scans, feature
reuse from the engine's cache (exact: same tokens as cold), stop/cancel, skipped frames, runtime range jobs."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
from molmo2_ros.core.engine_interface import Engine, EngineCapabilities, StopFlag
from molmo2_ros.core.rewind import RewindResult, clip_frames, default_overlap, plan_dense, plan_sparse, rewind
from molmo2_ros.core.runtime import Runtime
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.schedule import EveryWindowPolicy
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import NS_PER_S, Clip, EventState, Frame, Generation, Inference, Query, TaskKind

from helpers.memory_history import MemoryHistory, MemoryStoredFrame

pytestmark = pytest.mark.ros_free

T0 = 1_700_000_000 * NS_PER_S
PERIOD = NS_PER_S // 2  # 2 fps
W, H = 200, 100
CONFIG = StreamConfig(buffer=BufferConfig(window_s=4.0, stride_s=1.0, sample_fps=2.0, max_frames=8))


def stamp(k: int) -> int:
    return T0 + k * PERIOD


def stored(n: int, first_index: int = 0, epoch: int = 0, k0: int = 0) -> list[MemoryStoredFrame]:
    return [MemoryStoredFrame("cam", stamp(k0 + k), epoch, first_index + k, W, H, "", False) for k in range(n)]


def history(n: int, *, first_index: int = 0, missing: set[int] = frozenset(), camera: str = "cam") -> MemoryHistory:
    h = MemoryHistory()
    for k in range(n):
        image = np.full((H, W, 3), k % 251, np.uint8)
        h.add(camera, Frame(stamp(k), image, "cam_frame"), first_index + k, missing=k in missing)
    return h


# ---- planning ------------------------------------------------------------------------------------------------
def test_dense_plan_respects_the_frame_limit_and_overlaps_so_short_events_lie_whole_in_one_clip():
    frames = stored(100)
    for clip, overlap in ((8, 4), (16, 8), (8, 0), (128, 8)):
        plans = plan_dense(frames, clip, overlap)
        assert all(1 <= len(p) <= clip for p in plans)
        assert [s for p in plans for s in p][0] is frames[0] and plans[-1][-1] is frames[-1]
        assert {s.stamp_ns for p in plans for s in p} == {s.stamp_ns for s in frames}
        for a, b in zip(plans, plans[1:]):
            assert len({s.stamp_ns for s in a} & {s.stamp_ns for s in b}) >= overlap  # the last clip may share more
        if len(frames) > clip:
            assert all(len(p) == clip for p in plans)  # the last clip is filled back to a whole clip
        for start in range(len(frames) - overlap):  # every run of overlap + 1 frames lies whole in one clip
            run = {s.stamp_ns for s in frames[start:start + overlap + 1]}
            assert any(run <= {s.stamp_ns for s in p} for p in plans), (clip, overlap, start)


def test_clip_length_and_overlap_follow_the_live_window_and_the_frame_limit():
    assert default_overlap(CONFIG) == 4  # 8 frames per clip, a 4 s window at 2 fps = 8 frames, capped at 4
    wide = replace(CONFIG, buffer=BufferConfig(window_s=8.0, sample_fps=2.0, max_frames=128))
    assert default_overlap(wide) == 16
    # grounded answers grow with the frames: clips as long as the live window; text answers: the frame limit
    assert clip_frames(wide, TaskKind.POINT) == clip_frames(wide, TaskKind.EVENT) == 16
    assert clip_frames(wide, TaskKind.QUESTION) == 128
    assert default_overlap(wide, 16) == 8
    engine = WorldEngine()
    rewind(engine, history(200), "cam", Query("p", TaskKind.POINT, "ball"), stamp(0), stamp(199), wide)
    assert max(len(c.frames) for call in engine.calls for c in call) == 16
    engine = WorldEngine()
    rewind(engine, history(200), "cam", Query("q", TaskKind.QUESTION, "what?"), stamp(0), stamp(199), wide)
    assert max(len(c.frames) for call in engine.calls for c in call) == 128


def test_plans_never_cross_an_epoch_change_and_sparse_takes_every_other_frame():
    frames = stored(10, epoch=3) + stored(10, epoch=4, k0=20)
    plans = plan_dense(frames, 8, 2)
    assert all(len({s.epoch for s in p}) == 1 for p in plans)
    sparse = plan_sparse(frames, 4)
    assert all(len({s.epoch for s in p}) == 1 for p in sparse)
    assert [s.stamp_ns for p in sparse for s in p] == [s.stamp_ns for s in frames[0:10:2] + frames[10:20:2]]
    assert all(len(p) <= 4 for p in sparse)


class WorldEngine(Engine):
    """Answers from functions of the absolute stamp, in Molmo2's grammar (times relative to the clip start):
    point: the ball on every frame where ball(stamp) is not None; event: the ball on frames inside `event`;
    track: the ball as object 1; count: points at the ball, 'a total of N' with N the frames it is on.
    Records every call (clips per call)."""

    capabilities = EngineCapabilities(batch_clips=True)

    def __init__(self, event: tuple[int, int] = (0, 0), ball=None) -> None:
        self.event = event
        self.ball = ball or (lambda s: (100 + (s - T0) // PERIOD % 50, 50))
        self.calls: list[list[Clip]] = []
        self.stops: list[StopFlag | None] = []
        self.on_call = None

    @property
    def model_id(self) -> str:
        return "world"

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def infer_batch(self, requests, stop=None):
        self.calls.append([r.clip for r in requests])
        self.stops.append(stop)
        if self.on_call is not None:
            self.on_call()
        if stop is not None and stop.is_set():
            return [Inference(clip=r.clip, generations=[], error="stopped", stopped=True) for r in requests]
        return [Inference(clip=r.clip, generations=[Generation(q, self._answer(r.clip, q)) for q in r.queries])
                for r in requests]

    def infer(self, clip, queries, max_new_tokens=None, stop=None):
        from molmo2_ros.core.engine_interface import InferRequest

        return self.infer_batch([InferRequest(clip, tuple(queries), max_new_tokens)], stop)[0]

    def _answer(self, clip: Clip, query: Query) -> str:
        groups = []
        for t, s in zip(clip.relative_times(), clip.stamps_ns):
            if query.task == TaskKind.EVENT and not self.event[0] <= s <= self.event[1]:
                continue
            xy = self.ball(s)
            if xy is None:
                continue
            x, y = round(xy[0] / clip.width * 1000), round(xy[1] / clip.height * 1000)
            groups.append(f"{t:.1f} 1 {x:03d} {y:03d}")
        if query.task in (TaskKind.CAPTION, TaskKind.QUESTION):
            return f"frames {len(clip.frames)}"
        if not groups:
            return "There are none."
        tag = "tracks" if query.task == TaskKind.TRACK else "points"
        body = f'<{tag} coords="{";".join(groups)}">ball</{tag}>'
        return f"Counting the {body} shows a total of {len(groups)}." if query.task == TaskKind.COUNT else body


def test_clips_take_the_slowfast_role_of_the_stored_sample_index_epoch_and_stream():
    source = history(30, first_index=7)
    for s in source.frames("cam", 0, 2**62):
        object.__setattr__(s, "epoch", 5)
    engine = WorldEngine()
    slowfast = SlowFastConfig(key_every=4)
    result = rewind(engine, source, "cam", Query("q", TaskKind.POINT, "ball"), stamp(0), stamp(29),
                    replace(CONFIG, slowfast=slowfast))
    clips = [c for call in engine.calls for c in call]
    assert all(len(c.frames) <= 8 for c in clips)
    for c in clips:
        assert c.stream == "cam" and c.epoch == 5
        for f in c.frames:
            assert f.sample_index == 7 + (f.stamp_ns - T0) // PERIOD
            assert (f.pooling, f.is_key) == slowfast.role(f.sample_index)
    assert result.frames_scanned == 30 and result.clips_scanned == len(clips)


# ---- merging -------------------------------------------------------------------------------------------------
def test_an_event_across_clip_borders_is_reported_once_with_its_span_and_points_once_per_stamp():
    source = history(40)
    # clips of 8 frames sharing 4: [0-7], [4-11], [8-15], ... ; the event covers frames 6..17 (several borders)
    engine = WorldEngine(event=(stamp(6), stamp(17)))
    r = rewind(engine, source, "cam", Query("fall", TaskKind.EVENT, "ball falling"), stamp(0), stamp(39), CONFIG)
    assert len(r.clips) > 3
    assert len(r.result.events) == 1
    event = r.result.events[0]
    assert (event.start_ns, event.end_ns) == (stamp(6), stamp(17))
    assert event.state == EventState.ENDED
    stamps = [p.stamp_ns for p in r.result.points]
    assert stamps == [stamp(k) for k in range(6, 18)]  # each stamp once, though overlapping clips saw it twice
    assert sum(len(c.points) for c in r.clips) > len(stamps)
    assert set(stamps) <= set(r.result.frame_stamps_ns)
    assert r.result.frame_stamps_ns == [stamp(k) for k in range(40)]


def test_track_ids_persist_across_overlapping_clips():
    source = history(40)
    r = rewind(WorldEngine(), source, "cam", Query("trk", TaskKind.TRACK, "ball"), stamp(0), stamp(39), CONFIG)
    assert len(r.clips) >= 9
    assert [t.id for t in r.result.tracks] == ["trk/t1"]
    track = r.result.tracks[0]
    assert [p.stamp_ns for p in track.trajectory] == [stamp(k) for k in range(40)]
    assert (track.first_ns, track.last_ns) == (stamp(0), stamp(39))
    assert all(p.object_id == "trk/t1" for p in track.trajectory)


def test_count_is_the_largest_count_of_one_clip_with_per_clip_spans():
    source = history(20)
    ball = (lambda s: (60, 50) if stamp(2) <= s <= stamp(4) else None)
    r = rewind(WorldEngine(ball=ball), source, "cam", Query("n", TaskKind.COUNT, "balls"), stamp(0), stamp(19),
               CONFIG)
    assert r.result.count == 3
    assert [(c.clip_start_ns, c.clip_end_ns, c.count) for c in r.clips][:2] == [
        (stamp(0), stamp(7), 3), (stamp(4), stamp(11), 1)]
    assert [p.stamp_ns for p in r.result.points] == [stamp(2), stamp(3), stamp(4)]


def test_text_answers_over_several_clips_are_joined_with_their_spans():
    source = history(12)
    r = rewind(WorldEngine(), source, "cam", Query("qa", TaskKind.QUESTION, "what happened?"), stamp(0),
               stamp(11), CONFIG, origin_ns=stamp(0))
    assert r.result.text == "[0.0-3.5 s] frames 8\n[2.0-5.5 s] frames 8"


# ---- scans ---------------------------------------------------------------------------------------------------
def test_sparse_scans_fewer_clips_and_finds_the_same_event():
    n = 200
    source = history(n)
    event = (stamp(120), stamp(127))
    query = Query("fall", TaskKind.EVENT, "ball falling")
    dense = rewind(WorldEngine(event=event), source, "cam", query, stamp(0), stamp(n - 1), CONFIG)
    sparse = rewind(WorldEngine(event=event), source, "cam", query, stamp(0), stamp(n - 1), CONFIG, scan="sparse")
    assert [(e.start_ns, e.end_ns) for e in sparse.result.events] == [(e.start_ns, e.end_ns)
                                                                      for e in dense.result.events] == [event]
    assert sparse.clips_scanned < dense.clips_scanned / 2
    assert [p.stamp_ns for p in sparse.result.points] == [p.stamp_ns for p in dense.result.points]


def test_sparse_finding_nothing_runs_only_the_first_pass():
    source = history(64)
    r = rewind(WorldEngine(event=(0, 0)), source, "cam", Query("fall", TaskKind.EVENT, "ball falling"), stamp(0),
               stamp(63), CONFIG, scan="sparse")
    assert r.clips_scanned == 4 and r.result.events == [] and r.frames_scanned == 32


# ---- skipped frames, stop ------------------------------------------------------------------------------------
def test_missing_frames_are_skipped_and_counted():
    source = history(20, missing={3, 9, 10})
    r = rewind(WorldEngine(), source, "cam", Query("p", TaskKind.POINT, "ball"), stamp(0), stamp(19), CONFIG)
    assert r.frames_skipped == 3
    assert r.frames_scanned == 17
    assert not {stamp(3), stamp(9), stamp(10)} & set(r.result.frame_stamps_ns)
    assert source.loads == 20  # overlapping clips read each stored frame once


def test_stop_ends_the_scan_between_batches_and_reaches_the_engine():
    source = history(200)
    engine = WorldEngine()
    flag = threading.Event()
    engine.on_call = flag.set
    r = rewind(engine, source, "cam", Query("p", TaskKind.POINT, "ball"), stamp(0), stamp(199), CONFIG, stop=flag,
               batch=2)
    assert r.stopped and len(engine.calls) == 1
    assert engine.stops[0] is flag  # the engine gets the stop flag: engines that can stop within a decode step


def test_no_stored_frame_in_the_range_says_what_the_history_holds():
    with pytest.raises(ValueError, match="history holds"):
        rewind(WorldEngine(), history(4), "cam", Query("p", TaskKind.POINT, "ball"), stamp(10), stamp(20), CONFIG)


# ---- runtime range jobs --------------------------------------------------------------------------------------
def test_runtime_range_job_runs_on_the_worker_and_cancel_stops_it():
    source = history(40)
    engine = WorldEngine(event=(stamp(6), stamp(17)))
    runtime = Runtime(engine, [Stream("cam", [], CONFIG)], EveryWindowPolicy(max_pending_bytes=2**30))
    with pytest.raises(ValueError, match="history holds"):
        runtime.make_range_job("cam", Query("e", TaskKind.EVENT, "x"), stamp(100), stamp(200), source)
    with pytest.raises(ValueError, match="scan"):
        runtime.make_range_job("cam", Query("e", TaskKind.EVENT, "x"), stamp(0), stamp(20), source, scan="fast")
    runtime.start(lambda clip, results: None)
    try:
        job = runtime.make_range_job("cam", Query("e", TaskKind.EVENT, "ball falling"), stamp(0), stamp(39), source)
        runtime.submit(job)
        assert job.done.wait(10)
        assert isinstance(job.result, RewindResult)
        assert [(e.start_ns, e.end_ns) for e in job.result.result.events] == [(stamp(6), stamp(17))]
        assert job.progress[0] == job.progress[1] > 0
        job = runtime.make_range_job("cam", Query("e", TaskKind.EVENT, "ball falling"), stamp(0), stamp(39), source)
        job.cancel.set()
        runtime.submit(job)
        assert job.done.wait(10) and job.result == "cancelled"
    finally:
        runtime.stop()


def test_range_job_serves_due_live_windows_between_its_batches():
    source = history(200)
    engine = WorldEngine()
    stream = Stream("cam", [Query("live", TaskKind.POINT, "ball")], CONFIG)
    runtime = Runtime(engine, [stream], EveryWindowPolicy(max_pending_bytes=2**30))
    served = []
    runtime.start(lambda clip, results: served.append(clip.index))
    try:
        job = runtime.make_range_job("cam", Query("p", TaskKind.POINT, "ball"), stamp(0), stamp(199), source)
        offered = threading.Event()

        def offer_once():
            if not offered.is_set():
                offered.set()
                buffer = ClipBuffer(CONFIG.buffer, CONFIG.slowfast, stream="cam")
                clips = [c for k in range(12) if (c := buffer.push(Frame(stamp(500 + k), np.zeros((H, W, 3),
                                                                                                 np.uint8))))]
                runtime.offer(clips[-1])

        engine.on_call = offer_once
        runtime.submit(job)
        assert job.done.wait(10) and isinstance(job.result, RewindResult)
        assert served  # the live window ran before the range job ended
        assert len(engine.calls) > 2
    finally:
        runtime.stop()


# ---- feature reuse (tiny model) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_engine():
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine

    from _models import tiny_model_dir

    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", max_new_tokens=12,
                                       feature_cache_mb=64.0))
    engine.load()
    yield engine
    engine.unload()


def _live_history(engine, seconds: int) -> MemoryHistory:
    """Run the live path (standing point query) over `seconds` of frames and keep every sampled frame as the
    history writer does."""
    rng = np.random.default_rng(0)
    stream = Stream("cam", [Query("live", TaskKind.POINT, "ball")], CONFIG)
    runtime = Runtime(engine, [stream], EveryWindowPolicy(max_pending_bytes=2**30))
    source = MemoryHistory()
    for k in range(seconds * 2):
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        if runtime.push("cam", Frame(stamp(k), image, "cam_frame")) is not None:
            for clip, _ in runtime.step():
                source.add_clips("cam", [clip])
    return source


def test_rewind_reuses_the_features_the_live_path_encoded_with_the_same_tokens(tiny_engine):
    engine = tiny_engine
    engine.clear_cache()
    source = _live_history(engine, 12)  # 24 frames: more than the live cache limit (2 x 8), the rest spilled
    assert len(engine._spilled) > 0
    query = Query("ask", TaskKind.POINT, "red ball")
    lo, hi = source.span("cam")
    warm = rewind(engine, source, "cam", query, lo, hi, CONFIG)
    assert warm.frames_scanned == 23 and warm.frames_encoded == 0
    engine.clear_cache()
    cold = rewind(engine, source, "cam", query, lo, hi, CONFIG)
    assert cold.frames_encoded >= cold.frames_scanned
    assert [c.text for c in warm.clips] == [c.text for c in cold.clips]
    assert warm.result.text == cold.result.text


def test_without_the_history_cache_rewind_encodes_again(tiny_engine):
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine

    engine = Molmo2Engine(replace(tiny_engine.config, feature_cache_mb=0.0))
    engine.model, engine.processor, engine.builder = tiny_engine.model, tiny_engine.processor, tiny_engine.builder
    source = _live_history(engine, 12)
    lo, hi = source.span("cam")
    r = rewind(engine, source, "cam", Query("ask", TaskKind.POINT, "red ball"), lo, hi, CONFIG)
    assert r.frames_encoded > 0
    assert isinstance(EngineConfig(model="x").feature_cache_mb, float)


def test_stored_copies_reuse_the_originals_features_but_never_feed_their_own_to_live_windows(tiny_engine):
    engine = tiny_engine
    engine.clear_cache()
    source = _live_history(engine, 6)
    scaled = MemoryHistory()
    for s in source.frames("cam", 0, 2**62):
        frame = source.load(s)
        small = Frame(frame.stamp_ns, frame.image[::2, ::2].copy(), frame.frame_id, source_size=(W, H))
        scaled.add("cam", small, s.sample_index, s.epoch)
    lo, hi = scaled.span("cam")
    query = Query("ask", TaskKind.POINT, "red ball")
    assert rewind(engine, scaled, "cam", query, lo, hi, CONFIG).frames_encoded == 0
    engine.clear_cache()
    cold = rewind(engine, scaled, "cam", query, lo, hi, CONFIG)
    assert cold.frames_encoded > 0
    keys = list(engine._features) + list(engine._spilled)
    assert keys and all(k[4:5] == ("stored",) for k in keys)


def test_the_host_feature_cache_stays_within_its_budget_and_says_how_full_it_is(tiny_engine):
    """The node's RSS grows by up to history.feature_cache_mb (diagnostics feature_cache_host_mb): the spilled
    features stay within it, counted by what their storage really holds (on the CPU a spilled feature is a view of
    its encode batch's tensor, not a copy)."""
    from molmo2_ros.core.engine import Molmo2Engine

    budget_mb = 0.1
    engine = Molmo2Engine(replace(tiny_engine.config, feature_cache_mb=budget_mb))
    engine.model, engine.processor, engine.builder = tiny_engine.model, tiny_engine.processor, tiny_engine.builder
    _live_history(engine, 30)
    report = engine.memory_report()
    assert 0 < report.host_cache_mb <= budget_mb
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in engine._spilled.values()}
    largest = max(storages.values())  # one encode batch may be spilled in part
    assert sum(storages.values()) <= budget_mb * 2**20 + largest
