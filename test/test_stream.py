"""Stream + runtime: engine answers -> grounded results with source stamps and pixels, persistent ids, single
events, query management."""

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.engine_interface import Engine
from molmo2_ros.core.runtime import Runtime
from molmo2_ros.core.schedule import EveryWindowPolicy
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import (NS_PER_S, EventState, Frame, Generation, Inference, Query, TaskKind,
                                   TrackStatus)

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S
W, H = 640, 480


class ScriptedEngine(Engine):
    """Answers with a function of (clip, query): a stand-in for the model in these tests."""

    model_id = "scripted"

    def __init__(self, answer):
        self.answer = answer

    def load(self):
        pass

    def unload(self):
        pass

    def infer(self, clip, queries, max_new_tokens=None, stop=None):
        if self.answer is None:
            return Inference(clip, [], error="RuntimeError: boom")
        return Inference(clip, [Generation(q, self.answer(clip, q), 1, 0.01) for q in queries])


def ball_x(t_s: float) -> int:
    """Model coordinate (0..1000) of a ball moving right."""
    return int(100 + 40 * t_s)


def answer(clip, query):
    rel = clip.relative_times()
    abs_s = [(s - T0) / NS_PER_S for s in clip.stamps_ns]
    if query.task == TaskKind.TRACK:
        # two objects; the per-answer ids swap every clip (the model renumbers by first appearance)
        swap = clip.index % 2
        groups = [f"{t:.1f} {1 + swap} {ball_x(a):03d} 500 {2 - swap} 800 {200:03d}" for t, a in zip(rel, abs_s)]
        return f'<tracks coords="{";".join(groups)}">ball</tracks>'
    if query.task == TaskKind.COUNT:
        return f'Counting the <points coords="{rel[-1]:.1f} 1 100 100 2 900 900">cubes</points> shows a total of 2.'
    if query.task == TaskKind.EVENT:
        groups = [f"{t:.1f} 1 500 500" for t, a in zip(rel, abs_s) if 4.0 <= a <= 6.0]
        return f'<points coords="{";".join(groups)}">fall</points>' if groups else "There are none."
    return f'<points coords="{rel[-1]:.1f} 1 500 250">ball</points>'


QUERIES = [Query("pt", TaskKind.POINT, "ball"), Query("n", TaskKind.COUNT, "cubes"),
           Query("trk", TaskKind.TRACK, "ball"), Query("ev", TaskKind.EVENT, "ball falling")]


def runtime(engine, queries, window_s=4, stride_s=1):
    config = StreamConfig(buffer=BufferConfig(window_s=window_s, stride_s=stride_s))
    return Runtime(engine, [Stream("", queries, config)], EveryWindowPolicy(2**30))


