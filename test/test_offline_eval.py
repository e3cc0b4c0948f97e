"""Evaluation metrics on hand-made cases with known answers."""

import json
import math

import numpy as np
import pytest

from molmo2_ros.core.serialization import result_to_dict
from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Query, QueryResult, TaskKind, Track,
                                   TrackStatus)
from molmo2_ros.offline.evaluation.evaluate import ResultsError, evaluate, load_results
from molmo2_ros.offline.data.scenario import GroundTruth

S = [1_000_000_000 * k for k in range(1, 11)]  # 10 frames, 1 s apart


def truth() -> GroundTruth:
    a = [[s, 10.0 + k, 10.0, True] for k, s in enumerate(S)]
    b = [[s, 80.0, 60.0 - k, True] for k, s in enumerate(S)]
    return GroundTruth({
        "version": 1, "camera_topic": "/c", "width": 100, "height": 100, "frame_id": "c", "fps": 1.0, "frames": S,
        "objects": [{"id": "a", "label": "ball", "kind": "ball", "color": "red", "track": a},
                    {"id": "b", "label": "ball", "kind": "ball", "color": "red", "track": b}],
        "events": [{"id": "fall_1", "type": "fall", "label": "", "start_ns": S[2], "end_ns": S[5], "object_ids": ["a"]}],
        "queries": [{"id": "p", "task": "point", "text": "ball", "objects": ["a", "b"]},
                    {"id": "c", "task": "count", "text": "ball", "objects": ["a", "b"]},
                    {"id": "t", "task": "track", "text": "ball", "objects": ["a", "b"]},
                    {"id": "e", "task": "event", "text": "fall", "objects": ["a"], "event_type": "fall"}]})


def result(qid: str, task: TaskKind, **kw) -> QueryResult:
    kw.setdefault("frame_stamps_ns", list(S))
    return QueryResult(query=Query(qid, task, "ball"), clip_index=0, clip_start_ns=S[0], clip_end_ns=S[-1],
                       frame_id="c", width=100, height=100, num_frames=len(kw["frame_stamps_ns"]),
                       num_visual_tokens=0, text="", model_id="test", inference_s=0.0, **kw)


def pos(obj: str, k: int) -> tuple[float, float]:
    return (10.0 + k, 10.0) if obj == "a" else (80.0, 60.0 - k)


def track(tid: str, pts: list[tuple[int, str]]) -> Track:
    traj = [GroundedPoint(S[k], *pos(o, k)) for k, o in pts]
    return Track(tid, "ball", TrackStatus.TRACKED, traj[0].stamp_ns, traj[-1].stamp_ns, traj)


def test_perfect():
    gt = truth()
    points = [GroundedPoint(S[k], *pos(o, k)) for k in range(10) for o in "ab"]
    rs = [result("p", TaskKind.POINT, points=points), result("c", TaskKind.COUNT, count=2),
          result("t", TaskKind.TRACK, tracks=[track("t/t1", [(k, "a") for k in range(10)]),
                                              track("t/t2", [(k, "b") for k in range(10)])]),
          result("e", TaskKind.EVENT, events=[Event("e/e1", "e", "fall", "", S[2], S[5], EventState.ENDED)])]
    o = evaluate(rs, gt)["overall"]
    assert o["point_hit_rate"] == 1.0 and o["point_recall"] == 1.0 and o["count_mae"] == 0.0
    assert o["mota"] == 1.0 and o["id_switches"] == 0 and o["event_f1"] == 1.0
    assert o["track_point_hit_rate"] == 1.0
    assert o["event_start_error_s"] == 0.0


def test_a_miss_and_count_error():
    gt = truth()
    points = [GroundedPoint(S[0], *pos("a", 0)), GroundedPoint(S[0], 50.0, 95.0)]
    rep = evaluate([result("p", TaskKind.POINT, points=points), result("c", TaskKind.COUNT, count=5)], gt)
    q = rep["per_query"]["p"]
    assert q["point_hit_rate"] == 0.5 and q["point_recall"] == 1 / 20
    assert rep["per_query"]["c"]["count_mae"] == 3.0


