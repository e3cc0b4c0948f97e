"""3D lifting (core/depth.py): deprojection against hand-computed cases (pinhole, plumb_bob, rational_polynomial,
equidistant), depth look-up between resolutions, invalid depth, the per-stream depth store (matching, lifetime,
memory bound) and lifting inside a stream (tracks keep their 3D after the window moved on)."""

from __future__ import annotations

import gc
import math
import threading
import time

import cv2
import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.counters import Counters
from molmo2_ros.core.depth import (BadDepth, CameraModel, DepthConfig, DepthImage, DepthLifter, DepthStore,
                                   depth_from_buffer, lookup_depths)
from molmo2_ros.core.serialization import result_from_dict, result_to_dict
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.types import NS_PER_S, Frame, Generation, GroundedPoint, Inference, LiftStatus, Query, TaskKind

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

W, H = 640, 480


def camera(fx=500.0, fy=400.0, cx=320.0, cy=240.0, d=(), model="", w=W, h=H) -> CameraModel:
    return CameraModel.from_camera_info(w, h, [fx, 0, cx, 0, fy, cy, 0, 0, 1], d, model, "cam_optical")


def plane(z_m: float, w=W, h=H, encoding="16UC1", stamp=1) -> DepthImage:
    if encoding == "16UC1":
        return DepthImage(stamp, np.full((h, w), round(z_m * 1000), np.uint16), 1e-3)
    return DepthImage(stamp, np.full((h, w), z_m, np.float32), 1.0)


def lift_one(cam: CameraModel, depth: DepthImage, x: float, y: float, config=DepthConfig(enabled=True)):
    lifter = DepthLifter(config, Counters())
    lifter.set_camera(cam)
    frame = Frame(depth.stamp_ns, np.zeros((cam.height, cam.width, 3), np.uint8))
    lifter.store.add_colour(frame)
    lifter.store.add_depth(depth)
    return lifter.lift_points([GroundedPoint(depth.stamp_ns, x, y)], cam.width, cam.height)[0]


# ---- deprojection -----------------------------------------------------------------------------------------
def test_pinhole_hand_computed():
    # OpenCV pixel (420, 340) = GroundedPoint (420.5, 340.5): x = (420 - 320) / 500 = 0.2, y = (340 - 240) / 400
    # = 0.25; at z = 2 m: (0.4, 0.5, 2.0)
    p = lift_one(camera(), plane(2.0), 420.5, 340.5)
    assert p.status == LiftStatus.OK and p.valid_fraction == 1.0
    assert p.position == pytest.approx((0.4, 0.5, 2.0), abs=1e-12)
    p = lift_one(camera(), plane(2.5, encoding="32FC1"), 0.5, 0.5)  # the top-left pixel centre
    assert p.position == pytest.approx((-320 / 500 * 2.5, -240 / 400 * 2.5, 2.5), abs=1e-9)


def _pixel(cam: CameraModel, xd: float, yd: float) -> tuple[float, float]:
    """GroundedPoint position (corner origin) of distorted normalised coordinates."""
    return cam.k[0, 0] * xd + cam.k[0, 2] + 0.5, cam.k[1, 1] * yd + cam.k[1, 2] + 0.5


@pytest.mark.parametrize("d, expected_xd, expected_yd", [
    # radial only: r^2 = 0.05, 1 + k1 r^2 = 0.99
    ((-0.2, 0.0, 0.0, 0.0, 0.0), 0.2 * 0.99, 0.1 * 0.99),
    # plus tangential p1 = 0.01: xd += 2 p1 x y = 0.0004, yd += p1 (r^2 + 2 y^2) = 0.0007
    ((-0.2, 0.0, 0.01, 0.0, 0.0), 0.198 + 0.0004, 0.099 + 0.0007),
])
def test_plumb_bob_hand_computed(d, expected_xd, expected_yd):
    cam = camera(fx=500, fy=500, cx=319.5, cy=239.5, d=d, model="plumb_bob")
    p = lift_one(cam, plane(2.0), *_pixel(cam, expected_xd, expected_yd))
    assert p.status == LiftStatus.OK
    assert p.position == pytest.approx((0.4, 0.2, 2.0), abs=1e-9)


