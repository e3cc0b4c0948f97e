"""Evaluation metrics on hand-made cases with known answers."""

import json

from molmo2_ros.core.types import (Event, EventState, GroundedPoint, Query, QueryResult, TaskKind, Track,
                                   TrackStatus)
from molmo2_ros.offline.evaluate import evaluate
from molmo2_ros.offline.scenario import GroundTruth

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
    return QueryResult(query=Query(qid, task, "ball"), clip_index=0, clip_start_ns=S[0], clip_end_ns=S[-1],
                       frame_id="c", width=100, height=100, num_frames=10, num_visual_tokens=0, text="",
                       model_id="test", inference_s=0.0, **kw)


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


def test_convert_annotations_percent_to_pixels():
    from molmo2_ros.offline.convert import convert_annotations

    items = [{"video": "v.mp4", "fps": 2, "label": "penguin",
              "points": [{"time": 0.0, "x": 50, "y": 25, "id": 1}, {"time": 0.5, "x": 10, "y": 10, "id": 2}]}]
    gt = GroundTruth(convert_annotations(items, width=200, height=100)["v.mp4"])
    assert gt.visible("penguin_1", gt.frames[0]) == (100.0, 25.0)
    assert gt.visible("penguin_2", gt.frames[0]) is None and gt.queries["penguin"]["objects"] == ["penguin_1", "penguin_2"]


def test_convert_ai2_point_tracking_records(tmp_path):
    """Records in the schema of Ai2's published point-tracking datasets (frame_trajectories, pixel points)."""
    from molmo2_ros.offline.convert import convert_file

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

    from molmo2_ros.offline.convert import DEFAULT_START_NS
    from molmo2_ros.offline.video_bag import video_to_bag

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for k in range(12):
        writer.write(np.full((48, 64, 3), 20 * k, np.uint8))
    writer.release()
    assert video_to_bag(video, tmp_path / "bag") == 12
    with AnyReader([tmp_path / "bag"]) as reader:
        stamps = [t for _, t, _ in reader.messages()]
    assert stamps == [DEFAULT_START_NS + k * 100_000_000 for k in range(12)]
