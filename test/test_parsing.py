"""parse_answer over every form of Molmo2's output grammar, and over broken answers."""

import pytest

from molmo2_ros.core.parsing import parse_answer
from molmo2_ros.core.types import RawPoint

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

PENGUINS = '<points coords="0.5 1 100 200 2 555 602;2.0 3 900 100">penguins</points>'
PEOPLE = ('<tracks coords="0.0 1 156 417 2 625 625;0.5 1 188 438 2 594 646;1.0 2 562 667;'
          '1.5 1 234 479 3 016 979">people</tracks>')


def test_points_example():
    r = parse_answer(PENGUINS)
    assert r.kind == "points"
    assert r.label == "penguins"
    assert r.count is None
    assert r.points == [RawPoint(0.5, 1, 100, 200), RawPoint(0.5, 2, 555, 602), RawPoint(2.0, 3, 900, 100)]
    assert not r.dropped
    assert r.text == PENGUINS


def test_tracks_example():
    r = parse_answer(PEOPLE)
    assert r.kind == "tracks"
    assert r.label == "people"
    assert [(p.key, p.object_id, p.x, p.y) for p in r.points] == [
        (0.0, 1, 156, 417), (0.0, 2, 625, 625), (0.5, 1, 188, 438), (0.5, 2, 594, 646),
        (1.0, 2, 562, 667), (1.5, 1, 234, 479), (1.5, 3, 16, 979)]
    assert not any(p.key_is_index for p in r.points)
    assert not r.dropped


def test_alt_attribute_tab_separator_and_unpadded():
    r = parse_answer('<points alt="red cups" coords="1.0 1 5 7\t2.5 2 1000 0">red cups</points>')
    assert r.kind == "points" and r.label == "red cups"
    assert [(p.key, p.x, p.y) for p in r.points] == [(1.0, 5, 7), (2.5, 1000, 0)]


def test_alt_is_label_fallback_and_whitespace_tolerated():
    r = parse_answer('<points  alt = "mug"\ncoords="0.0 1 010 020" ></points>')
    assert r.label == "mug"
    assert r.points == [RawPoint(0.0, 1, 10, 20)]
    assert not r.dropped


def test_image_index_keys():
    r = parse_answer('<points coords="1 1 100 200;2 2 300 400">cat</points>')
    assert [(p.key, p.key_is_index) for p in r.points] == [(1.0, True), (2.0, True)]


def test_several_elements_take_all_points_first_label():
    r = parse_answer('<points coords="0.5 1 1 2">cat</points> and <points coords="1.0 2 3 4">dog</points>')
    assert r.kind == "points" and r.label == "cat"
    assert [p.object_id for p in r.points] == [1, 2]


@pytest.mark.parametrize("text, count, n_points", [
    ('Counting the <points coords="0.5 1 100 200 2 300 400">apples</points> shows a total of 2.', 2, 2),
    ('There are 3 <points coords="0.5 1 100 200 2 300 400 3 500 600">apples</points>.', 3, 3),
    ("4", 4, 0),
    ("  12.\n", 12, 0),
    ("0", 0, 0),
])
def test_counting_forms(text, count, n_points):
    r = parse_answer(text)
    assert r.count == count
    assert len(r.points) == n_points
    assert r.kind == ("count" if n_points == 0 else "points")
    assert not r.dropped


def test_points_without_number_leave_count_none():
    assert parse_answer(PENGUINS).count is None


@pytest.mark.parametrize("text", ["There are none.", "No tracks available.", " there are none ", "No tracks available"])
def test_none_forms(text):
    r = parse_answer(text)
    assert r.kind == "none" and r.points == [] and r.count is None


@pytest.mark.parametrize("text", ["", "A man is walking a dog in the park.", "There are none of them here.",
                                  "<point x='1'>", "1.5", "<pointsx coords=\"0.5 1 1 1\">"])
def test_prose(text):
    r = parse_answer(text)
    assert r.kind == "prose" and r.points == [] and r.count is None and not r.dropped


def test_huge_numbers_are_dropped_and_counted():
    r = parse_answer("99999999999999999999")
    assert r.kind == "count" and r.count is None and r.dropped == {"bad_number": 1}
    r = parse_answer('There are 99999999999999999999 <points coords="0.5 1 1 1">x</points>.')
    assert r.count is None and r.dropped["bad_number"] == 1 and len(r.points) == 1
    r = parse_answer('<points coords="99999999999999999999.5 1 1 1;0.5 99999999999999999999 2 2;'
                     '0.5 1 99999999999999999999 3;0.5 1 3 ' + "9" * 5000 + '">x</points>')
    assert r.points == []
    assert r.dropped == {"bad_number": 2, "coord_out_of_range": 2}


def test_out_of_range_drops_only_that_point():
    r = parse_answer('<points coords="0.5 1 1001 5 2 10 20 3 -4 5 4 5 -0">x</points>')
    assert [p.object_id for p in r.points] == [2, 4]
    assert r.dropped == {"coord_out_of_range": 2}


