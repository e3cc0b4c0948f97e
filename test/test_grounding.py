"""ground_points: clip-relative keys to exact frame stamps, 0..1000 coordinates to original pixels."""

import numpy as np
import pytest

from molmo2_ros.core.grounding import ground_points
from molmo2_ros.core.parsing import parse_answer
from molmo2_ros.core.types import NS_PER_S, Clip, ClipFrame, Frame, GroundedPoint

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S


def make_clip(rel_s, width=640, height=480):
    image = np.zeros((height, width, 3), np.uint8)
    frames = tuple(ClipFrame(Frame(T0 + round(t * NS_PER_S), image, "cam"), i, (3, 3)) for i, t in enumerate(rel_s))
    return Clip(index=0, frames=frames)


def stamp(t):
    return T0 + round(t * NS_PER_S)


def test_pixels_of_non_square_original_image():
    clip = make_clip([0.0, 0.5, 1.0])
    points, dropped = ground_points(parse_answer('<points coords="0.5 1 500 500 2 1000 0 3 016 979">x</points>'), clip)
    assert not dropped
    assert [(p.x, p.y) for p in points] == [(320.0, 240.0), (640.0, 0.0), (16 / 1000 * 640, 979 / 1000 * 480)]
    assert all(p.stamp_ns == stamp(0.5) and p.label == "x" for p in points)
    assert [p.object_id for p in points] == ["", "", ""]  # running point numbers are not identities


def test_irregular_stamps_nearest_frame():
    rel = [0.0, 0.37, 0.52, 1.43, 2.0]
    clip = make_clip(rel, width=1920, height=1080)
    parsed = parse_answer('<points coords="0.0 1 1 1;0.4 2 1 1;0.5 3 1 1;1.0 4 1 1;1.4 5 1 1;2.0 6 1 1">x</points>')
    points, dropped = ground_points(parsed, clip)
    assert not dropped
    assert [p.stamp_ns for p in points] == [stamp(t) for t in [0.0, 0.37, 0.52, 1.43, 1.43, 2.0]]


def test_times_outside_clip_dropped():
    # median spacing 0.5 s -> tolerance 0.25 s on each side
    clip = make_clip([0.0, 0.5, 1.0, 1.5])
    parsed = parse_answer('<points coords="1.7 1 1 1;1.8 2 1 1;9.9 3 1 1">x</points>')
    points, dropped = ground_points(parsed, clip)
    assert [p.stamp_ns for p in points] == [stamp(1.5)]
    assert dropped == {"time_outside_clip": 2}


def test_minimum_tolerance_and_single_frame_clip():
    dense = make_clip([0.0, 0.1, 0.2])
    points, dropped = ground_points(parse_answer('<points coords="0.3 1 1 1;0.4 2 1 1">x</points>'), dense)
    assert [p.stamp_ns for p in points] == [stamp(0.2)] and dropped == {"time_outside_clip": 1}
    single = make_clip([0.0])
    points, dropped = ground_points(parse_answer('<points coords="0.1 1 1 1;0.2 2 1 1">x</points>'), single)
    assert [p.stamp_ns for p in points] == [stamp(0.0)] and dropped == {"time_outside_clip": 1}


def test_image_index_keys():
    clip = make_clip([0.0, 0.5, 1.0])
    parsed = parse_answer('<points coords="1 1 100 100;3 2 200 200;4 3 1 1;0 4 1 1">x</points>')
    points, dropped = ground_points(parsed, clip)
    assert [p.stamp_ns for p in points] == [stamp(0.0), stamp(1.0)]
    assert dropped == {"index_outside_clip": 2}


def test_model_object_numbers_only_for_track_association():
    clip = make_clip([0.0, 0.5, 1.0, 1.5])
    parsed = parse_answer('<tracks coords="0.0 1 156 417 2 625 625;0.5 1 188 438 2 594 646;1.0 2 562 667;'
                          '1.5 1 234 479 3 016 979">people</tracks>')
    points, dropped = ground_points(parsed, clip, model_ids=True)
    assert not dropped
    assert [p.object_id for p in points] == ["1", "2", "1", "2", "2", "1", "3"]
    assert points[-1] == GroundedPoint(stamp(1.5), 16 / 1000 * 640, 979 / 1000 * 480, "people", "3")
    # by default a point carries no object id: GroundedPoint.object_id means a persistent track id or nothing
    assert {p.object_id for p in ground_points(parsed, clip)[0]} == {""}


@pytest.mark.parametrize("text", ["There are none.", "Some prose.", "7"])
def test_no_points(text):
    assert ground_points(parse_answer(text), make_clip([0.0, 0.5])) == ([], {})