def test_rational_polynomial_hand_computed():
    # k1 = 0.1, k4 = 0.05: factor = (1 + 0.1 r^2) / (1 + 0.05 r^2) with r^2 = 0.05
    cam = camera(fx=500, fy=500, cx=319.5, cy=239.5, d=(0.1, 0, 0, 0, 0, 0.05, 0, 0), model="rational_polynomial")
    factor = (1 + 0.1 * 0.05) / (1 + 0.05 * 0.05)
    p = lift_one(cam, plane(2.0), *_pixel(cam, 0.2 * factor, 0.1 * factor))
    assert p.position == pytest.approx((0.4, 0.2, 2.0), abs=1e-9)


def test_equidistant_hand_computed():
    # x = 0.3, y = 0.4: r = 0.5, theta = atan(0.5), theta_d = theta (1 + k1 theta^2), scale = theta_d / r
    cam = camera(fx=300, fy=300, cx=319.5, cy=239.5, d=(0.1, 0.0, 0.0, 0.0), model="equidistant")
    theta = math.atan(0.5)
    scale = theta * (1 + 0.1 * theta ** 2) / 0.5
    p = lift_one(cam, plane(1.5), *_pixel(cam, 0.3 * scale, 0.4 * scale))
    assert p.position == pytest.approx((0.45, 0.6, 1.5), abs=1e-9)


@pytest.mark.parametrize("model, d", [("plumb_bob", (-0.35, 0.15, 0.002, -0.001, -0.03)),
                                      ("rational_polynomial", (0.3, -0.1, 0.001, 0.002, 0.0, 0.5, -0.05, 0.01)),
                                      ("equidistant", (0.05, -0.02, 0.003, -0.001))])
def test_deprojection_inverts_opencv_projection_to_the_image_corners(model, d):
    cam = camera(fx=420, fy=420, cx=322.3, cy=236.8, d=d, model=model)
    rng = np.random.default_rng(0)
    xyz = np.column_stack([rng.uniform(-0.7, 0.7, 50), rng.uniform(-0.5, 0.5, 50), np.ones(50)])
    project = cv2.fisheye.projectPoints if model == "equidistant" else cv2.projectPoints
    uv = project(xyz.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.k, cam.d)[0].reshape(-1, 2)
    rays = cam.rays(uv[:, 0], uv[:, 1])
    assert np.abs(rays - xyz[:, :2]).max() < 1e-9


def test_camera_model_validation():
    assert camera(d=(0, 0, 0, 0, 0), model="unknown_model").model == ""  # zero D: an undistorted image
    with pytest.raises(ValueError, match="not supported"):
        camera(d=(0.1, 0, 0, 0), model="kannala")
    with pytest.raises(ValueError, match="4 coefficients"):
        camera(d=(0.1, 0, 0, 0, 0), model="equidistant")
    with pytest.raises(ValueError, match="camera matrix"):
        CameraModel.from_camera_info(W, H, [0] * 9, [], "", "")
    with pytest.raises(ValueError, match="size"):
        CameraModel.from_camera_info(0, 0, [1, 0, 0, 0, 1, 0, 0, 0, 1], [], "", "")


# ---- depth look-up --------------------------------------------------------------------------------------------
def test_depth_scaled_between_resolutions():
    # colour 1920x1080, depth 848x480 (RealSense): the point maps to depth pixel floor(x * 848 / 1920)
    depth = np.full((480, 848), 3000, np.uint16)
    depth[200, 400] = 1234
    cfg = DepthConfig(enabled=True, window_px=1)
    x, y = (400 + 0.5) * 1920 / 848, (200 + 0.5) * 1080 / 480
    z, frac = lookup_depths(DepthImage(1, depth, 1e-3), np.array([x]), np.array([y]), (1920, 1080), cfg)
    assert z[0] == pytest.approx(1.234) and frac[0] == 1.0


def test_window_scales_to_the_depth_resolution():
    # depth at half the colour resolution: a 5-px colour window is 3x3 depth pixels. The centre is invalid, its
    # 8 neighbours hold 1 m, everything farther 5 m: a 3x3 window gives 1 m (a 5x5 one would give 5 m).
    depth = np.full((240, 320), 5000, np.uint16)
    depth[99:102, 149:152] = 1000
    depth[100, 150] = 0
    z, frac = lookup_depths(DepthImage(1, depth, 1e-3), np.array([301.0]), np.array([201.0]), (640, 480),
                            DepthConfig(enabled=True, window_px=5))
    assert z[0] == pytest.approx(1.0) and frac[0] == pytest.approx(8 / 9)
    z, _ = lookup_depths(DepthImage(1, depth, 1e-3), np.array([301.0]), np.array([201.0]), (640, 480),
                         DepthConfig(enabled=True, window_px=10))
    assert z[0] == pytest.approx(5.0)


