"""Property tests: parse_answer never raises on any text and runs in linear time."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo2_ros.core.parsing import parse_answer
from molmo2_ros.core.types import ParsedAnswer

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

_PIECES = ["<points", "<tracks", "</points>", "</tracks>", " coords=", " alt=", '"', ">", "<", ";", "\t", " ",
           "0.5", "1", "-3", "1000", "1001", "016", "99999999999999999999", ".", "There are ", "none",
           "Counting the ", " shows a total of ", "No tracks available", "x", "²", "\n", "/>", "/", ":", ","]

grammarish = st.lists(st.sampled_from(_PIECES) | st.integers(0, 2000).map(str), max_size=60).map("".join)


def _check(r: ParsedAnswer, text: str) -> None:
    assert r.text == text
    assert r.kind in {"points", "tracks", "count", "none", "prose"}
    assert all(isinstance(v, int) and v >= 0 for v in r.dropped.values())
    assert all(0 <= p.x <= 1000 and 0 <= p.y <= 1000 and p.key >= 0 for p in r.points)
    assert r.count is None or r.count >= 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    _check(parse_answer(text), text)


@settings(max_examples=500, deadline=None)
@given(grammarish, st.integers(0, 5))
def test_grammar_like_text_never_raises(text, max_points):
    r = parse_answer(text, max_points=max_points)
    _check(r, text)
    assert len(r.points) <= max_points


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.integers(1, 50), st.integers(0, 1000), st.integers(0, 1000)),
                min_size=1, max_size=30))
def test_well_formed_points_round_trip(groups):
    coords = ";".join(f"{t / 10:.1f} {i} {x:03d} {y:03d}" for t, i, x, y in groups)
    r = parse_answer(f'<points coords="{coords}">thing</points>')
    assert r.kind == "points" and r.label == "thing" and not r.dropped
    assert [(p.key, p.object_id, p.x, p.y) for p in r.points] == [(t / 10, i, x, y) for t, i, x, y in groups]


def _best_time(text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        parse_answer(text, max_points=10**9)
        best = min(best, time.perf_counter() - t0)
    return best


def test_linear_time():
    unit = '<points coords="0.5 1 100 200 2 300 400;1.0 3 500 600">x</points> <tracks coords="1 2 3'
    nasty = ['<points alt="', "<points coords=", '<points coords="0.5 1 1 1">', "<", "; 1 1 1 1", '"']
    for piece in [unit] + nasty:
        small = (piece * (2_000 // len(piece) + 1))[:2_000]
        large = (piece * (200_000 // len(piece) + 1))[:200_000]
        t_small = max(_best_time(small, 20), 2e-5)
        t_large = _best_time(large, 3)
        # 100x the input: linear is ~100x the time, quadratic ~10,000x; 1,000x leaves room for a busy machine
        assert t_large < 1_000 * t_small + 0.05, (piece, t_small, t_large)
