"""A synthetic world with exact ground truth, written as a rosbag2 plus scenario.json (docs/ground_truth.md).

Coloured shapes move over a textured background: three red balls (one crosses the image behind a grey box and
leaves it on the right, two fall off shelves), three blue squares (two meet, touch and bounce apart, one enters
from the top) and a green triangle that crosses the image diagonally. Motions are analytic, so positions,
visibility and event spans are exact for every frame stamp. Sizes scale with the image, motions with `seconds`
(falls take a fixed 1.5 s).

World "two_colours": a red ball and a blue ball, the same shape, that cross each other (only the colour tells
them apart), with point and track queries for each.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..core.types import NS_PER_S

START_NS = 1_700_000_000 * NS_PER_S
FALL_S = 1.5
OCCLUDER = (0.42, 0.18, 0.58, 0.42)  # x0, y0, x1, y1 as fractions of the image
ENCODINGS = ("rgb8", "bgr8", "mono8", "jpeg")
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


@dataclass(frozen=True)
class _Object:
    id: str
    label: str
    kind: str  # ball | square | triangle
    color: str
    size: float  # radius (ball, triangle) or half side (square) as a fraction of min(width, height)
    motion: Callable[[float], tuple[float, float]]  # t (s) -> (x, y) as fractions of width, height
    falls: tuple[tuple[float, float], ...] = ()  # (start, end) seconds of free falls


def _linear(p0: tuple[float, float], p1: tuple[float, float], t0: float, t1: float):
    def f(t: float) -> tuple[float, float]:
        u = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        return p0[0] + (p1[0] - p0[0]) * u, p0[1] + (p1[1] - p0[1]) * u
    return f


def _fall(x: float, y0: float, y1: float, t0: float):
    def f(t: float) -> tuple[float, float]:
        u = min(max((t - t0) / FALL_S, 0.0), 1.0)
        return x, y0 + (y1 - y0) * u * u  # constant acceleration from rest
    return f


def _bounce(x0: float, x_meet: float, y: float, t_meet: float):
    def f(t: float) -> tuple[float, float]:
        u = 1.0 - abs(t - t_meet) / t_meet
        return x0 + (x_meet - x0) * max(u, 0.0), y
    return f


def build_world(seconds: float, width: int, height: int) -> list[_Object]:
    """The objects of the default scenario for a clip of `seconds` and this image size."""
    d = seconds
    r = 0.05
    gap = 1.8 * r * min(width, height) / width  # the squares' centres meet at 90% of their touching distance
    return [
        _Object("ball_1", "red ball", "ball", "red", r, _linear((-0.08, 0.3), (1.08, 0.3), 0.0, 0.6 * d)),
        _Object("ball_2", "red ball", "ball", "red", r, _fall(0.78, 0.15, 0.85, 0.3 * d),
                ((0.3 * d, 0.3 * d + FALL_S),)),
        _Object("ball_3", "red ball", "ball", "red", r, _fall(0.15, 0.1, 0.85, 0.65 * d),
                ((0.65 * d, 0.65 * d + FALL_S),)),
        _Object("square_1", "blue square", "square", "blue", r, _bounce(0.2, 0.5 - gap / 2, 0.65, 0.45 * d)),
        _Object("square_2", "blue square", "square", "blue", r, _bounce(0.8, 0.5 + gap / 2, 0.65, 0.45 * d)),
        _Object("square_3", "blue square", "square", "blue", r, _linear((0.3, -0.08), (0.3, 0.45), 0.55 * d, 0.8 * d)),
        _Object("triangle_1", "green triangle", "triangle", "green", r,
                _linear((-0.08, 1.0), (1.08, -0.08), 0.1 * d, 0.9 * d)),
    ]


def build_two_colour_world(seconds: float, width: int, height: int) -> list[_Object]:
    """Two balls that differ only by colour, on diagonals that cross below the occluder mid-clip."""
    r = 0.05
    return [
        _Object("red_ball", "red ball", "ball", "red", r, _linear((0.1, 0.35), (0.9, 0.75), 0.0, seconds)),
        _Object("blue_ball", "blue ball", "ball", "blue", r, _linear((0.9, 0.35), (0.1, 0.75), 0.0, seconds)),
    ]


def _visible(x: float, y: float, width: int, height: int) -> bool:
    """Centre inside the image and not behind the occluder."""
    ox0, oy0, ox1, oy1 = OCCLUDER
    inside = 0 <= x < width and 0 <= y < height
    hidden = ox0 * width <= x <= ox1 * width and oy0 * height <= y <= oy1 * height
    return inside and not hidden


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(first, last) indices of maximal runs of True."""
    runs, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def _events(objects: list[_Object], tracks: dict[str, list[tuple[float, float]]], times: list[float],
            stamps: list[int], width: int, height: int) -> list[dict]:
    """Fall, touch and leave events with exact frame spans."""
    px = min(width, height)
    events: list[dict] = []

    def add(kind: str, label: str, first: int, last: int, ids: list[str]) -> None:
        n = sum(e["type"] == kind for e in events) + 1
        events.append({"id": f"{kind}_{n}", "type": kind, "label": label, "start_ns": stamps[first],
                       "end_ns": stamps[last], "object_ids": ids})

    for obj in objects:
        for t0, t1 in obj.falls:
            inside = [i for i, t in enumerate(times) if t0 <= t <= t1]
            if inside:
                add("fall", f"{obj.label} falls", inside[0], inside[-1], [obj.id])
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            limit = (a.size + b.size) * px
            flags = [math.dist(pa, pb) < limit and _visible(*pa, width, height) and _visible(*pb, width, height)
                     for pa, pb in zip(tracks[a.id], tracks[b.id])]
            for first, last in _runs(flags):
                add("touch", f"{a.label} touches {b.label}", first, last, [a.id, b.id])
    for obj in objects:
        r = obj.size * px
        inside = [0 <= x < width and 0 <= y < height for x, y in tracks[obj.id]]
        for first, last in _runs(inside):
            if last == len(times) - 1:
                continue  # still inside at the end: it never left
            start = last
            while start > first and _touches_border(*tracks[obj.id][start - 1], r, width, height):
                start -= 1
            add("leave", f"{obj.label} leaves the frame", start, last, [obj.id])
    return events