def test_invalid_depth_gives_no_3d_and_is_counted():
    cam = camera()
    zero = plane(0.0)
    nan = plane(float("nan"), encoding="32FC1")
    far = plane(25.0, encoding="32FC1")
    near = plane(0.05, encoding="32FC1")
    for depth in (zero, nan, far, near):
        p = lift_one(cam, depth, 100.0, 100.0)
        assert p.status == LiftStatus.INVALID_DEPTH and p.position is None and p.valid_fraction == 0.0
    # 10 of 25 pixels valid: the median of the valid ones
    data = np.full((H, W), np.nan, np.float32)
    data[98:100, 98:103] = 2.0
    p = lift_one(cam, DepthImage(1, data, 1.0), 100.5, 100.5)
    assert p.status == LiftStatus.OK and p.position[2] == pytest.approx(2.0) and p.valid_fraction == 0.4
    lifter = DepthLifter(DepthConfig(enabled=True), Counters())
    lifter.set_camera(cam)
    f = Frame(1, np.zeros((H, W, 3), np.uint8))
    lifter.store.add_colour(f)
    lifter.store.add_depth(zero)
    lifter.lift_points([GroundedPoint(1, 10, 10), GroundedPoint(1, 20, 20), GroundedPoint(2, 5, 5)], W, H)
    counts = lifter.counters.snapshot()
    assert counts["lift_invalid_depth"] == 2 and counts["lift_no_depth"] == 1


def test_edge_gives_one_of_the_surfaces_not_a_depth_in_between():
    data = np.full((H, W), 3.0, np.float32)
    data[:, :100] = 1.0  # a 4x4 window centred on the edge: 8 pixels each side
    z, _ = lookup_depths(DepthImage(1, data, 1.0), np.array([100.0]), np.array([50.0]), (W, H),
                         DepthConfig(enabled=True, window_px=4))
    assert z[0] in (1.0, 3.0)


def test_missing_camera_info_or_other_size_gives_2d_only():
    lifter = DepthLifter(DepthConfig(enabled=True), Counters())
    p = lifter.lift_points([GroundedPoint(1, 10, 10)], W, H)[0]
    assert p.status == LiftStatus.NO_CAMERA_INFO and lifter.counters["lift_no_camera_info"] == 1
    lifter.set_camera(camera(w=1280, h=960))
    assert lifter.lift_points([GroundedPoint(1, 10, 10)], W, H)[0].status == LiftStatus.NO_CAMERA_INFO
    assert any("1280x960" in m for m in lifter.notices.take())


# ---- decoding -------------------------------------------------------------------------------------------------
def test_depth_from_buffer_encodings_padding_and_byte_order():
    px = np.array([[1, 2, 3], [4, 5, 65535]], "<u2")
    padded = np.zeros((2, 8), np.uint8)
    padded[:, :6] = px.view(np.uint8)
    d = depth_from_buffer("16UC1", 3, 2, 8, 0, padded.tobytes(), 7, "f")
    assert d.data.tolist() == px.tolist() and d.unit_m == 1e-3 and d.stamp_ns == 7 and d.frame_id == "f"
    d = depth_from_buffer("16UC1", 3, 2, 6, 1, px.astype(">u2").tobytes(), 7)
    assert d.data.tolist() == px.tolist() and d.data.dtype.isnative
    f = np.array([[0.5, np.nan]], "<f4")
    d = depth_from_buffer("32FC1", 2, 1, 8, 0, f.tobytes(), 7)
    assert d.data[0, 0] == 0.5 and np.isnan(d.data[0, 1]) and d.unit_m == 1.0
    for args, reason in [(("mono8", 3, 2, 3, 0, b"\0" * 6), "unsupported_encoding"),
                         (("16UC1", 3, 2, 6, 0, b"\0" * 7), "truncated_data"),
                         (("16UC1", 3, 2, 4, 0, b"\0" * 12), "bad_step"),
                         (("32FC1", 0, 0, 0, 0, b""), "empty_image")]:
        with pytest.raises(BadDepth) as error:
            depth_from_buffer(*args, 1)
        assert error.value.reason == reason