def test_an_id_switch():
    gt = truth()
    t1 = track("t/t1", [(k, "a") for k in range(5)] + [(k, "b") for k in range(5, 10)])
    t2 = track("t/t2", [(k, "b") for k in range(5)] + [(k, "a") for k in range(5, 10)])
    m = evaluate([result("t", TaskKind.TRACK, tracks=[t1, t2])], gt)["per_query"]["t"]
    assert m["id_switches"] == 2 and m["mota"] == 1 - 2 / 20
    assert m["track_point_hit_rate"] == 1.0 and m["track_points"] == 20  # switched ids still point right
    assert abs(m["id_switches_per_track_per_min"] - 2 / 2 / (9 / 60)) < 1e-9


def test_track_points_off_target():
    gt = truth()
    good = track("t/t1", [(k, "a") for k in range(10)])
    off = Track("t/t2", "ball", TrackStatus.TRACKED, S[0], S[3], [GroundedPoint(S[k], 50.0, 95.0) for k in range(4)])
    m = evaluate([result("t", TaskKind.TRACK, tracks=[good, off])], gt)["per_query"]["t"]
    assert m["track_points"] == 14 and abs(m["track_point_hit_rate"] - 10 / 14) < 1e-9


def test_a_split_event():
    gt = truth()
    events = [Event("e/e1", "e", "fall", "", S[2], S[3], EventState.ENDED),
              Event("e/e2", "e", "fall", "", S[5], S[5], EventState.ENDED)]
    m = evaluate([result("e", TaskKind.EVENT, events=events)], gt)["per_query"]["e"]
    assert m["event_precision"] == 0.5 and m["event_recall"] == 1.0 and abs(m["event_f1"] - 2 / 3) < 1e-9


def test_mota_uses_the_optimal_assignment():
    """Objects at (50, 50) and (60, 50), tracks at (54.9, 50) and (44, 50), radius 7 px: nearest-first matched
    (54.9 -> 50) and left both others unmatched (MOTA 0); the minimum-cost assignment matches both."""
    one = [S[0]]
    gt = GroundTruth({
        "version": 1, "camera_topic": "/c", "width": 100, "height": 100, "frame_id": "c", "fps": 1.0, "frames": one,
        "objects": [{"id": "a", "label": "ball", "track": [[S[0], 50.0, 50.0, True]]},
                    {"id": "b", "label": "ball", "track": [[S[0], 60.0, 50.0, True]]}],
        "events": [], "queries": [{"id": "t", "task": "track", "text": "ball", "objects": ["a", "b"]}]})
    tracks = [Track(tid, "ball", TrackStatus.NEW, S[0], S[0], [GroundedPoint(S[0], x, 50.0)])
              for tid, x in (("t/t1", 54.9), ("t/t2", 44.0))]
    m = evaluate([result("t", TaskKind.TRACK, tracks=tracks, frame_stamps_ns=one)], gt,
                 radius_frac=7 / gt.diagonal)["per_query"]["t"]
    assert m["mota"] == 1.0 and m["track_matches"] == 2 and m["id_switches"] == 0


def test_clip_frames_are_the_frames_the_model_saw():
    """The clip saw frames 0, 1 and 9 only (irregular): recall counts exactly those frames. The old evaluator
    rebuilt 3 evenly spread frames (0, 4 or 5, 9) and counted a frame the model never saw as missed."""
    seen = [S[0], S[1], S[9]]
    points = [GroundedPoint(s, *pos(o, S.index(s))) for s in seen for o in "ab"]
    m = evaluate([result("p", TaskKind.POINT, points=points, frame_stamps_ns=seen)], truth())["per_query"]["p"]
    assert m["point_recall"] == 1.0 and m["gt_points"] == 6


