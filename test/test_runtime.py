"""Core runtime without ROS: scheduling policies, skip and budget counting, batching across cameras (same tokens as
one camera alone), stop within one token, on-demand jobs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.engine_interface import Engine, EngineCapabilities, InferRequest
from molmo2_ros.core.runtime import Runtime
from molmo2_ros.core.schedule import EveryWindowPolicy, LivePolicy, make_policy
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import NS_PER_S, Frame, Generation, Inference, Query, TaskKind

from _models import tiny_model_dir

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S
POINT = Query("pt", TaskKind.POINT, "ball")


class EchoEngine(Engine):
    """Answers 'stream:clip_index' with one point on the newest frame; records every engine call (a batch of clips
    is one call: batch_clips)."""

    capabilities = EngineCapabilities(batch_clips=True)

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay_s = delay_s

    @property
    def model_id(self) -> str:
        return "echo"

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def infer(self, clip, queries, max_new_tokens=None, stop=None) -> Inference:
        return self.infer_batch([InferRequest(clip, tuple(queries), max_new_tokens)], stop)[0]

    def infer_batch(self, requests, stop=None):
        self.calls.append([r.clip.stream for r in requests])
        time.sleep(self.delay_s)
        return [Inference(r.clip, [Generation(q, f'<points coords="{r.clip.relative_times()[-1]:.1f} 1 500 500">'
                                                 f'{r.clip.stream}:{r.clip.index}</points>') for q in r.queries])
                for r in requests]


def frames(n: int, fps: float = 2.0, size=(48, 64), seed: int = 0):
    rng = np.random.RandomState(seed)
    for i in range(n):
        yield Frame(T0 + int(i * NS_PER_S / fps), rng.randint(0, 255, (*size, 3), np.uint8), f"cam{seed}")


def config(window_s=2.0, stride_s=1.0) -> StreamConfig:
    return StreamConfig(buffer=BufferConfig(window_s=window_s, stride_s=stride_s))


def test_live_policy_keeps_newest_window_per_stream_and_counts_skips():
    engine = EchoEngine()
    rt = Runtime(engine, [Stream("front", [POINT], config()), Stream("rear", [POINT], config())], LivePolicy())
    for front, rear in zip(frames(20, seed=1), frames(20, seed=2)):
        rt.push("front", front)
        rt.push("rear", rear)
    done = rt.step()
    assert [c.stream for c, _ in done] == ["front", "rear"] and engine.calls == [["front", "rear"]]
    newest = {c.stream: c.index for c, _ in done}
    for name in ("front", "rear"):
        counts = rt.streams[name].counter_snapshot()
        assert counts["windows_skipped"] == counts["buffer_clips"] - 1 == newest[name]
        assert counts["windows_processed"] == 1
    assert rt.pending() == (0, 0)


def test_every_window_policy_runs_all_windows_in_order():
    engine = EchoEngine()
    rt = Runtime(engine, [Stream("", [POINT], config())], make_policy("every_window", 1024))
    for f in frames(30):
        rt.push("", f)
    done = rt.drain()
    assert [c.index for c, _ in done] == list(range(len(done)))
    assert len(done) == rt.streams[""].counter_snapshot()["buffer_clips"]
    assert all(r[0].text.endswith(f":{c.index}</points>") for c, r in done)


def test_every_window_byte_budget_drops_oldest_and_counts():
    frame_bytes = 48 * 64 * 3
    policy = EveryWindowPolicy(max_pending_bytes=10 * frame_bytes)
    rt = Runtime(EchoEngine(), [Stream("", [POINT], config(window_s=2.0, stride_s=0.5))], policy)
    for f in frames(40):
        rt.push("", f)
        assert rt.pending()[1] <= 10 * frame_bytes
    counts = rt.streams[""].counter_snapshot()
    pending, pinned = rt.pending()
    assert counts["windows_dropped_budget"] > 0
    assert counts["windows_dropped_budget"] + pending == counts["buffer_clips"]
    # overlapping clips share frames: the pinned bytes count each frame once
    assert pinned == len({id(f.frame.image) for c in policy.pending() for f in c.frames}) * frame_bytes
    done = rt.drain()
    assert [c.index for c, _ in done] == sorted(c.index for c, _ in done)


def test_switching_policy_at_run_time_keeps_newest_pending():
    rt = Runtime(EchoEngine(), [Stream("", [POINT], config())], make_policy("every_window", 1024))
    for f in frames(12):
        rt.push("", f)
    before = rt.pending()[0]
    assert before > 1
    rt.set_policy(LivePolicy())
    assert rt.pending()[0] == 1
    assert rt.streams[""].counter_snapshot()["windows_skipped"] == before - 1


def test_unbatched_runtime_calls_engine_once_per_clip():
    engine = EchoEngine()
    rt = Runtime(engine, [Stream("a", [POINT], config()), Stream("b", [POINT], config())], LivePolicy(),
                 batch_streams=False)
    for fa, fb in zip(frames(6, seed=1), frames(6, seed=2)):
        rt.push("a", fa)
        rt.push("b", fb)
    rt.step()
    assert engine.calls == [["a"], ["b"]]


def test_results_carry_each_streams_frame_id_and_stamps():
    rt = Runtime(EchoEngine(), [Stream("a", [POINT], config()), Stream("b", [POINT], config())], LivePolicy())
    for fa, fb in zip(frames(6, seed=1), frames(6, seed=2)):
        rt.push("a", fa)
        rt.push("b", fb)
    for clip, results in rt.step():
        assert results[0].frame_id == f"cam{1 if clip.stream == 'a' else 2}"
        assert results[0].points[0].stamp_ns == clip.end_ns


def test_worker_thread_delivers_results_and_stops():
    got, lock = [], threading.Lock()
    rt = Runtime(EchoEngine(delay_s=0.01), [Stream("", [POINT], config())], LivePolicy())

    def on_results(clip, results):
        with lock:
            got.append(clip.index)
    rt.start(on_results)
    for f in frames(20):
        rt.push("", f)
        time.sleep(0.005)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.stop(timeout_s=2.0)
    assert got and got == sorted(got)


def test_on_demand_job_has_its_own_tracks_and_fails_clearly():
    rt = Runtime(EchoEngine(), [Stream("", [POINT], config(window_s=4.0))], LivePolicy())
    for f in frames(10):
        rt.push("", f)
    job = rt.make_job("", Query("goal_1", TaskKind.POINT, "cup"), 0, 0)
    rt.run_job(job)
    assert job.done.is_set() and job.result.points and job.result.query.id == "goal_1"
    with pytest.raises(ValueError, match="unknown camera"):
        rt.make_job("nope", Query("g", TaskKind.POINT, "cup"), 0, 0)
    with pytest.raises(ValueError, match="no buffered frames"):
        rt.make_job("", Query("g", TaskKind.POINT, "cup"), 1, 2)
    cancelled = rt.make_job("", Query("goal_2", TaskKind.POINT, "cup"), 0, 0)
    cancelled.cancel.set()
    rt.run_job(cancelled)
    assert cancelled.result == "cancelled"


# ---- the transformers engine: batching across cameras and stopping --------------------------------------------
@pytest.fixture(scope="module")
def engine():
    e = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), max_new_tokens=16))
    e.load()
    return e


QUERIES = [Query("a", TaskKind.POINT, "red ball"), Query("b", TaskKind.TRACK, "person"),
           Query("c", TaskKind.QUESTION, "What is moving?")]


def camera_clips():
    """Three cameras with different resolutions and window lengths (different numbers of frames)."""
    specs = {"front": ((72, 128), 3.0), "wrist": ((48, 64), 2.0), "rear": ((60, 80), 4.0)}
    streams = {name: Stream(name, QUERIES, config(window_s=w)) for name, (_, w) in specs.items()}
    clips = {}
    for seed, (name, (size, _)) in enumerate(specs.items()):
        for f in frames(12, size=size, seed=seed + 1):
            clip = streams[name].push(f)
            if clip is not None:
                clips.setdefault(name, []).append(clip)
    return clips


def texts(inference):
    assert not inference.error, inference.error
    return [g.text for g in inference.generations]


def test_batched_cameras_give_the_tokens_of_each_camera_alone(engine):
    clips = camera_clips()
    assert len({len(c[-1].frames) for c in clips.values()}) == 3
    for step in (-2, -1):  # the second step reuses cached features of each camera
        requests = [InferRequest(c[step], tuple(QUERIES)) for c in clips.values()]
        batched = engine.infer_batch(requests)
        engine.clear_cache()
        alone = [engine.infer(r.clip, list(r.queries)) for r in requests]
        assert [texts(b) for b in batched] == [texts(a) for a in alone]
        assert [b.clip.stream for b in batched] == list(clips)
    # each camera keeps its own feature cache entries
    assert {key[0] for key in engine._features} == set(clips)


def test_batched_cameras_with_different_limits_match(engine):
    clips = camera_clips()
    requests = [InferRequest(c[-1], tuple(QUERIES), limit) for c, limit in zip(clips.values(), (3, 16, 8))]
    batched = engine.infer_batch(requests)
    alone = [engine.infer(r.clip, list(r.queries), r.max_new_tokens) for r in requests]
    assert [texts(b) for b in batched] == [texts(a) for a in alone]
    assert all(g.num_new_tokens <= 3 for g in batched[0].generations)


class SlowDecode(Molmo2Engine):
    """The real engine with every model forward slowed to `step_s`: a 600-token answer takes about a minute."""

    step_s = 0.1

    def load(self) -> None:
        super().load()
        self.forwards = 0

        def slow(module, args, kwargs):
            self.forwards += 1
            time.sleep(self.step_s)
        self.model.register_forward_pre_hook(slow, with_kwargs=True)


def test_stop_flag_ends_a_long_generation_within_one_token():
    e = SlowDecode(EngineConfig(model=str(tiny_model_dir()), max_new_tokens=600))
    e.load()
    e.model.generation_config.eos_token_id = None  # never stops on its own: ~600 steps, ~60 s
    clip = camera_clips()["wrist"][-1]
    stop = threading.Event()
    done = {}

    def call():
        done["inference"] = e.infer(clip, [QUERIES[2]], 600, stop)
    worker = threading.Thread(target=call)
    worker.start()
    while e.forwards < 5:
        time.sleep(0.01)
    t0 = time.monotonic()
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert time.monotonic() - t0 < 2 * SlowDecode.step_s + 0.5
    assert done["inference"].stopped and done["inference"].error == "stopped"
    assert e.forwards < 20


def test_runtime_stop_interrupts_the_engine_call():
    e = SlowDecode(EngineConfig(model=str(tiny_model_dir()), max_new_tokens=600))
    e.load()
    e.model.generation_config.eos_token_id = None
    rt = Runtime(e, [Stream("", [QUERIES[2]], config())], LivePolicy())
    rt.start(lambda clip, results: None)
    for f in frames(6):
        rt.push("", f)
    while e.forwards < 5:
        time.sleep(0.01)
    t0 = time.monotonic()
    assert rt.stop(timeout_s=5.0)
    assert time.monotonic() - t0 < 1.0
    assert rt.streams[""].counter_snapshot()["windows_stopped"] == 1