def run(rt, seconds=14.0, fps=10):
    """Push frames; run each clip as it falls due: [(clip, results)] ([] results when inference failed)."""
    results = []
    for i in range(int(seconds * fps)):
        clip = rt.push("", Frame(T0 + i * NS_PER_S // fps, np.zeros((H, W, 3), np.uint8), "camera_optical"))
        if clip is not None:
            done = rt.step()
            results.append((clip, done[0][1] if done else []))
    return results


def test_points_grounded_on_source_frames():
    p = runtime(ScriptedEngine(answer), QUERIES)
    for clip, results in run(p):
        point = next(r for r in results if r.query.id == "pt")
        assert point.stamp_ns == clip.end_ns and point.frame_id == "camera_optical"
        assert point.points[0].stamp_ns == clip.end_ns
        assert (point.points[0].x, point.points[0].y) == (320.0, 120.0)
        count = next(r for r in results if r.query.id == "n")
        assert count.count == 2 and len(count.points) == 2


def test_track_ids_persist_across_windows_despite_renumbering():
    p = runtime(ScriptedEngine(answer), QUERIES)
    ids = set()
    for _, results in run(p):
        tracks = next(r for r in results if r.query.id == "trk").tracks
        assert len(tracks) == 2
        ids |= {t.id for t in tracks}
        moving = min(tracks, key=lambda t: t.trajectory[-1].y)
        assert moving.trajectory[-1].y == 0.2 * H or moving.trajectory[-1].y == 0.5 * H
    assert ids == {"trk/t1", "trk/t2"}


def test_event_reported_once_with_span():
    p = runtime(ScriptedEngine(answer), QUERIES)
    events = [e for _, results in run(p) for r in results if r.query.id == "ev" for e in r.events]
    assert {e.id for e in events} == {"ev/e1"}
    assert events[0].state == EventState.STARTED and events[-1].state == EventState.ENDED
    assert [e.state for e in events].count(EventState.STARTED) == 1
    assert events[-1].start_ns == T0 + 4 * NS_PER_S and events[-1].end_ns == T0 + 6 * NS_PER_S


def test_backward_jump_restarts_tracks_and_events_without_reusing_ids():
    p = runtime(ScriptedEngine(answer), QUERIES)
    first = run(p, seconds=8)
    looped = run(p, seconds=8)  # the bag loops: stamps start again at T0
    assert p.streams[""].buffer.counters["reset_backward_jump"] == 1
    assert all(clip.epoch == 1 for clip, _ in looped)
    events = [e for _, results in looped for r in results if r.query.id == "ev" for e in r.events]
    assert {e.id for e in events} == {"ev/e2"} and events[0].state == EventState.STARTED
    before = {t.id for _, results in first for r in results for t in r.tracks}
    after = {t.id for _, results in looped for r in results for t in r.tracks}
    assert before == {"trk/t1", "trk/t2"} and after == {"trk/t3", "trk/t4"}


def test_inference_error_counted_and_stream_continues():
    engine = ScriptedEngine(None)
    p = runtime(engine, QUERIES)
    assert all(results == [] for _, results in run(p, seconds=3))
    assert p.streams[""].counters["inference_errors"] >= 1 and "boom" in p.last_error
    engine.answer = answer
    assert all(results for _, results in run(p, seconds=3)[1:])


def test_query_management_validates():
    p = Stream("", [])
    p.add_query(Query("a", TaskKind.POINT, "cup"))
    with pytest.raises(ValueError, match="already exists"):
        p.add_query(Query("a", TaskKind.POINT, "cup"))
    with pytest.raises(ValueError, match="letters"):
        p.add_query(Query("bad id!", TaskKind.POINT, "cup"))
    with pytest.raises(ValueError, match="needs a text"):
        p.add_query(Query("b", TaskKind.TRACK, ""))
    with pytest.raises(ValueError, match="limit"):
        p.add_query(Query("c", TaskKind.QUESTION, "x" * 10_000))
    p.remove_query("a")
    with pytest.raises(ValueError, match="no query"):
        p.remove_query("a")
    assert p.queries == []


def test_on_demand_answer_does_not_touch_standing_tracks():
    p = runtime(ScriptedEngine(answer), QUERIES)
    run(p, seconds=5)
    job = p.make_job("", Query("goal", TaskKind.TRACK, "ball"), T0 + 2 * NS_PER_S, T0 + 4 * NS_PER_S)
    clip = job.clip
    p.run_job(job)
    result = job.result
    assert {t.id for t in result.tracks} == {"goal/t1", "goal/t2"}
    assert all(t.status == TrackStatus.NEW for t in result.tracks)
    assert all(clip.start_ns <= pt.stamp_ns <= clip.end_ns for t in result.tracks for pt in t.trajectory)


def test_results_carry_the_frames_fed_to_the_model_and_the_engine_confidence():
    class Confident(ScriptedEngine):
        def infer(self, clip, queries, max_new_tokens=None, stop=None):
            inference = super().infer(clip, queries, max_new_tokens)
            for g in inference.generations:
                g.confidence = -0.25 if g.query.task == TaskKind.POINT else g.confidence
            return inference

    p = runtime(Confident(answer), QUERIES)
    for clip, results in run(p, seconds=6):
        for r in results:
            assert r.frame_stamps_ns == clip.stamps_ns and r.num_frames == len(clip.stamps_ns)
            assert r.confidence == -0.25 if r.query.id == "pt" else np.isnan(r.confidence)
    job = p.make_job("", Query("od", TaskKind.POINT, "ball"), clip.start_ns, clip.end_ns)
    p.run_job(job)
    on_demand = job.result
    assert on_demand.frame_stamps_ns == job.clip.stamps_ns and on_demand.confidence == -0.25


def test_finish_ends_open_tracks_and_events_with_a_closing_result():
    p = runtime(ScriptedEngine(answer), QUERIES)
    clip, _ = run(p, seconds=6)[-1]  # the event (4-6 s) and both tracks are still open
    closing = {r.query.id: r for r in p.finish()[""]}
    assert set(closing) == {"trk", "ev"}
    for r in closing.values():
        assert r.closing and r.text == "" and r.frame_stamps_ns == [] and r.stamp_ns == clip.end_ns
    assert [(t.id, t.status) for t in closing["trk"].tracks] == [("trk/t1", TrackStatus.ENDED),
                                                                 ("trk/t2", TrackStatus.ENDED)]
    assert [(e.id, e.state) for e in closing["ev"].events] == [("ev/e1", EventState.ENDED)]
    assert p.finish() == {"": []}  # nothing is left open


def test_only_track_points_carry_an_object_id():
    p = runtime(ScriptedEngine(answer), QUERIES)
    for _, results in run(p, seconds=7):
        for r in results:
            assert all(pt.object_id == "" for pt in r.points)
            assert all(pt.object_id == t.id for t in r.tracks for pt in t.trajectory)
            assert all(pt.object_id == "" for e in r.events for pt in e.evidence)