def _touches_border(x: float, y: float, r: float, width: int, height: int) -> bool:
    return x < r or y < r or x > width - 1 - r or y > height - 1 - r


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 200 + 30 * (xx / max(width - 1, 1)) - 20 * (yy / max(height - 1, 1))
    noise = rng.normal(0, 4, (height, width))
    gray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def render_frame(background: np.ndarray, objects: list[_Object], positions: dict[str, tuple[float, float]]) -> np.ndarray:
    """RGB image of the world with objects at `positions` (pixels), the occluder drawn on top."""
    img = background.copy()
    height, width = img.shape[:2]
    px = min(width, height)
    for obj in objects:
        x, y = positions[obj.id]
        r = obj.size * px
        color = COLORS[obj.color]
        c = (int(round(x)), int(round(y)))
        if obj.kind == "ball":
            cv2.circle(img, c, int(round(r)), color, cv2.FILLED, cv2.LINE_AA)
        elif obj.kind == "square":
            h = int(round(r))
            cv2.rectangle(img, (c[0] - h, c[1] - h), (c[0] + h, c[1] + h), color, cv2.FILLED)
        else:
            pts = np.array([[x, y - r], [x - r * 0.95, y + r * 0.7], [x + r * 0.95, y + r * 0.7]])
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    ox0, oy0, ox1, oy1 = OCCLUDER
    cv2.rectangle(img, (int(ox0 * width), int(oy0 * height)), (int(ox1 * width), int(oy1 * height)),
                  (128, 128, 128), cv2.FILLED)
    return img


def default_queries(objects: list[_Object]) -> list[dict]:
    """Standing queries of the default scenario and the objects they refer to."""
    balls = [o.id for o in objects if o.label == "red ball"]
    squares = [o.id for o in objects if o.label == "blue square"]
    return [
        {"id": "ball_point", "task": "point", "text": "red ball", "objects": balls},
        {"id": "square_count", "task": "count", "text": "blue squares", "objects": squares},
        {"id": "ball_track", "task": "track", "text": "red ball", "objects": balls},
        {"id": "ball_fall", "task": "event", "text": "ball falling", "objects": balls, "event_type": "fall"},
    ]


def two_colour_queries(objects: list[_Object]) -> list[dict]:
    """Point and track queries for each ball of the two-colour world, asked by colour."""
    return [{"id": f"{o.color}_{task}", "task": task, "text": o.label, "objects": [o.id]}
            for o in objects for task in ("point", "track")]


WORLDS = {"default": (build_world, default_queries), "two_colours": (build_two_colour_world, two_colour_queries)}


def _image_message(typestore, img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, jpeg_quality: int):
    header = typestore.types["std_msgs/msg/Header"](
        stamp=typestore.types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S),
        frame_id=frame_id)
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        assert ok
        return "sensor_msgs/msg/CompressedImage", typestore.types["sensor_msgs/msg/CompressedImage"](
            header=header, format="jpeg", data=buf.reshape(-1))
    if encoding == "bgr8":
        pixels = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif encoding == "mono8":
        pixels = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    else:
        pixels = img
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    height, width = pixels.shape[:2]
    return "sensor_msgs/msg/Image", typestore.types["sensor_msgs/msg/Image"](
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0, step=width * channels,
        data=np.ascontiguousarray(pixels).reshape(-1))


