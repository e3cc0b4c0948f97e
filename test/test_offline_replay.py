"""Scenario bag -> replay -> outputs (bags readable, stamps = source frames) -> evaluation; determinism."""

import json
import math
from pathlib import Path

import pytest

from _models import tiny_model_dir
from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.messages import bag_topic, full_name, output_topics
from molmo2_ros.core.stream import StreamConfig
from molmo2_ros.core.types import NS_PER_S, EventState, Query, TaskKind, TrackStatus
from molmo2_ros.offline.evaluation.evaluate import evaluate, load_results
from molmo2_ros.offline.evaluation.oracle import NO_NOISE, NoiseConfig, OracleEngine
from molmo2_ros.offline.replay import BagError, replay
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[Path, GroundTruth]:
    out = tmp_path_factory.mktemp("scenario")
    bag = generate_scenario(out, seconds=20.0, fps=10.0, width=320, height=240)
    return bag, GroundTruth.load(out / "scenario.json")


def queries(truth: GroundTruth) -> list[Query]:
    return [Query(q["id"], TaskKind(q["task"]), q["text"]) for q in truth.data["queries"]]


def test_oracle_without_noise_is_perfect_and_bags_are_valid(scenario, tmp_path):
    bag, truth = scenario
    summary = replay(bag, tmp_path, OracleEngine(truth, NO_NOISE), queries(truth), progress=False)
    report = evaluate(load_results(summary.results_path), truth)
    o = report["overall"]
    assert o["point_hit_rate"] >= 0.99 and o["id_switches"] == 0 and o["event_f1"] >= 0.95 and o["count_mae"] == 0
    assert all(m["answers"] == summary.windows for m in report["per_query"].values())  # closing reports excluded
    assert Path(summary.gif).stat().st_size > 0

    from rosbags.highlevel import AnyReader
    frames = set(truth.frames)
    with AnyReader([Path(summary.output_bag)]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        # the node's topics (~/points/<id>, ~/counts/<id>, ..., the standard outputs ~/detections/<id>) for a node
        # /molmo2
        assert types == {bag_topic(name): full_name(kind) for q in queries(truth)
                         for name, kind in output_topics(q).by_output(depth=False, vision=True).values()} | {
            "/molmo2/image": "sensor_msgs/msg/CompressedImage",
            "/molmo2/annotations": "foxglove_msgs/msg/ImageAnnotations"}
        assert types["/molmo2/counts/square_count"] == "molmo2_ros/msg/PointArray"
        n = 0
        final_events: dict[str, int] = {}
        final_tracks: dict[str, int] = {}
        images, annotated = set(), []
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            n += 1
            if conn.msgtype == "foxglove_msgs/msg/ImageAnnotations":
                # drawn on the image of the same stamp: points as circles, track trails, labels
                stamps = {a.timestamp.sec * NS_PER_S + a.timestamp.nanosec
                          for a in (*msg.circles, *msg.points, *msg.texts)}
                assert stamps == {log_ns} and log_ns in images
                annotated.append((len(msg.circles), len(msg.points), [t.text for t in msg.texts]))
                continue
            stamp = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
            if conn.msgtype == "sensor_msgs/msg/CompressedImage":
                images.add(stamp)
            assert log_ns in frames and stamp in frames
            # an event's header keeps its evidence stamp; the log time is the clip that reported it
            assert stamp == log_ns if conn.msgtype != "molmo2_ros/msg/Event" else stamp <= log_ns
            if conn.msgtype == "molmo2_ros/msg/Event":
                final_events[msg.id] = msg.state
            if conn.msgtype == "molmo2_ros/msg/TrackArray":
                final_tracks.update((t.id, t.status) for t in msg.tracks)
            if conn.msgtype == "molmo2_ros/msg/Answer":
                assert len(msg.frame_stamps) == msg.num_frames > 0 and math.isnan(msg.confidence)
        assert n == summary.output_messages
        assert len(images) == len(annotated) == summary.windows
        assert any(c for c, _, _ in annotated) and any(p for _, p, _ in annotated)
        assert any(t in final_tracks for _, _, texts in annotated for t in texts)  # track ids on the image
        # the replay ended every open track and event: the last report of each is final
        assert final_events and final_tracks
        assert all(state == EventState.ENDED for state in final_events.values())
        assert all(status == TrackStatus.ENDED for status in final_tracks.values())

    from mcap.reader import make_reader
    mcap_file = next(Path(summary.output_bag).glob("*.mcap"))
    with open(mcap_file, "rb") as f:
        reader = make_reader(f)
        seen = {(s.name) for s in reader.get_summary().schemas.values()}
        assert {"molmo2_ros/msg/PointArray", "molmo2_ros/msg/Event"} <= seen
        assert all(m.log_time in frames for _, _, m in reader.iter_messages())
        in_file_order = [m.log_time for _, _, m in reader.iter_messages(log_time_order=False)]
        assert in_file_order == sorted(in_file_order)  # written in log-time order (no event stamped back)


def test_oracle_with_default_noise(scenario, tmp_path):
    bag, truth = scenario
    summary = replay(bag, tmp_path, OracleEngine(truth, NoiseConfig()), queries(truth), progress=False)
    o = evaluate(load_results(summary.results_path), truth)["overall"]
    assert o["id_switches_per_track_per_min"] <= 1.0
    assert o["point_hit_rate"] >= 0.9


def test_two_colour_world_scores_each_ball_by_colour(tmp_path):
    bag = generate_scenario(tmp_path / "scenario", seconds=6.0, fps=10.0, width=320, height=240,
                            world="two_colours")
    truth = GroundTruth.load(tmp_path / "scenario" / "scenario.json")
    assert {q["id"] for q in truth.data["queries"]} == {"red_point", "red_track", "blue_point", "blue_track"}
    summary = replay(bag, tmp_path / "out", OracleEngine(truth, NO_NOISE), queries(truth), progress=False,
                     gif=False)
    per_query = evaluate(load_results(summary.results_path), truth)["per_query"]
    for colour in ("red", "blue"):
        assert per_query[f"{colour}_point"]["point_hit_rate"] == 1.0
        assert per_query[f"{colour}_track"]["track_point_hit_rate"] == 1.0
    # the answer for one colour does not hit the other ball: swap the objects in the ground truth
    other = {"red_ball": "blue_ball", "blue_ball": "red_ball"}
    swapped_truth = GroundTruth({**truth.data, "queries": [
        {**q, "objects": [other[o] for o in q["objects"]]} for q in truth.data["queries"]]})
    swapped = evaluate(load_results(summary.results_path), swapped_truth)["per_query"]
    assert swapped["red_point"]["point_hit_rate"] < 0.5


def test_tiny_model_replay_is_deterministic(tmp_path):
    bag = generate_scenario(tmp_path / "s", seconds=4.0, fps=10.0, width=96, height=64, encoding="jpeg",
                            storage="sqlite3")
    truth = GroundTruth.load(tmp_path / "s" / "scenario.json")
    config = StreamConfig(buffer=BufferConfig(window_s=2.0, stride_s=1.0), max_new_tokens=8)
    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", max_new_tokens=8))
    engine.load()
    texts = []
    for run in ("a", "b"):
        engine.unload()
        engine.load()
        s = replay(bag, tmp_path / run, engine, queries(truth)[:2], config=config, progress=False, gif=False)
        assert s.windows >= 2
        texts.append([{**json.loads(line), "inference_s": 0} for line in Path(s.results_path).read_text().splitlines()])
    assert texts[0] == texts[1] and len(texts[0]) == 2 * s.windows


def test_an_engine_replaying_a_second_bag_answers_on_that_bags_frames(tmp_path):
    """Vision features are cached by stamp: a second bag with the same stamps but other pixels (seed) must not get
    the first bag's features (replay clears the engine's cache)."""
    bags = [generate_scenario(tmp_path / f"s{seed}", seconds=3.0, fps=10.0, width=96, height=64, seed=seed,
                              world="random") for seed in (1, 2)]
    truth = GroundTruth.load(tmp_path / "s2" / "scenario.json")
    config = StreamConfig(buffer=BufferConfig(window_s=2.0, stride_s=1.0), max_new_tokens=8)
    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", max_new_tokens=8))
    engine.load()

    def texts(bag: Path, out: str) -> list[str]:
        s = replay(bag, tmp_path / out, engine, queries(truth)[:2], config=config, progress=False, gif=False)
        return [json.loads(line)["text"] for line in Path(s.results_path).read_text().splitlines()]

    texts(bags[0], "first")
    after_first = texts(bags[1], "second")
    engine.unload()
    engine.load()
    assert after_first == texts(bags[1], "fresh")


def test_bad_bag_names_topic(tmp_path):
    with pytest.raises(BagError, match="cannot open bag"):
        replay(tmp_path / "missing", tmp_path / "out", OracleEngine.__new__(OracleEngine), [], progress=False)
