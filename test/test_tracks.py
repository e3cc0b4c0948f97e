"""TrackAssociator: persistent track ids across overlapping windows whose answers renumber objects."""

import numpy as np
import pytest

from molmo2_ros.core.tracks import TrackAssociator
from molmo2_ros.core.types import NS_PER_S, Clip, ClipFrame, Frame, GroundedPoint, TrackStatus

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S
DT = NS_PER_S // 2  # 2 fps
IMAGE = np.zeros((480, 640, 3), np.uint8)  # diagonal 800 px -> default gate 40 px


def stamp(i):
    return T0 + i * DT


def make_clip(first, last, index=0):
    return Clip(index=index, frames=tuple(ClipFrame(Frame(stamp(i), IMAGE), i, (3, 3)) for i in range(first, last + 1)))


def pts(frames, pos, label="person"):
    return [GroundedPoint(stamp(i), *pos(i), label=label) for i in frames]


def walker(i):
    return 100.0 + 5 * i, 100.0


def sitter(i):
    return 400.0 + (i % 2), 300.0


def summary(tracks):
    return [(t.id, t.status) for t in tracks]


def test_ids_persist_when_the_model_swaps_its_ids():
    assoc = TrackAssociator("q")
    out1 = assoc.update(make_clip(0, 7), {1: pts(range(8), walker), 2: pts(range(8), sitter)})
    assert summary(out1) == [("q/t1", TrackStatus.NEW), ("q/t2", TrackStatus.NEW)]
    out2 = assoc.update(make_clip(4, 11), {1: pts(range(4, 12), sitter), 2: pts(range(4, 12), walker)})
    assert summary(out2) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.TRACKED)]
    out3 = assoc.update(make_clip(8, 15), {2: pts(range(8, 16), sitter), 1: pts(range(9, 16), walker)})
    assert summary(out3) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.TRACKED)]
    walk, sit = out3
    assert [p.stamp_ns for p in walk.trajectory] == [stamp(i) for i in range(16)]
    assert [(p.x, p.y) for p in walk.trajectory] == [walker(i) for i in range(16)]
    assert all(p.object_id == "q/t1" and p.label == "person" for p in walk.trajectory)
    assert all(p.object_id == "q/t2" for p in sit.trajectory)
    assert (walk.first_ns, walk.last_ns, walk.label) == (stamp(0), stamp(15), "person")


def test_lost_then_ended_exactly_once_and_ids_never_reused():
    assoc = TrackAssociator("q", lost_timeout_s=2.0)
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker), 2: pts(range(4), sitter)})
    # the sitter was last seen at frame 3 (1.5 s)
    out = assoc.update(make_clip(2, 5), {1: pts(range(2, 6), walker)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.LOST)]
    out = assoc.update(make_clip(4, 7), {1: pts(range(4, 8), walker)})  # 2.0 s unseen: still lost
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.LOST)]
    out = assoc.update(make_clip(6, 9), {1: pts(range(6, 10), walker)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.ENDED)]
    assert out[1].last_ns == stamp(3) and len(out[1].trajectory) == 4
    # something appears where the ended track was: a new id, never t2 again
    out = assoc.update(make_clip(8, 11), {1: pts(range(8, 12), walker), 2: pts(range(10, 12), sitter)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t3", TrackStatus.NEW)]


def test_lost_track_is_recovered_by_shared_stamps():
    assoc = TrackAssociator("q")
    assoc.update(make_clip(0, 5), {1: pts(range(6), sitter)})
    assert summary(assoc.update(make_clip(3, 8), {})) == [("q/t1", TrackStatus.LOST)]
    out = assoc.update(make_clip(4, 9), {1: pts(range(4, 10), sitter)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED)]


def test_continuation_without_shared_stamps():
    assoc = TrackAssociator("q")
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker)})
    # frames 2, 3 are shared but the model only reports the object from frame 4 on
    out = assoc.update(make_clip(2, 7), {1: pts(range(4, 8), walker)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED)]
    # too far from the last point: a new track; the old one is lost
    out = assoc.update(make_clip(6, 11), {1: pts(range(10, 12), lambda i: (600.0, 450.0))})
    assert summary(out) == [("q/t1", TrackStatus.LOST), ("q/t2", TrackStatus.NEW)]