def generate_scenario(out_dir: str | Path, *, seconds: float = 20.0, fps: float = 10.0, width: int = 640,
                      height: int = 480, encoding: str = "rgb8", seed: int = 0, storage: str = "mcap",
                      frame_id: str = "camera", bag_version: int = 9, jpeg_quality: int = 90,
                      world: str = "default", depth=None) -> Path:
    """Write `out_dir/bag` (rosbag2) and `out_dir/scenario.json`; returns the bag folder. `world`: a key of
    WORLDS (the objects and their queries).

    The bag holds one camera topic: sensor_msgs/Image on /camera/image_raw, or CompressedImage on
    /camera/image_raw/compressed for encoding "jpeg". Stamps start at 1_700_000_000 s; log time = stamp.
    `depth` (offline.depth_world.DepthOptions): also aligned depth, CameraInfo and 3D truth (scenario.json "depth").
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got '{encoding}'")
    if world not in WORLDS:
        raise ValueError(f"world must be one of {', '.join(WORLDS)}, got '{world}'")
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be mcap or sqlite3, got '{storage}'")
    if seconds <= 0 or fps <= 0 or width < 32 or height < 32:
        raise ValueError("seconds and fps must be > 0, width and height >= 32")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag = out / "bag"
    if bag.exists():
        raise FileExistsError(f"{bag} already exists")
    n = int(round(seconds * fps))
    times = [k / fps for k in range(n)]
    stamps = [START_NS + round(k * NS_PER_S / fps) for k in range(n)]
    build, queries = WORLDS[world]
    objects = build(seconds, width, height)
    tracks = {o.id: [(o.motion(t)[0] * width, o.motion(t)[1] * height) for t in times] for o in objects}
    topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    msgtype = "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image"
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    background = _background(width, height, seed)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    depth_world = None
    if depth is not None:
        from .depth_world import DepthWorld

        depth_world = DepthWorld(depth, width, height, objects, OCCLUDER, frame_id)
    with Writer(bag, version=bag_version, storage_plugin=plugin) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=typestore)
        if depth_world is not None:
            depth_world.add_connections(writer, typestore)
        for k, stamp in enumerate(stamps):
            img = render_frame(background, objects, {o.id: tracks[o.id][k] for o in objects})
            _, msg = _image_message(typestore, img, encoding, stamp, frame_id, jpeg_quality)
            writer.write(conn, stamp, typestore.serialize_cdr(msg, msgtype))
            if depth_world is not None:
                depth_world.write(writer, typestore, stamp, {o.id: tracks[o.id][k] for o in objects})
    truth = {
        "version": 1, "world": world, "camera_topic": topic, "width": width, "height": height, "frame_id": frame_id,
        "fps": fps, "frames": stamps,
        "objects": [{"id": o.id, "label": o.label, "kind": o.kind, "color": o.color,
                     "radius_px": o.size * min(width, height),
                     "track": [[s, round(x, 3), round(y, 3), _visible(x, y, width, height)]
                               for s, (x, y) in zip(stamps, tracks[o.id])]} for o in objects],
        "events": _events(objects, tracks, times, stamps, width, height),
        "queries": queries(objects),
    }
    if depth_world is not None:
        truth["depth"] = depth_world.truth()
    (out / "scenario.json").write_text(json.dumps(truth, indent=1))
    return bag


class GroundTruth:
    """A loaded scenario.json with lookups by exact frame stamp."""

    def __init__(self, data: dict) -> None:
        if data.get("version") != 1:
            raise ValueError(f"unsupported ground truth version {data.get('version')!r} (expected 1)")
        self.data = data
        self.width, self.height = int(data["width"]), int(data["height"])
        self.frames: list[int] = [int(s) for s in data["frames"]]
        self.frame_index = {s: i for i, s in enumerate(self.frames)}
        self.objects = {o["id"]: o for o in data["objects"]}
        self.positions = {o["id"]: {int(s): (float(x), float(y), bool(v)) for s, x, y, v in o["track"]}
                          for o in data["objects"]}
        self.events: list[dict] = data["events"]
        self.queries = {q["id"]: q for q in data["queries"]}

    @classmethod
    def load(cls, path: str | Path) -> "GroundTruth":
        return cls(json.loads(Path(path).read_text()))

    @property
    def diagonal(self) -> float:
        return math.hypot(self.width, self.height)

    def visible(self, object_id: str, stamp_ns: int) -> tuple[float, float] | None:
        """Pixel position of the object on this frame when it is visible there, else None."""
        p = self.positions[object_id].get(stamp_ns)
        return (p[0], p[1]) if p is not None and p[2] else None

    def query_for(self, query_id: str, text: str = "") -> dict | None:
        """The scenario query with this id, else the first one with this text."""
        return self.queries.get(query_id) or next((q for q in self.queries.values() if q["text"] == text), None)

    def query_events(self, query: dict) -> list[dict]:
        """Ground-truth events an event query asks for: its event_type, else any event of its objects."""
        kind = query.get("event_type")
        objects = set(query.get("objects", []))
        return [e for e in self.events
                if (e["type"] == kind if kind else bool(objects & set(e["object_ids"])))]