# ---- depth store ----------------------------------------------------------------------------------------------
def frame(stamp: int, w=W, h=H) -> Frame:
    return Frame(stamp, np.zeros((h, w, 3), np.uint8))


def test_store_matches_exact_or_nearest_within_max_dt_and_refuses_unaligned():
    counters = Counters()
    notices = []
    store = DepthStore(DepthConfig(enabled=True, max_dt_s=0.02), counters, lambda k, m: notices.append(m))
    f1, f2, f3 = frame(1_000_000_000), frame(2_000_000_000), frame(3_000_000_000)
    for f in (f1, f2, f3):
        store.add_colour(f)
    store.add_depth(plane(1.0, stamp=1_015_000_000))  # 15 ms off: matched
    store.add_depth(plane(2.0, stamp=1_005_000_000))  # closer: replaces it
    store.add_depth(plane(3.0, stamp=2_030_000_000))  # 30 ms off: not matched
    store.add_depth(plane(4.0, w=640, h=360, stamp=3_000_000_000))  # 16:9 depth for a 4:3 colour image
    assert store.depth_for(1_000_000_000).stamp_ns == 1_005_000_000
    assert store.depth_for(2_000_000_000) is None and store.depth_for(3_000_000_000) is None
    assert counters["depth_frames_refused_not_aligned"] == 1 and "not aligned" in notices[0]
    # depth before its colour frame: pending, then matched
    store.add_depth(plane(5.0, stamp=4_000_000_000))
    f4 = frame(4_000_000_000)
    store.add_colour(f4)
    assert store.depth_for(4_000_000_000).stamp_ns == 4_000_000_000
    assert store.held_frames() == 2


def test_wait_for_returns_when_the_depth_of_a_frame_arrives_or_can_no_longer_come():
    """What the node's lifting waits for (depth.wait_s): the trailing depth frame of a clip's newest frame."""
    store = DepthStore(DepthConfig(enabled=True, max_dt_s=0.02), Counters())
    f1, f2 = frame(1_000_000_000), frame(2_000_000_000)
    store.add_colour(f1)
    store.add_colour(f2)
    started = time.monotonic()
    assert not store.wait_for(2_000_000_000, 5.0) and time.monotonic() - started < 0.1  # no depth stream: no wait
    store.add_depth(plane(0.5, stamp=950_000_000))  # the depth stream runs (its frame matches nothing)
    timer = threading.Timer(0.2, store.add_depth, [plane(1.0, stamp=1_000_000_000)])
    started = time.monotonic()
    timer.start()
    assert store.wait_for(1_000_000_000, 5.0) and 0.15 < time.monotonic() - started < 2.0  # woken by its arrival
    assert not store.wait_for(2_000_000_000, 0.1)  # timed out: no depth for it
    store.add_depth(plane(2.0, stamp=1_990_000_000))  # 10 ms off: a match, but a closer one may still come
    started = time.monotonic()
    assert store.wait_for(2_000_000_000, 0.2) and time.monotonic() - started >= 0.15
    store.add_depth(plane(3.0, stamp=2_500_000_000))  # past stamp + max_dt: no closer depth can follow
    started = time.monotonic()
    assert store.wait_for(2_000_000_000, 5.0) and time.monotonic() - started < 0.1
    assert not store.wait_for(3_000_000_000, 5.0)  # not a held colour frame: nothing to wait for
    del f1, f2


def test_store_holds_depth_exactly_as_long_as_its_colour_frame():
    store = DepthStore(DepthConfig(enabled=True), Counters())
    f = frame(5)
    store.add_colour(f)
    store.add_depth(plane(1.0, stamp=5))
    assert store.depth_for(5) is not None and store.held_frames() == 1
    del f
    gc.collect()
    assert store.depth_for(5) is None and store.held_frames() == 0


