"""One place for track and event ids (built and read in core/tracks.py) and one colour per query in every view: the
node's overlay and RViz markers, the bag's Foxglove annotations, the demo video and the HTML report."""

from __future__ import annotations

import numpy as np
import pytest

from molmo2_ros.core.colours import PALETTE, id_colour
from molmo2_ros.core.events import EventMerger
from molmo2_ros.core.overlay import draw_overlay
from molmo2_ros.core.tracks import TrackAssociator, event_id, split_id, track_id
from molmo2_ros.core.types import (Clip, ClipFrame, Frame, GroundedPoint, Lifted3D, LiftStatus, Point3D, Query,
                                   QueryResult, TaskKind, Track, TrackStatus)

T = 1_700_000_000_000_000_000
QUERY_IDS = ("ball_point", "square_count", "ball_track", "cup_3")


def test_ids_are_built_and_read_back_in_one_place():
    assert (track_id("ball_track", 3), event_id("ball_fall", 12)) == ("ball_track/t3", "ball_fall/e12")
    assert split_id("ball_track/t3") == ("ball_track", 3) and split_id("ball_fall/e12") == ("ball_fall", 12)
    for bad in ("ball", "ball/", "/t1", "ball/x1", "ball/t", "ball/t1a"):
        with pytest.raises(ValueError, match="not a track or event id"):
            split_id(bad)


def test_the_ids_trackers_and_event_mergers_make_read_back():
    clip = Clip(index=0, frames=(ClipFrame(Frame(T, np.zeros((48, 64, 3), np.uint8)), 0, (3, 3)),))
    points = {1: [GroundedPoint(T, 1.0, 2.0)], 2: [GroundedPoint(T, 40.0, 30.0)]}
    tracks = TrackAssociator("q_track").update(clip, points)
    assert [split_id(t.id) for t in tracks] == [("q_track", 1), ("q_track", 2)]
    [event] = EventMerger(Query("q_event", TaskKind.EVENT, "falls")).update(clip, points[1])
    assert split_id(event.id) == ("q_event", 1)


def _result(qid: str, task: TaskKind) -> QueryResult:
    """A point result (a point on the clip's older frame, one on its newest) or a track result, with 3D."""
    p = GroundedPoint(T, 300.0, 200.0, "ball", f"{qid}/t1" if task == TaskKind.TRACK else "")
    r = QueryResult(query=Query(qid, task, "ball"), clip_index=0, clip_start_ns=T - 100, clip_end_ns=T,
                    frame_id="cam", width=64, height=48, num_frames=1, num_visual_tokens=81, text="", model_id="m",
                    inference_s=0.1, frame_stamps_ns=[T])
    if task == TaskKind.TRACK:
        r.tracks = [Track(f"{qid}/t1", "ball", TrackStatus.TRACKED, T, T, [p])]
        r.lifted = Lifted3D("cam", tracks={f"{qid}/t1": [Point3D(p, LiftStatus.OK, (0.1, 0.2, 1.0), 1.0)]})
    else:
        r.points = [GroundedPoint(T - 100, 100.0, 100.0, "ball"), p]
        r.lifted = Lifted3D("cam", points=[Point3D(q, LiftStatus.OK, (0.1, 0.2, 1.0), 1.0) for q in r.points])
    return r


def _rgb255(colour) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in (colour.r, colour.g, colour.b))


def _has(img: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(img == np.array(colour, np.uint8), axis=2).any())


@pytest.mark.parametrize("qid", QUERY_IDS)
def test_a_query_has_one_colour_in_overlay_markers_annotations_video_and_report(qid, tmp_path):
    from molmo2_ros.offline.annotations import AnnotationBuilder, register
    from molmo2_ros.offline.report.demo_video import DemoRenderer, build_views
    from molmo2_ros.offline.replay import project_typestore
    from molmo2_ros.offline.report.report import write_report
    from molmo2_ros.ros import convert, convert_3d

    colour = id_colour(qid)
    assert colour in PALETTE
    point, track = _result(qid, TaskKind.POINT), _result(qid, TaskKind.TRACK)
    tcolour = id_colour(track.tracks[0].id)  # where tracks are told apart, each has its own
    # the node's overlay image (filled marks: the older point's dot, the track's head)
    assert _has(draw_overlay(np.zeros((480, 640, 3), np.uint8), [point]), colour)
    assert _has(draw_overlay(np.zeros((480, 640, 3), np.uint8), [track]), tcolour)
    # RViz: image markers and 3D markers
    assert _rgb255(convert.marker_msgs(point)[0].outline_color) == colour
    assert _rgb255(convert.marker_msgs(track)[0].outline_color) == tcolour
    assert _rgb255(convert_3d.marker_array(point).markers[0].color) == colour
    assert _rgb255(convert_3d.marker_array(track).markers[0].color) == tcolour
    # the replay bag's Foxglove annotations
    store = project_typestore()
    register(store)
    annotations = AnnotationBuilder(store).annotations([point, track], T)
    assert _rgb255(annotations.circles[0].outline_color) == colour
    assert _rgb255(annotations.points[0].outline_color) == tcolour
    # the demo video: the query's marks and its legend swatch
    [view] = build_views([point], None)
    assert view.colour == colour
    frame = DemoRenderer([view], [T], None, 640, 480).frame(np.zeros((480, 640, 3), np.uint8), T)
    assert _has(frame, colour)
    # the HTML report: the query's swatch and its plot line
    page = write_report(tmp_path, [point], None, video=None, title="t", settings={}, stamps=[T - 100, T]).read_text()
    rgb = f"rgb({colour[0]},{colour[1]},{colour[2]})"
    assert f'style="background:{rgb}"' in page and f'stroke="{rgb}"' in page