def test_malformed_groups_and_points():
    r = parse_answer('<points coords="0.5 1 100;abc 1 2 3;0.5 1 2 3 4;;0.5 x 1 2 2 3 4;1.0 1 2.5 3;'
                     '1.2.3 1 2 3;0.5 1 ² 3; 2.0 7 8 9 ">x</points>')
    assert [(p.key, p.object_id) for p in r.points] == [(0.5, 2), (2.0, 7)]
    assert r.dropped == {"malformed_group": 4, "malformed_point": 3}


def test_truncated_inside_coords_keeps_complete_groups():
    r = parse_answer('<points coords="0.5 1 100 200;1.0 2 300 4')
    assert r.kind == "points"
    assert r.points == [RawPoint(0.5, 1, 100, 200)]
    assert r.dropped == {"truncated_tag": 1}


def test_truncated_after_coords_or_in_label():
    r = parse_answer('<points coords="0.5 1 100 200;1.0 2 300 400"')
    assert len(r.points) == 2 and r.dropped == {"truncated_tag": 1}
    r = parse_answer('<tracks coords="0.5 1 100 200">peop')
    assert r.kind == "tracks" and r.label == "peop" and len(r.points) == 1 and r.dropped == {"truncated_tag": 1}
    r = parse_answer('<points coords="0.5 1 1 2">cat <points coords="1.0 2 3 4">dog</points>')
    assert r.label == "cat" and len(r.points) == 2 and r.dropped == {"truncated_tag": 1}
    r = parse_answer('<points alt="cu')
    assert r.points == [] and r.dropped == {"truncated_tag": 1}


def test_malformed_tags():
    r = parse_answer('<points>cat</points> <points coords=1>x</points> <tracks "x">y</tracks>')
    assert r.kind == "prose" and r.dropped == {"malformed_tag": 3}


def test_max_points():
    coords = ";".join(f"{i / 10:.1f} {i} 100 100" for i in range(1, 21))
    r = parse_answer(f'<points coords="{coords}">x</points><points coords="{coords}">x</points>', max_points=15)
    assert len(r.points) == 15
    assert r.dropped == {"too_many_points": 25}
    assert parse_answer(f'<points coords="{coords}">x</points>', max_points=0).dropped == {"too_many_points": 20}


# ---- edge cases checked against Ai2's reference (olmo/preprocessing/point_formatter.py, UnifiedPointFormatter:
# coord_regex `<(?:points|tracks).*? coords="([0-9\t:;, .]+)"/?>`, frame_regex `(?:^|\t|:|,|;)KEY POINTS`,
# extract_tracks keeps the first point of an object id at one time) ----
@pytest.mark.parametrize("sep", [":", ",", "\t", ";"])
def test_every_group_separator_of_the_reference_splits_groups(sep):
    r = parse_answer(f'<points coords="0.5 1 100 200{sep}1.0 2 300 400{sep}1.5 3 500 600">cat</points>')
    assert [(p.key, p.object_id, p.x, p.y) for p in r.points] == [
        (0.5, 1, 100, 200), (1.0, 2, 300, 400), (1.5, 3, 500, 600)]
    assert not r.dropped


def test_a_point_never_lands_on_the_previous_groups_time():
    """Before the fix `:` and `,` were not separators: '200:1.0' broke one point and the next point of the 1.0 s
    group was put on 0.5 s, a wrong stamp."""
    r = parse_answer('<tracks coords="0.5 1 100 200,1.0 1 300 400 2 500 600">x</tracks>')
    assert [(p.key, p.object_id) for p in r.points] == [(0.5, 1), (1.0, 1), (1.0, 2)]


def test_self_closing_element():
    r = parse_answer('<points coords="0.5 1 100 200;1.0 2 300 400"/>')
    assert r.kind == "points" and r.label == "" and not r.dropped
    assert r.points == [RawPoint(0.5, 1, 100, 200), RawPoint(1.0, 2, 300, 400)]
    r = parse_answer('Counting the <points alt="cups" coords="1 1 100 200 2 300 400" /> shows a total of 2.')
    assert r.label == "cups" and r.count == 2 and len(r.points) == 2 and not r.dropped
    r = parse_answer('<tracks coords="0.0 1 100 200"/><points coords="0.5 2 300 400">dog</points>')
    assert r.kind == "tracks" and [p.object_id for p in r.points] == [1, 2] and r.label == ""
    assert parse_answer('<points coords="0.5 1 100 200"/').dropped == {"truncated_tag": 1}
    assert parse_answer('<points coords="0.5 1 1 2"/ >x').dropped == {"malformed_tag": 1}


def test_track_answer_keeps_the_first_point_of_an_object_at_one_time():
    r = parse_answer('<tracks coords="0.5 1 100 200 1 900 900 2 300 400;1.0 1 110 210;0.50 2 0 0">p</tracks>')
    assert [(p.key, p.object_id, p.x) for p in r.points] == [(0.5, 1, 100), (0.5, 2, 300), (1.0, 1, 110)]
    assert r.dropped == {"duplicate_object": 2}
    # across elements of one answer too; pointing answers keep every point (ids are running numbers there)
    assert parse_answer('<tracks coords="0.5 1 1 2">a</tracks><tracks coords="0.5 1 3 4">a</tracks>').dropped == {
        "duplicate_object": 1}
    assert len(parse_answer('<points coords="0.5 1 1 2 1 3 4">a</points>').points) == 2