def test_stream_decodes_and_holds_only_depth_of_kept_frames():
    """30 Hz colour and depth for 30 s into an 8 s / 2 fps window: the depth frames decoded are those near kept
    colour stamps, and the frames held stay bounded by the window (not the depth rate)."""
    config = StreamConfig(buffer=BufferConfig(window_s=8.0, stride_s=1.0), depth=DepthConfig(enabled=True))
    stream = Stream("cam", [], config)
    period = NS_PER_S // 30
    wanted = held_max = 0
    small = np.zeros((48, 64, 3), np.uint8)
    for i in range(30 * 30):
        stamp = 1_000 * NS_PER_S + i * period
        depth_stamp = stamp + 3_000_000  # 3 ms after the colour stamp, arriving first
        if stream.wants_depth(depth_stamp):
            wanted += 1
            stream.depth.store.add_depth(DepthImage(depth_stamp, np.full((48, 64), 1000, np.uint16), 1e-3))
        stream.push(Frame(stamp, small))
        held_max = max(held_max, stream.depth.store.held_frames())
    kept = stream.buffer.counters["kept"]
    assert kept == 60 and wanted <= kept + 2, (kept, wanted)
    assert held_max <= config.buffer.max_buffered_frames() + 1, held_max
    assert stream.counters["depth_frames_matched"] == kept


def _point_answer(stamps_rel: list[float], x: int, y: int) -> str:
    return '<points coords="' + ";".join(f"{t:.1f} 1 {x:03d} {y:03d}" for t in stamps_rel) + '">ball</points>'


def test_stream_lifts_each_point_with_its_own_depth_and_a_missing_frame_only_affects_its_stamp():
    config = StreamConfig(buffer=BufferConfig(window_s=4.0, stride_s=1.0), depth=DepthConfig(enabled=True))
    stream = Stream("cam", [Query("ball", TaskKind.POINT, "ball")], config)
    stream.depth.set_camera(camera(w=64, h=48, fx=50, fy=50, cx=32, cy=24))
    img = np.zeros((48, 64, 3), np.uint8)
    clip = None
    for i in range(9):  # 2 fps: every frame kept
        stamp = 100 * NS_PER_S + i * NS_PER_S // 2
        if i != 5:
            stream.depth.store.add_depth(DepthImage(stamp, np.full((48, 64), 1000 + 100 * i, np.uint16), 1e-3))
        clip = stream.push(Frame(stamp, img, "cam_optical")) or clip
    rel = clip.relative_times()
    result = stream.ground_inference(Inference(clip, [Generation(stream.queries[0], _point_answer(rel, 500, 500))]),
                                     "test")[0]
    assert result.lifted.frame_id == "cam_optical" and len(result.lifted.points) == len(clip.frames)
    for p3 in result.lifted.points:
        i = (p3.point.stamp_ns - 100 * NS_PER_S) // (NS_PER_S // 2)
        if i == 5:
            assert p3.status == LiftStatus.NO_DEPTH and p3.position is None
        else:
            assert p3.status == LiftStatus.OK
            assert p3.position == pytest.approx((-0.5 / 50 * (1 + 0.1 * i), -0.5 / 50 * (1 + 0.1 * i),
                                                 1 + 0.1 * i), abs=1e-9)
    back = result_from_dict(result_to_dict(result))
    assert back.lifted == result.lifted


def test_track_points_keep_their_3d_after_their_frames_left_the_window():
    config = StreamConfig(buffer=BufferConfig(window_s=2.0, stride_s=0.5), depth=DepthConfig(enabled=True))
    stream = Stream("cam", [Query("obj", TaskKind.TRACK, "ball")], config)
    stream.depth.set_camera(camera(w=64, h=48, fx=50, fy=50, cx=32, cy=24))
    img = np.zeros((48, 64, 3), np.uint8)
    results = []
    for i in range(16):
        stamp = 100 * NS_PER_S + i * NS_PER_S // 2
        stream.depth.store.add_depth(DepthImage(stamp, np.full((48, 64), 2000, np.uint16), 1e-3))
        clip = stream.push(Frame(stamp, img, "cam_optical"))
        if clip is not None:
            groups = ";".join(f"{t:.1f} 1 300 300" for t in clip.relative_times())
            answer = f'<tracks coords="{groups}">ball</tracks>'
            results += stream.ground_inference(Inference(clip, [Generation(stream.queries[0], answer)]), "t")
        del clip
    gc.collect()
    last = results[-1]
    (track,) = last.tracks
    assert len(track.trajectory) > 8  # longer than the 2 s window: its oldest frames are gone
    points = last.lifted.tracks[track.id]
    assert [p.point for p in points] == track.trajectory
    assert all(p.status == LiftStatus.OK and p.position[2] == pytest.approx(2.0) for p in points)
    assert stream.counters["lift_remembered"] > 0
    assert stream.depth.memo_points() == len(track.trajectory)