def test_conflict_on_shared_stamps_makes_a_new_track():
    assoc = TrackAssociator("q")
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker)})
    out = assoc.update(make_clip(2, 5), {1: pts(range(2, 6), sitter)})
    assert summary(out) == [("q/t1", TrackStatus.LOST), ("q/t2", TrackStatus.NEW)]


def test_one_to_one_best_score_wins():
    assoc = TrackAssociator("q", gate_px=10.0)
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker)})
    near_once = [GroundedPoint(stamp(2), *walker(2)), GroundedPoint(stamp(3), 300.0, 300.0)]
    out = assoc.update(make_clip(2, 5), {1: near_once, 2: pts(range(2, 6), walker)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.NEW)]
    assert out[0].trajectory[-1].stamp_ns == stamp(5)
    assert [p.stamp_ns for p in out[1].trajectory] == [stamp(2), stamp(3)]


def test_newer_window_replaces_points_and_trajectory_is_capped():
    assoc = TrackAssociator("q", max_trajectory_points=5)
    assoc.update(make_clip(0, 3), {1: pts(range(4), sitter)})
    out = assoc.update(make_clip(2, 7), {1: pts(range(2, 8), lambda i: (410.0, 310.0))})
    traj = out[0].trajectory
    assert [p.stamp_ns for p in traj] == [stamp(i) for i in range(3, 8)]
    assert all((p.x, p.y) == (410.0, 310.0) for p in traj)
    assert out[0].first_ns == stamp(0)


def test_reset_forgets_tracks_but_keeps_counting():
    assoc = TrackAssociator("q")
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker), 2: pts(range(4), sitter)})
    assoc.reset()
    out = assoc.update(make_clip(2, 5), {1: pts(range(2, 6), walker)})
    assert summary(out) == [("q/t3", TrackStatus.NEW)]


def test_returned_tracks_are_snapshots():
    assoc = TrackAssociator("q")
    first = assoc.update(make_clip(0, 3), {1: pts(range(4), walker)})[0]
    assoc.update(make_clip(2, 5), {1: pts(range(2, 6), walker)})
    assert first.status == TrackStatus.NEW and len(first.trajectory) == 4


def test_crossing_objects_keep_their_ids_where_greedy_matching_swaps_them():
    """Two people cross (gate 20 px). The previous answer missed B at the last shared stamp; the new answer
    missed A there. Greedy best-pair-first took the pair with most stamps inside the gate (t1 with the other
    person, 3 stamps at 10-14 px) and swapped both ids; the optimal matching keeps t1 = A, t2 = B (0 px apart)."""
    def a(i):
        return 300.0 + 5 * (i - 3), 100.0

    def b(i):
        return 300.0 - 5 * (i - 3), 110.0

    assoc = TrackAssociator("q", gate_px=20.0)
    assoc.update(make_clip(0, 4), {1: pts(range(0, 5), a), 2: pts(range(0, 4), b)})
    out = assoc.update(make_clip(2, 6), {1: pts([2, 3, 5, 6], a), 2: pts(range(2, 7), b)})
    assert summary(out) == [("q/t1", TrackStatus.TRACKED), ("q/t2", TrackStatus.TRACKED)]
    assert [(p.x, p.y) for p in out[0].trajectory] == [a(i) for i in range(7)]
    assert [(p.x, p.y) for p in out[1].trajectory] == [b(i) for i in range(7)]


def test_an_object_with_two_points_on_one_stamp_keeps_the_first():
    assoc = TrackAssociator("q")
    two = [GroundedPoint(stamp(0), 100.0, 100.0), GroundedPoint(stamp(0), 500.0, 400.0)]
    [track] = assoc.update(make_clip(0, 1), {1: two})
    assert [(p.x, p.y) for p in track.trajectory] == [(100.0, 100.0)]


def test_finish_ends_every_open_track_once():
    assoc = TrackAssociator("q")
    assoc.update(make_clip(0, 3), {1: pts(range(4), walker), 2: pts(range(2), sitter)})
    ended = assoc.finish()
    assert summary(ended) == [("q/t1", TrackStatus.ENDED), ("q/t2", TrackStatus.ENDED)]
    assert len(ended[0].trajectory) == 4
    assert assoc.finish() == []
    assert summary(assoc.update(make_clip(4, 5), {1: pts(range(4, 6), walker)})) == [("q/t3", TrackStatus.NEW)]