def test_results_without_frame_stamps_are_refused_with_a_clear_error(tmp_path, capsys):
    old = result_to_dict(result("p", TaskKind.POINT))
    del old["frame_stamps_ns"], old["confidence"], old["closing"]
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(old) + "\n")
    with pytest.raises(ResultsError, match="line 1 has no frame_stamps_ns.*replay the bag again"):
        load_results(path)
    # the command line says so in one line
    from molmo2_ros.cli import main

    (tmp_path / "scenario.json").write_text(json.dumps(truth().data))
    assert main(["eval", str(path), str(tmp_path / "scenario.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


# ---- cross-check against py-motmetrics (an independent CLEAR-MOT implementation) ------------------------------
def motmetrics_scores(results: list[QueryResult], gt: GroundTruth, objects: list[str], radius: float) -> dict:
    """MOTA, switches, misses, false positives and matches from py-motmetrics on the same per-stamp input as
    evaluate.py: the frames the model saw, the latest reported trajectory point of each track per stamp."""
    import motmetrics as mm

    hyp: dict[int, dict[str, tuple[float, float]]] = {}
    stamps: set[int] = set()
    for r in results:
        stamps.update(r.frame_stamps_ns)
        for t in r.tracks:
            for p in t.trajectory:
                hyp.setdefault(p.stamp_ns, {})[t.id] = (p.x, p.y)
    oid = {o: i for i, o in enumerate(objects)}
    hid: dict[str, int] = {}
    acc = mm.MOTAccumulator()
    for k, s in enumerate(sorted(stamps)):
        gts = {o: g for o in objects if (g := gt.visible(o, s)) is not None}
        hs = hyp.get(s, {})
        dist = np.array([[d if (d := math.dist(g, h)) <= radius else np.nan for h in hs.values()]
                         for g in gts.values()], dtype=float).reshape(len(gts), len(hs))
        acc.update([oid[o] for o in gts], [hid.setdefault(t, len(hid)) for t in hs], dist, frameid=k)
    row = mm.metrics.create().compute(acc, metrics=["mota", "num_switches", "num_misses", "num_false_positives",
                                                     "num_matches"], name="x").iloc[0]
    return {"mota": float(row["mota"]), "id_switches": int(row["num_switches"]),
            "track_false_negatives": int(row["num_misses"]), "track_false_positives": int(row["num_false_positives"]),
            "track_matches": int(row["num_matches"] + row["num_switches"])}  # motmetrics counts a switch apart


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from molmo2_ros.offline.data.scenario import generate_scenario

    out = tmp_path_factory.mktemp("synthetic")
    bag = generate_scenario(out, seconds=12.0, fps=10.0, width=320, height=240)
    return bag, GroundTruth.load(out / "scenario.json")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracking_metrics_equal_py_motmetrics_on_noisy_oracle_replays(synthetic, tmp_path, seed):
    from molmo2_ros.offline.evaluation.oracle import NoiseConfig, OracleEngine
    from molmo2_ros.offline.replay import replay

    bag, gt = synthetic
    queries = [Query(q["id"], TaskKind(q["task"]), q["text"]) for q in gt.data["queries"] if q["task"] == "track"]
    noise = NoiseConfig(jitter=0.04, drop=0.2, id_swap=0.5, hallucinate=0.3, seed=seed)
    summary = replay(bag, tmp_path, OracleEngine(gt, noise), queries, gif=False, progress=False)
    results = load_results(summary.results_path)
    report = evaluate(results, gt)
    checked = 0
    for q in queries:
        mine = report["per_query"][q.id]
        ref = motmetrics_scores([r for r in results if r.query.id == q.id], gt, gt.queries[q.id]["objects"],
                                report["radius_px"])
        assert {k: mine[k] for k in ref} == pytest.approx(ref), q.id
        checked += ref["id_switches"] + ref["track_false_positives"]
    assert checked > 0  # the noise really exercised switches and false positives


@pytest.mark.parametrize("seed", range(5))
def test_tracking_metrics_equal_py_motmetrics_on_dense_random_scenes(seed):
    """Six objects random-walking in a 20x20 px square, hypotheses with 4 px noise, radius 7 px: constellations where
    the nearest pair first is not the best assignment are common here (the synthetic world's balls are too far
    apart for that: there the old nearest-first matching agreed with py-motmetrics too; here it differed on 3 of
    these 5 seeds)."""
    rng = np.random.default_rng(seed)
    stamps = [S[0] + k * 100_000_000 for k in range(40)]
    walk = np.clip(np.cumsum(rng.normal(0, 1.5, (len(stamps), 6, 2)), axis=0) + rng.uniform(0, 20, (1, 6, 2)), 0, 20)
    visible = rng.random((len(stamps), 6)) > 0.1
    objects = [{"id": f"o{i}", "label": "dot", "track": [[s, *map(float, walk[k, i]), bool(visible[k, i])]
                                                          for k, s in enumerate(stamps)]} for i in range(6)]
    gt = GroundTruth({"version": 1, "camera_topic": "/c", "width": 60, "height": 60, "frame_id": "c", "fps": 10.0,
                      "frames": stamps, "objects": objects, "events": [],
                      "queries": [{"id": "t", "task": "track", "text": "dot", "objects": [o["id"] for o in objects]}]})
    # hypotheses: each object's position with 4 px noise under an id that changes now and then, plus clutter
    owner = list(range(6))
    trajectories: dict[str, list[GroundedPoint]] = {}
    for k, s in enumerate(stamps):
        if rng.random() < 0.15:
            a, b = rng.choice(6, 2, replace=False)
            owner[a], owner[b] = owner[b], owner[a]
        for i in range(6):
            if visible[k, i] and rng.random() > 0.1:
                x, y = walk[k, i] + rng.normal(0, 4.0, 2)
                trajectories.setdefault(f"t/t{owner[i]}", []).append(GroundedPoint(s, float(x), float(y)))
        if rng.random() < 0.3:
            trajectories.setdefault("t/clutter", []).append(GroundedPoint(s, *map(float, rng.uniform(0, 20, 2))))
    tracks = [Track(tid, "dot", TrackStatus.TRACKED, pts[0].stamp_ns, pts[-1].stamp_ns, pts)
              for tid, pts in trajectories.items()]
    results = [result("t", TaskKind.TRACK, tracks=tracks, frame_stamps_ns=stamps)]
    radius = 7.0
    mine = evaluate(results, gt, radius_frac=radius / gt.diagonal)["per_query"]["t"]
    ref = motmetrics_scores(results, gt, [o["id"] for o in objects], radius)
    assert {k: mine[k] for k in ref} == pytest.approx(ref)


def test_convert_annotations_percent_to_pixels():
    from molmo2_ros.offline.evaluation.convert import convert_annotations

    items = [{"video": "v.mp4", "fps": 2, "label": "penguin",
              "points": [{"time": 0.0, "x": 50, "y": 25, "id": 1}, {"time": 0.5, "x": 10, "y": 10, "id": 2}]}]
    gt = GroundTruth(convert_annotations(items, width=200, height=100)["v.mp4"])
    assert gt.visible("penguin_1", gt.frames[0]) == (100.0, 25.0)
    assert gt.visible("penguin_2", gt.frames[0]) is None and gt.queries["penguin"]["objects"] == ["penguin_1", "penguin_2"]


def test_convert_ai2_point_tracking_records(tmp_path):
    """Records in the schema of Ai2's published point-tracking datasets (frame_trajectories, pixel points)."""
    from molmo2_ros.offline.evaluation.convert import convert_file

    record = {"id": "q1", "video": "clip_7.mp4", "expression": "the left dog", "fps": 30, "sampling_fps": 2,
              "width": 640, "height": 480, "n_frames": 60, "task": "track",
              "frame_trajectories": [
                  {"frame": 0, "time": 0.0, "points": [{"id": 0, "point": [100.0, 200.0], "occluded": False}]},
                  {"frame": 15, "time": 0.5, "points": [{"id": 0, "point": [110.0, 205.0], "occluded": True}]},
                  {"frame": 30, "time": 1.0, "points": [{"id": 0, "point": [120.0, 210.0], "occluded": False}]}]}
    path = tmp_path / "ann.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [written] = convert_file(path, tmp_path / "out", width=1, height=1)
    gt = GroundTruth(json.loads(written.read_text()))
    obj = gt.queries["the_left_dog"]["objects"][0]
    assert len(gt.frames) == 3
    assert gt.visible(obj, gt.frames[0]) == (100.0, 200.0)
    assert gt.visible(obj, gt.frames[1]) is None  # occluded
    assert gt.visible(obj, gt.frames[2]) == (120.0, 210.0)


def test_video_to_bag_stamps_match_converted_ground_truth(tmp_path):
    import cv2
    import numpy as np
    from rosbags.highlevel import AnyReader

    from molmo2_ros.offline.evaluation.convert import DEFAULT_START_NS
    from molmo2_ros.offline.data.video_bag import video_to_bag

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(12):
        writer.write(np.full((48, 64, 3), 20 * k, np.uint8))
    writer.release()
    assert video_to_bag(video, tmp_path / "bag") == 12
    with AnyReader([tmp_path / "bag"]) as reader:
        stamps = [t for _, t, _ in reader.messages()]
    assert stamps == [DEFAULT_START_NS + k * 100_000_000 for k in range(12)]
