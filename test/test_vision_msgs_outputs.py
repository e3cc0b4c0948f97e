"""The standard outputs (vision_msgs/Detection2DArray, Detection3DArray): the one mapping for node and bag, the node
process publishing them (point, count and track queries, with depth their 3D side), `vision_msgs.enabled:=false`,
a node without vision_msgs (runs as before), and the type hashes of the test-only vision_msgs package
(test/interfaces/vision_msgs, sourced by scripts/with_ros) against the released package's.

Released type hashes (RIHS01, ROS 2 Iron+ type description hashes; they depend only on the field names and types of
a message and of the types it references, not on comments, so every build of vision_msgs 4.x on Iron..Kilted gives
the same). Found with the code search over public repositories (2026-12-06), in files that rosidl generated from
ros-perception/vision_msgs' own package:
- Detection2DArray and the hashes it checks for Detection2D, BoundingBox2D, ObjectHypothesis,
  ObjectHypothesisWithPose, Point2D, Pose2D (its EXPECTED_HASH table): github.com/borednuna/ipm-ws,
  build/vision_msgs/rosidl_generator_c/vision_msgs/msg/detail/detection2_d_array__description.c;
- Detection3DArray and the hashes it checks for Detection3D, BoundingBox3D: a generated
  vision_msgs/msg/detail/detection3_d_array__description.c of another public workspace (the index did not name
  its repository);
- BoundingBox2D and ObjectHypothesis once more in a package built against an installed vision_msgs:
  github.com/dkrygsman/pi_ws, build/depthai_ros_msgs/.../spatial_detection__description.c (EXPECTED_HASH).
These are builds of the upstream sources, not files of a binary (apt) release; no public copy of a released
share/vision_msgs/msg/*.json was found. The referenced std_msgs/geometry_msgs hashes in those files equal this
venv's (checked below), so the environment they were generated in matches ours.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from helpers.reliability import SCRIPTED, rgb_image, start_node, unique_names
from helpers.ros_client import wait_until
from molmo2_ros.core import messages
from molmo2_ros.core.types import Lifted3D, LiftStatus, Point3D, QueryResult, TaskKind
from molmo2_ros.msg import PointArray, TrackArray

REPO = Path(__file__).resolve().parents[1]
TEST_PACKAGE = REPO / "test" / "interfaces" / "vision_msgs"

RELEASED = {  # type -> RIHS01 hash of ros-perception/vision_msgs 4.x (sources: module docstring)
    "Detection2DArray": "214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection2D": "0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "BoundingBox2D": "008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "ObjectHypothesis": "51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "Detection3DArray": "793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "Detection3D": "ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "BoundingBox3D": "bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
}
# the referenced types' hashes in the same generated files (must equal this ROS install's)
REFERENCED = {
    "std_msgs/msg/Header": "f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    "builtin_interfaces/msg/Time": "b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
    "geometry_msgs/msg/Pose": "d501954e9476cea2996984e812054b68026ae0bfae789d9a10b23daf35cc90fa",
    "geometry_msgs/msg/PoseWithCovariance": "9a7c0fd234b7f45c6098745ecccd773ca1085670e64107135397aee31c02e1bb",
    "geometry_msgs/msg/Vector3": "cc12fe83e4c02719f1ce8070bfd14aecd40f75a96696a67a2a1f37f7dbb0765d",
}

NAME, _ = unique_names()
NODE = f"/{NAME}"
TAG = NAME.removeprefix("molmo2_")
QUERIES = ("- {id: ball, task: point, text: ball}\n- {id: obj, task: track, text: obj}\n"
           "- {id: two, task: count, text: two}")
W, H = 64, 48
FX, CX, CY = 40.0, 31.5, 23.5
T0 = 300.0
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def vision():
    """The vision_msgs.msg module (the test package through scripts/with_ros; on a robot the real one)."""
    try:
        import vision_msgs.msg
    except ImportError:
        pytest.fail("vision_msgs is not importable: run `make setup` (builds test/interfaces/vision_msgs) and the "
                    "tests through scripts/with_ros")
    return vision_msgs.msg


def ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def fields_of(text: str) -> list[str]:
    """The field lines of a .msg text (comments and blank lines dropped, whitespace normalised, the package prefix
    of vision_msgs' own types dropped)."""
    lines = [re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in text.splitlines()]
    return [line.removeprefix("vision_msgs/") for line in lines if line]


# ---- type hashes and definitions ------------------------------------------------------------------------------
def test_type_hashes_equal_the_released_vision_msgs():
    from ament_index_python.packages import get_package_share_directory

    vision()
    share = Path(get_package_share_directory("vision_msgs")) / "msg"
    got, referenced = {}, {}
    for name in RELEASED:
        description = json.loads((share / f"{name}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in description["type_hashes"]}
        got[name] = hashes[f"vision_msgs/msg/{name}"].removeprefix("RIHS01_")
        referenced.update({k: v.removeprefix("RIHS01_") for k, v in hashes.items() if k in REFERENCED})
    assert got == RELEASED
    assert referenced == REFERENCED


def test_bag_definitions_equal_the_test_package():
    """The replay bag registers vision_msgs from offline/replay.VISION_MSGS: the same fields as the package."""
    from molmo2_ros.offline.replay import VISION_MSGS

    package = {p.stem: fields_of(p.read_text()) for p in sorted((TEST_PACKAGE / "msg").glob("*.msg"))}
    assert {name: fields_of(text) for name, text in VISION_MSGS.items()} == package
    assert (TEST_PACKAGE.parent / "COLCON_IGNORE").exists()  # a robot's colcon build never builds the stand-in


# ---- the one mapping --------------------------------------------------------------------------------------------
def plain(value):
    """rclpy or rosbags message -> nested dicts/tuples; NaN as 'NaN'."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__ if k != "__msgtype__"}
    if hasattr(type(value), "get_fields_and_field_types"):
        return {k: plain(getattr(value, k)) for k in type(value).get_fields_and_field_types()}
    if isinstance(value, (list, tuple, np.ndarray)) or type(value).__name__ == "array":
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def test_node_and_bag_build_the_same_detections(tmp_path):
    from test_messages import RESULTS, lifted

    from molmo2_ros.offline.replay import ResultBagWriter
    from molmo2_ros.ros import convert

    vision()
    writer = ResultBagWriter(tmp_path / "bag", box_px=20.0)
    try:
        for task, r in RESULTS.items():
            for result in (r, lifted(r)):
                node = convert.detection_messages(result, 20.0)
                bag = messages.detection_messages(writer.vision, result)
                assert [(o.output, o.type_name) for o in node] == [(o.output, o.type_name) for o in bag]
                if task not in (TaskKind.POINT, TaskKind.COUNT, TaskKind.TRACK):
                    assert node == []
                    continue
                assert [o.output for o in node] == ["detections"] + (["detections3d"] if result.lifted else [])
                for mine, theirs in zip(node, bag):
                    raw = bytes(writer.store.serialize_cdr(theirs.msg, messages.full_name(theirs.type_name)))
                    assert plain(deserialize_message(raw, type(mine.msg))) == plain(mine.msg)
    finally:
        writer.close()
    point = RESULTS[TaskKind.POINT]  # confidence -0.5
    [d2] = convert.detection_messages(point, 20.0)[0].msg.detections
    assert (d2.bbox.center.position.x, d2.bbox.center.position.y, d2.bbox.size_x, d2.bbox.size_y) == \
        (12.5, 40.25, 20.0, 20.0)
    assert d2.results[0].hypothesis.class_id == "ball" and d2.id == ""
    assert d2.results[0].hypothesis.score == pytest.approx(math.exp(-0.5))
    assert math.isnan(convert.detection_messages(RESULTS[TaskKind.COUNT], 20.0)[0].msg.detections[0]
                      .results[0].hypothesis.score)  # no confidence: NaN
    # 3D: only valid points, the box around the position in the optical frame
    [d3] = convert.detection_messages(lifted(point), 20.0)[1].msg.detections
    assert (d3.bbox.center.position.x, d3.bbox.center.position.y, d3.bbox.center.position.z) == (0.25, -0.5, 1.75)
    assert d3.results[0].pose.pose.position == d3.bbox.center.position
    assert d3.bbox.size.x == d3.bbox.size.y == d3.bbox.size.z == messages.DETECTION3D_BOX_M
    no_depth = QueryResult(**{**point.__dict__, "lifted": Lifted3D("cam_optical", points=[
        Point3D(point.points[0], LiftStatus.NO_DEPTH)])})
    assert convert.detection_messages(no_depth, 20.0)[1].msg.detections == []
    # closing results publish none
    assert convert.detection_messages(QueryResult(**{**RESULTS[TaskKind.TRACK].__dict__, "closing": True}), 20.0) == []


def test_topics():
    from molmo2_ros.core.types import Query

    point = messages.output_topics(Query("cup", TaskKind.POINT, "cup"), camera="front")
    assert point.by_output(depth=True, vision=True)["detections"] == ("~/front/detections/cup", "Detection2DArray")
    assert point.by_output(depth=True, vision=True)["detections3d"] == ("~/front/detections3d/cup",
                                                                        "Detection3DArray")
    assert "detections3d" not in point.by_output(depth=False, vision=True)
    assert "detections" not in point.by_output(depth=True)
    own = messages.output_topics(Query("p", TaskKind.TRACK, "x", topic="/planner/people"))
    assert own.by_output(depth=True, vision=True)["detections"][0] == "/planner/people/detections"
    for task in (TaskKind.EVENT, TaskKind.CAPTION, TaskKind.QUESTION):
        assert messages.output_topics(Query("e", task, "x")).detections is None


# ---- the node ---------------------------------------------------------------------------------------------------
def topic(name: str) -> str:
    return f"/cam_{TAG}/{name}"


def stamp_of(i: int) -> int:
    return int(round((T0 + 0.5 * i) * 1e9))


def depth_msg(i: int) -> Image:
    s = stamp_of(i)
    data = np.full((H, W), 2000, "<u2")  # 2 m everywhere
    return Image(header=Header(stamp=Time(sec=s // 10**9, nanosec=s % 10**9), frame_id="cam_optical"),
                 height=H, width=W, encoding="16UC1", is_bigendian=0, step=W * 2, data=data.tobytes())


def info_msg(i: int) -> CameraInfo:
    s = stamp_of(i)
    return CameraInfo(header=Header(stamp=Time(sec=s // 10**9, nanosec=s % 10**9), frame_id="cam_optical"),
                      width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[FX, 0.0, CX, 0.0, FX, CY, 0.0, 0.0, 1.0])


def start(client, env, folder, depth: bool = True, **params):
    extra = ["-r", f"depth:={topic('depth')}", "-r", f"camera_info:={topic('camera_info')}"]
    return start_node(client, env, folder, name=NAME, queries=QUERIES, topic=topic("image"), engine_plugin=SCRIPTED,
                      model="scripted", window_s=3.0, stride_s=1.0, no_frame_warn_s=30.0, extra=extra,
                      **({"depth.enabled": True} if depth else {}), **params)


def send_frames(client, n: int, depth: bool = True) -> None:
    names = ["image", "depth", "camera_info"] if depth else ["image"]
    types = {"image": Image, "depth": Image, "camera_info": CameraInfo}
    pubs = {k: client.node.create_publisher(types[k], topic(k), QOS) for k in names}
    for k, pub in pubs.items():
        wait_until(lambda pub=pub: pub.get_subscription_count() > 0, 15.0, what=f"the node subscribing {k}")
    for i in range(n):
        if depth:
            pubs["camera_info"].publish(info_msg(i))
            pubs["depth"].publish(depth_msg(i))
        pubs["image"].publish(rgb_image(T0 + 0.5 * i, W, H, frame_id="cam_optical"))
        time.sleep(0.2)


def test_node_publishes_detections_2d_and_3d(client, ros_env, tmp_path):
    vm = vision()
    det = {q: f"{NODE}/detections/{q}" for q in ("ball", "obj", "two")}
    det3 = {q: f"{NODE}/detections3d/{q}" for q in ("ball", "obj", "two")}
    proc = start(client, ros_env, tmp_path, **{"vision_msgs.box_px": 10.0})
    try:
        subs = {f"{NODE}/points/ball": PointArray, f"{NODE}/tracks/obj": TrackArray,
                **{t: vm.Detection2DArray for t in det.values()}, **{t: vm.Detection3DArray for t in det3.values()}}
        for name, msg_type in subs.items():
            client.subscribe(msg_type, name)
            client.wait_matched(name)
        # the graph carries the released type hashes
        info = client.node.get_publishers_info_by_topic(det["ball"])[0]
        if hasattr(info, "topic_type_hash"):
            assert str(info.topic_type_hash) == f"RIHS01_{RELEASED['Detection2DArray']}"
            assert str(client.node.get_publishers_info_by_topic(det3["ball"])[0].topic_type_hash) == \
                f"RIHS01_{RELEASED['Detection3DArray']}"
        send_frames(client, 14)
        last = stamp_of(12)
        wait_until(lambda: all(any(ns(m.header.stamp) >= last for m in client.got(t)) for t in
                               [*det.values(), *det3.values(), f"{NODE}/tracks/obj"]), 30.0,
                   what="the last window's detections")
    finally:
        code, _ = proc.stop()
    assert code == 0, proc.output()[-3000:]
    stamps = {stamp_of(i) for i in range(14)}

    # points: one Detection2D per PointArray point, same stamps and pixels, id "", class_id = label
    points = {ns(m.header.stamp): m for m in client.got(f"{NODE}/points/ball")}
    arrays = client.got(det["ball"])
    assert len(arrays) >= 3
    for a in arrays:
        assert a.header.frame_id == "cam_optical" and ns(a.header.stamp) in points
        pa = points[ns(a.header.stamp)]
        assert [(ns(d.header.stamp), round(d.bbox.center.position.x, 3), round(d.bbox.center.position.y, 3))
                for d in a.detections] == [(ns(p.stamp), round(p.x, 3), round(p.y, 3)) for p in pa.points]
        for d in a.detections:
            assert d.id == "" and d.header.frame_id == "cam_optical" and ns(d.header.stamp) in stamps
            assert d.bbox.size_x == d.bbox.size_y == 10.0 and d.bbox.center.theta == 0.0
            assert [r.hypothesis.class_id for r in d.results] == ["ball"]
            assert math.isnan(d.results[0].hypothesis.score)  # the scripted engine gives no confidence
    # count: the two points of the newest frame
    assert all(len(a.detections) == 2 for a in client.got(det["two"]))

    # tracks: ids = the persistent track ids, the same across windows; points on the clip's frames only
    tracks = {ns(m.header.stamp): m for m in client.got(f"{NODE}/tracks/obj")}
    seen_ids: dict[str, int] = {}
    for a in client.got(det["obj"]):
        ta = tracks[ns(a.header.stamp)]
        expected = {(t.id, ns(p.stamp), round(p.x, 3), round(p.y, 3)) for t in ta.tracks if t.status != t.STATUS_ENDED
                    for p in t.trajectory if ns(p.stamp) <= ns(ta.header.stamp)
                    and ns(p.stamp) >= ns(a.header.stamp) - 3_000_000_000}
        got = {(d.id, ns(d.header.stamp), round(d.bbox.center.position.x, 3), round(d.bbox.center.position.y, 3))
               for d in a.detections}
        assert got and got <= expected
        for d in a.detections:
            seen_ids[d.id] = seen_ids.get(d.id, 0) + 1
    assert len(seen_ids) == 2 and all(re.fullmatch(r"obj/t\d+", i) for i in seen_ids), seen_ids
    assert min(seen_ids.values()) >= 10  # both ids recur across windows (the engine renumbers every answer)

    # 3D: every point valid (2 m everywhere), in the optical frame, box centre = the deprojected point
    for q in ("ball", "obj", "two"):
        a2 = {ns(a.header.stamp): a for a in client.got(det[q])}
        for a in client.got(det3[q]):
            assert a.header.frame_id == "cam_optical" and ns(a.header.stamp) in a2
            flat = a2[ns(a.header.stamp)].detections
            assert [(d.id, ns(d.header.stamp)) for d in a.detections] == [(d.id, ns(d.header.stamp)) for d in flat]
            for d3, d2 in zip(a.detections, flat):
                c = d3.bbox.center.position
                assert c.z == pytest.approx(2.0) and d3.results[0].pose.pose.position == c
                u, v = d2.bbox.center.position.x - 0.5, d2.bbox.center.position.y - 0.5  # OpenCV pixel centres
                assert (c.x, c.y) == pytest.approx(((u - CX) / FX * 2.0, (v - CY) / FX * 2.0), abs=1e-6)
                assert d3.bbox.size.x == messages.DETECTION3D_BOX_M


def test_disabled_publishes_none(client, ros_env, tmp_path):
    vision()
    proc = start(client, ros_env, tmp_path, depth=False, **{"vision_msgs.enabled": False})
    try:
        wait_until(lambda: client.node.count_publishers(f"{NODE}/points/ball") == 1, 10.0, what="the node's outputs")
        names = {t for t, _ in client.node.get_topic_names_and_types()}
        assert not [t for t in names if "/detections" in t], sorted(names)
    finally:
        code, _ = proc.stop()
    assert code == 0


def without_vision_msgs(env: dict[str, str]) -> dict[str, str]:
    """`env` without the test-only interfaces (scripts/with_ros sources them): as a machine without vision_msgs."""
    out = dict(env)
    for key in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "LD_LIBRARY_PATH"):
        if key in out:
            out[key] = os.pathsep.join(p for p in out[key].split(os.pathsep) if "install-test-interfaces" not in p)
    return out


def test_node_runs_unchanged_without_vision_msgs(client, ros_env, tmp_path):
    env = without_vision_msgs(ros_env)
    proc = start(client, env, tmp_path, depth=False)
    try:
        client.subscribe(PointArray, f"{NODE}/points/ball")
        client.subscribe(TrackArray, f"{NODE}/tracks/obj")
        client.wait_matched(f"{NODE}/points/ball")
        send_frames(client, 8, depth=False)
        wait_until(lambda: client.got(f"{NODE}/points/ball") and client.got(f"{NODE}/tracks/obj"), 20.0,
                   what="the node's point and track outputs")
        names = {t for t, _ in client.node.get_topic_names_and_types()}
        assert not [t for t in names if "/detections" in t], sorted(names)
    finally:
        code, _ = proc.stop()
    assert code == 0
    log = proc.output()
    assert log.count("vision_msgs is not installed") == 1, log[-3000:]
    assert "Traceback" not in log
