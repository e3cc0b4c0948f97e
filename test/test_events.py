"""EventMerger: one stable event per occurrence across overlapping windows."""

import numpy as np
import pytest

from molmo2_ros.core.events import MAX_EVIDENCE, EventMerger
from molmo2_ros.core.types import NS_PER_S, Clip, ClipFrame, EventState, Frame, GroundedPoint, Query, TaskKind

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S
DT = NS_PER_S // 2  # 2 fps
IMAGE = np.zeros((480, 640, 3), np.uint8)
QUERY = Query(id="door", task=TaskKind.EVENT, text="a person opens the door")


def stamp(i):
    return T0 + i * DT


def make_clip(first, last):
    return Clip(index=first, frames=tuple(ClipFrame(Frame(stamp(i), IMAGE), i, (3, 3)) for i in range(first, last + 1)))


def pts(frames, label=""):
    return [GroundedPoint(stamp(i), 320.0, 240.0, label=label) for i in frames]


def summary(events):
    return [(e.id, e.state, e.start_ns, e.end_ns) for e in events]


def test_one_event_across_overlapping_windows():
    merger = EventMerger(QUERY)
    out = merger.update(make_clip(0, 7), pts([5, 6, 7]))
    assert summary(out) == [("door/e1", EventState.STARTED, stamp(5), stamp(7))]
    assert out[0].query_id == "door" and out[0].query == QUERY.text and out[0].description == QUERY.text
    out = merger.update(make_clip(4, 11), pts([5, 6, 7, 8, 9], label="someone opens it"))
    assert summary(out) == [("door/e1", EventState.ONGOING, stamp(5), stamp(9))]
    assert [p.stamp_ns for p in out[0].evidence] == [stamp(i) for i in range(5, 10)]
    assert out[0].description == "someone opens it"  # the model's label for the moments it pointed at
    # the next window still shows the tail, then nothing
    out = merger.update(make_clip(8, 15), pts([9]))
    assert out[0].description == "someone opens it"  # an answer without a label keeps the last one
    assert summary(out) == [("door/e1", EventState.ONGOING, stamp(5), stamp(9))]
    out = merger.update(make_clip(12, 19), [])
    assert summary(out) == [("door/e1", EventState.ENDED, stamp(5), stamp(9))]
    assert merger.update(make_clip(16, 23), []) == []
    assert merger.total_events == 1


def test_open_event_without_new_evidence_is_not_reported_until_it_ends():
    merger = EventMerger(QUERY, max_gap_s=1.0)
    merger.update(make_clip(0, 5), pts([4, 5]))
    assert merger.update(make_clip(2, 7), []) == []  # end (frame 5) + 1 s == clip end (frame 7): still open
    out = merger.update(make_clip(4, 8), [])
    assert summary(out) == [("door/e1", EventState.ENDED, stamp(4), stamp(5))]


def test_span_within_gap_extends_the_event():
    merger = EventMerger(QUERY, max_gap_s=1.0)
    merger.update(make_clip(0, 7), pts([2, 3]))
    out = merger.update(make_clip(2, 9), pts([5, 6]))  # 1.0 s after the event's end
    assert summary(out) == [("door/e1", EventState.ONGOING, stamp(2), stamp(6))]
    assert merger.total_events == 1


def test_two_separate_events_and_total():
    merger = EventMerger(QUERY, max_gap_s=1.0)
    out = merger.update(make_clip(0, 15), pts([1, 2, 3, 10, 11]))
    assert summary(out) == [("door/e1", EventState.STARTED, stamp(1), stamp(3)),
                            ("door/e2", EventState.STARTED, stamp(10), stamp(11))]
    out = merger.update(make_clip(8, 23), pts([11, 12, 20]))
    assert summary(out) == [("door/e1", EventState.ENDED, stamp(1), stamp(3)),
                            ("door/e2", EventState.ONGOING, stamp(10), stamp(12)),
                            ("door/e3", EventState.STARTED, stamp(20), stamp(20))]
    out = merger.update(make_clip(30, 31), [])
    assert summary(out) == [("door/e2", EventState.ENDED, stamp(10), stamp(12)),
                            ("door/e3", EventState.ENDED, stamp(20), stamp(20))]
    out = merger.update(make_clip(40, 45), pts([40]))
    assert [e.id for e in out] == ["door/e4"]  # ended ids are never reused
    assert merger.total_events == 4


def test_evidence_deduplicated_and_capped():
    merger = EventMerger(QUERY, max_gap_s=1.0)
    merger.update(make_clip(0, 49), pts(range(50)) + pts([10]))
    out = merger.update(make_clip(30, 79), pts(range(30, 80)))
    evidence = out[0].evidence
    assert len(evidence) == MAX_EVIDENCE
    assert [p.stamp_ns for p in evidence] == [stamp(i) for i in range(80 - MAX_EVIDENCE, 80)]
    assert (out[0].start_ns, out[0].end_ns) == (stamp(0), stamp(79))


def test_two_points_on_one_stamp_keep_the_first_as_evidence():
    merger = EventMerger(QUERY)
    first, second = GroundedPoint(stamp(3), 10.0, 20.0), GroundedPoint(stamp(3), 500.0, 400.0)
    [event] = merger.update(make_clip(0, 5), [first, second])
    assert event.evidence == [first]


def test_returned_events_are_snapshots():
    merger = EventMerger(QUERY)
    first = merger.update(make_clip(0, 3), pts([1, 2]))[0]
    merger.update(make_clip(2, 5), pts([3, 4]))
    assert first.state == EventState.STARTED and len(first.evidence) == 2


def test_finish_ends_every_open_event_once():
    merger = EventMerger(QUERY)
    merger.update(make_clip(0, 7), pts([1, 2]) + pts([6, 7]))
    ended = merger.finish()
    assert summary(ended) == [("door/e1", EventState.ENDED, stamp(1), stamp(2)),
                              ("door/e2", EventState.ENDED, stamp(6), stamp(7))]
    assert [p.stamp_ns for p in ended[1].evidence] == [stamp(6), stamp(7)]
    assert merger.finish() == [] and merger.update(make_clip(4, 11), []) == []
