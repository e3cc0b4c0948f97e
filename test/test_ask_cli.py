"""`molmo2-ros ask` over a history that a replay wrote (rewind, asked after the fact): the oracle on a synthetic
scenario three minutes long; events within one sample of the truth, every point on an exact source stamp, and
`molmo2-ros eval` scores the answers as the scenario query of the same text."""

from __future__ import annotations

import json

import pytest

from molmo2_ros.cli import main
from molmo2_ros.core.history import HistoryConfig, HistoryStore
from molmo2_ros.core.settings import pipeline_config, resolve
from molmo2_ros.core.types import NS_PER_S, Query, TaskKind
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario
from molmo2_ros.offline.evaluation.evaluate import evaluate, load_results
from molmo2_ros.offline.evaluation.oracle import OracleEngine
from molmo2_ros.offline.replay import replay

pytestmark = pytest.mark.ros_free

SECONDS = 180.0
SAMPLE_S = 0.5  # the history's frame spacing (2 fps)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask")
    bag = generate_scenario(root / "scenario", seconds=SECONDS, fps=2.0, width=160, height=120)
    truth_path = root / "scenario" / "scenario.json"
    truth = GroundTruth.load(truth_path)
    config = pipeline_config(resolve({"preset": "tiny"})).streams[""]
    store = HistoryStore(HistoryConfig(path=root / "history"))
    try:
        replay(bag, root / "replay", OracleEngine(truth), [Query("ball_point", TaskKind.POINT, "red ball")],
               config=config, gif=False, progress=False, history=store)
    finally:
        store.close()
    reader = HistoryStore(HistoryConfig(path=root / "history"), read_only=True)
    stamps = [s.stamp_ns for s in reader.frames("", 0, 2**62)]
    reader.close()
    return root, truth_path, truth, stamps


def ask(root, truth_path, name, *args) -> tuple[int, list]:
    out = root / f"{name}.jsonl"
    code = main(["ask", str(root / "history"), *args, "--oracle", str(truth_path), "--preset", "tiny",
                 "--out", str(out)])
    return code, (load_results(out) if code == 0 else [])


def test_history_of_the_replay_holds_every_sample(world):
    _, _, truth, stamps = world
    assert stamps == truth.frames  # 2 fps scenario, 2 fps history: every frame stored, none lost


def test_events_asked_after_the_fact_are_within_one_sample(world, capsys):
    root, truth_path, truth, _ = world
    code, results = ask(root, truth_path, "fall", "ball falling", "--task", "event", "--from", "0", "--to",
                        str(SECONDS))
    assert code == 0
    assert len(results) == 1
    events = sorted((e.start_ns, e.end_ns) for e in results[0].events)
    falls = sorted((e["start_ns"], e["end_ns"]) for e in truth.events if e["type"] == "fall")
    assert len(events) == len(falls) == 2
    for (s, e), (gs, ge) in zip(events, falls):
        assert abs(s - gs) <= SAMPLE_S * NS_PER_S and abs(e - ge) <= SAMPLE_S * NS_PER_S
    report = evaluate(results, truth)
    metrics = report["per_query"]["ask"]
    assert metrics["event_f1"] == 1.0
    assert metrics["event_start_error_s"] <= SAMPLE_S and metrics["event_end_error_s"] <= SAMPLE_S
    # the same through `molmo2-ros eval`
    capsys.readouterr()
    assert main(["eval", str(root / "fall.jsonl"), str(truth_path), "--json", str(root / "fall_eval.json")]) == 0
    assert json.loads((root / "fall_eval.json").read_text())["per_query"]["ask"]["event_f1"] == 1.0


def test_a_sub_range_finds_only_its_own_event(world):
    root, truth_path, truth, _ = world
    first = min(e["start_ns"] for e in truth.events if e["type"] == "fall")
    t = (first - truth.frames[0]) / NS_PER_S
    code, results = ask(root, truth_path, "fall_sub", "ball falling", "--task", "event", "--from", str(t - 10),
                        "--to", str(t + 10), "--scan", "sparse")
    assert code == 0
    assert len(results[0].events) == 1 and abs(results[0].events[0].start_ns - first) <= SAMPLE_S * NS_PER_S


def test_every_point_is_on_an_exact_source_stamp_of_the_range(world):
    root, truth_path, truth, stamps = world
    code, results = ask(root, truth_path, "points", "red ball", "--task", "point", "--from", "20", "--to", "80")
    assert code == 0
    r = results[0]
    lo, hi = truth.frames[0] + 20 * NS_PER_S, truth.frames[0] + 80 * NS_PER_S
    assert r.points and all(p.stamp_ns in set(stamps) and lo <= p.stamp_ns <= hi for p in r.points)
    assert r.frame_stamps_ns == [s for s in stamps if lo <= s <= hi]
    assert len({(p.stamp_ns, round(p.x), round(p.y)) for p in r.points}) == len(r.points)  # each point once
    metrics = evaluate(results, truth)["per_query"]["ask"]
    assert metrics["point_hit_rate"] == 1.0 and metrics["point_recall"] == 1.0


def test_counts_and_tracks_are_scored(world):
    root, truth_path, truth, _ = world
    code, counts = ask(root, truth_path, "count", "blue squares", "--task", "count", "--from", "60", "--to", "100")
    assert code == 0 and len(counts) > 1  # one answer per clip: a count holds over its clip's frames
    assert evaluate(counts, truth)["per_query"]["ask"]["count_mae"] == 0.0
    code, tracks = ask(root, truth_path, "track", "red ball", "--task", "track", "--from", "0", "--to", "60")
    assert code == 0
    metrics = evaluate(tracks, truth)["per_query"]["ask"]
    assert metrics["mota"] == 1.0 and metrics["id_switches"] == 0


def test_ask_refuses_a_folder_that_is_not_a_history_and_a_range_outside_it(world, tmp_path, capsys):
    root, truth_path, _, _ = world
    assert main(["ask", str(tmp_path), "x", "--oracle", str(truth_path)]) == 2
    assert "not a history" in capsys.readouterr().err
    assert main(["ask", str(root / "history"), "x", "--from", "500", "--to", "600", "--oracle",
                 str(truth_path), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "history holds [0, 179.5] s" in capsys.readouterr().err


def test_recall_last_seen_is_the_truth(world, capsys):
    """`molmo2-ros recall` (the node's ~/recall from the same index) lists the standing query's last sighting: the
    truth's last visible stamp among the frames the standing query saw, at the true pixel."""
    root, _, truth, _ = world
    out = root / "recall.json"
    assert main(["recall", str(root / "history"), "red ball", "--json", str(out)]) == 0
    capsys.readouterr()
    sightings = json.loads(out.read_text())
    assert len(sightings) == 1 and sightings[0]["query_id"] == "ball_point"
    saw = {s for line in (root / "replay" / "results.jsonl").read_text().splitlines()
           for s in json.loads(line)["frame_stamps_ns"]}
    balls = truth.query_for("ball_point")["objects"]
    last = max(s for s in saw if any(truth.visible(o, s) for o in balls))
    assert sightings[0]["stamp_ns"] == last
    where = [truth.visible(o, last) for o in balls]
    assert any(w and abs(sightings[0]["x"] - w[0]) <= 2 and abs(sightings[0]["y"] - w[1]) <= 2 for w in where)
