"""3D grounding in the node process: colour + aligned depth + CameraInfo publishers, a two-camera node where only
`front` has depth. Every 3D output is in the camera's optical frame with the source stamps, each point lifted with
its own stamp's depth frame; a depth frame missing or late for one stamp only affects that stamp; when depth stops,
2D goes on (counted, warned); without CameraInfo the node publishes 2D only with one warning naming the topic."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from helpers.reliability import SCRIPTED, rgb_image, start_node, unique_names
from helpers.ros_client import wait_until
from molmo2_ros.msg import GroundedPoint3D, PointArray, PointArray3D, TrackArray, TrackArray3D

NAME, _ = unique_names()
NODE = f"/{NAME}"
TAG = NAME.removeprefix("molmo2_")
QUERIES = "- {id: ball, task: point, text: ball}\n- {id: obj, task: track, text: obj}"
W, H = 64, 48  # colour; depth is 32x24 (half resolution, same aspect)
FX, CX, CY = 40.0, 21.5, 13.5
T0 = 300.0
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
POINTS3D = f"{NODE}/front/points3d/ball"


def topic(camera: str, name: str) -> str:
    return f"/cam_{TAG}/{camera}/{name}"


def ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def stamp_of(i: int) -> int:
    return int(round((T0 + 0.5 * i) * 1e9))


def z_of(i: int) -> float:
    return 1.0 + 0.1 * i  # each frame's depth plane: tells which depth frame lifted a point


def depth_msg(i: int, encoding: str = "16UC1") -> Image:
    s = stamp_of(i)
    data = np.full((H // 2, W // 2), round(z_of(i) * 1000), "<u2")
    return Image(header=Header(stamp=Time(sec=s // 10**9, nanosec=s % 10**9), frame_id="front_optical"),
                 height=H // 2, width=W // 2, encoding=encoding, is_bigendian=0, step=W, data=data.tobytes())


def info_msg(i: int) -> CameraInfo:
    s = stamp_of(i)
    return CameraInfo(header=Header(stamp=Time(sec=s // 10**9, nanosec=s % 10**9), frame_id="front_optical"),
                      width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[FX, 0.0, CX, 0.0, FX, CY, 0.0, 0.0, 1.0])



def start(client, ros_env, tmp_path, no_frame_warn_s=0.5, **params):
    remaps = [arg for c in ("front", "plain") for name in ("image", "depth", "camera_info")
              for arg in ("-r", f"{c}/{name}:={topic(c, name)}")]
    return start_node(client, ros_env, tmp_path, name=NAME, queries=QUERIES, engine_plugin=SCRIPTED, model="scripted",
                      window_s=3.0, stride_s=1.0, cameras="front, plain", no_frame_warn_s=no_frame_warn_s,
                      **{"front.depth.enabled": True, "overlay.marker_lifetime_s": 1.5}, extra=remaps, **params)


def publishers(client, names: list[str]) -> dict:
    types = {"image": Image, "depth": Image, "camera_info": CameraInfo}
    pubs = {n: client.node.create_publisher(types[n], topic("front", n), QOS) for n in names}
    for n, pub in pubs.items():
        wait_until(lambda pub=pub: pub.get_subscription_count() > 0, 15.0, what=f"the node subscribing {n}")
    return pubs


def expected_position(i: int) -> tuple[float, float, float]:
    # the scripted engine points at (500, 500) of 1000: pixel (32, 24); OpenCV pixel (31.5, 23.5)
    z = z_of(i)
    return (31.5 - CX) / FX * z, (23.5 - CY) / FX * z, z


def test_3d_outputs_in_the_optical_frame_each_point_with_its_own_depth(client, ros_env, tmp_path):
    outputs = {POINTS3D: PointArray3D, f"{NODE}/front/points/ball": PointArray,
               f"{NODE}/front/tracks3d/obj": TrackArray3D, f"{NODE}/front/tracks/obj": TrackArray,
               f"{NODE}/front/markers3d": MarkerArray}
    proc = start(client, ros_env, tmp_path)
    try:
        for name, msg_type in outputs.items():
            client.subscribe(msg_type, name)
            client.wait_matched(name)
        # the camera without depth has no 3D outputs
        assert client.node.count_publishers(f"{NODE}/plain/points/ball") == 1
        assert client.node.count_publishers(f"{NODE}/plain/points3d/ball") == 0
        pubs = publishers(client, ["image", "depth", "camera_info"])
        missing, late, last_depth, n = 5, 7, 11, 16
        for i in range(n):
            pubs["camera_info"].publish(info_msg(i))
            if i not in (missing, late) and i <= last_depth:
                pubs["depth"].publish(depth_msg(i))
            if i == 10:
                pubs["depth"].publish(depth_msg(late))  # three colour frames after its own
            pubs["image"].publish(rgb_image(T0 + 0.5 * i, W, H, frame_id="front_optical"))
            time.sleep(0.25)
        stamps = {stamp_of(i): i for i in range(n)}
        wait_until(lambda: any(ns(m.header.stamp) >= stamp_of(n - 2) for m in client.got(POINTS3D)), 20.0,
                   what="the last window's 3D points")  # windows end on every other frame (stride 1 s)
        arrays = client.got(POINTS3D)
        by_frame: dict[int, list[tuple[GroundedPoint3D, bool]]] = {}  # frame -> [(point, on the clip's newest)]
        for array in arrays:
            assert array.header.frame_id == "front_optical" and ns(array.header.stamp) in stamps
            assert array.query_id == "ball" and array.points
            for p in array.points:
                by_frame.setdefault(stamps[ns(p.point.stamp)], []).append((p, p.point.stamp == array.header.stamp))
        # 2D points are unchanged: the same stamps and pixels as the 3D side
        for a2, a3 in zip(client.got(f"{NODE}/front/points/ball"), arrays):
            assert [(ns(p.stamp), p.x, p.y) for p in a2.points] == [(ns(p.point.stamp), p.point.x, p.point.y)
                                                                      for p in a3.points]
        for i, points in sorted(by_frame.items()):
            if i == missing or i > last_depth:
                assert all(p.status == GroundedPoint3D.STATUS_NO_DEPTH and not p.valid and math.isnan(p.position.z)
                           for p, _ in points), i
                continue
            for p, newest in points:
                if p.status == GroundedPoint3D.STATUS_NO_DEPTH and (i == late or newest):
                    # a window that ran before this stamp's depth frame came: the late one, or the newest frame
                    # racing its depth frame through the node (the scripted engine answers at once)
                    continue
                assert p.status == GroundedPoint3D.STATUS_OK and p.valid, (i, p.status)
                assert (p.position.x, p.position.y, p.position.z) == pytest.approx(expected_position(i), abs=1e-5)
                assert p.valid_fraction == pytest.approx(1.0)
            if len(points) > 1:
                assert any(p.valid for p, _ in points), f"frame {i}: its depth frame was used by a later window"
        # tracks: every trajectory point lifted with its own stamp's depth
        tracks = client.got(f"{NODE}/front/tracks3d/obj")
        assert tracks and all(t.header.frame_id == "front_optical" for t in tracks)
        for array2d, array3d in zip(client.got(f"{NODE}/front/tracks/obj"), tracks):
            assert [t.id for t in array2d.tracks] == [t.id for t in array3d.tracks]
            for t2, t3 in zip(array2d.tracks, array3d.tracks):
                assert t3.status == t2.status and len(t3.trajectory) == len(t2.trajectory)
                for p in t3.trajectory:
                    if p.valid:
                        assert p.position.z == pytest.approx(z_of(stamps[ns(p.point.stamp)]), abs=1e-6)
        # RViz markers: optical frame, lifetimes, stable ids per track
        wait_until(lambda: client.got(f"{NODE}/front/markers3d"), 10.0, what="3D markers")
        markers = [m for a in client.got(f"{NODE}/front/markers3d") for m in a.markers]
        assert all(m.header.frame_id == "front_optical" for m in markers)
        spheres = [m for m in markers if m.ns == "ball"]
        strips = [m for m in markers if m.ns == "obj/tracks"]
        assert spheres and all(m.type == Marker.SPHERE_LIST and m.lifetime.sec == 1 and m.lifetime.nanosec == 5e8
                               for m in spheres)
        assert strips and {m.id for m in strips} <= {1, 2, 3, 4, 5, 6} and all(m.type == Marker.LINE_STRIP
                                                                                 for m in strips)
        d = client.diagnostics(NODE, camera="front")
        assert d["camera_info"] == "64x48 no distortion" and int(d["lift_no_depth"]) > 0, d
        assert int(d["depth_frames_decoded"]) <= 14 and int(d["depth_frames_held"]) <= 10, d
        assert "depth_topic" not in client.diagnostics(NODE, camera="plain")
    finally:
        code, seconds = proc.stop()
    assert code == 0 and seconds < 5.0, proc.output()
    log = proc.output()
    assert f"no frame received on {topic('front', 'depth')}" in log, log[-3000:]


def test_without_camera_info_2d_only_with_one_warning_and_bad_encodings_counted(client, ros_env, tmp_path):
    proc = start(client, ros_env, tmp_path, no_frame_warn_s=2.0)
    try:
        for name, msg_type in ((POINTS3D, PointArray3D),
                               (f"{NODE}/front/points/ball", PointArray)):
            client.subscribe(msg_type, name)
            client.wait_matched(name)
        pubs = publishers(client, ["image", "depth"])
        for i in range(12):
            pubs["depth"].publish(depth_msg(i, encoding="mono16" if i < 3 else "16UC1"))
            pubs["image"].publish(rgb_image(T0 + 0.5 * i, W, H, frame_id="front_optical"))
            time.sleep(0.2)
        wait_until(lambda: len(client.got(POINTS3D)) >= 4, 20.0, what="3D point arrays")
        assert len(client.got(f"{NODE}/front/points/ball")) >= 4  # 2D goes on
        assert all(p.status == GroundedPoint3D.STATUS_NO_CAMERA_INFO and not p.valid
                   for a in client.got(POINTS3D) for p in a.points)
        for i in range(12, 17):  # frames keep coming: the camera's status is about the missing CameraInfo
            pubs["depth"].publish(depth_msg(i))
            pubs["image"].publish(rgb_image(T0 + 0.5 * i, W, H, frame_id="front_optical"))
            d = client.diagnostics(NODE, camera="front")
            if "CameraInfo" in d["_message"]:
                break
        assert int(d["depth_bad_unsupported_encoding"]) == 3 and d["camera_info"] == "none received", d
        assert d["_level"] == 1 and d["_message"] == f"no CameraInfo on {topic('front', 'camera_info')}: 2D only", d
    finally:
        code, _ = proc.stop()
    log = proc.output()
    assert code == 0, log
    assert log.count(f"no CameraInfo received on {topic('front', 'camera_info')}") == 1, log[-3000:]
    assert "depth encoding 'mono16' is not supported" in log
