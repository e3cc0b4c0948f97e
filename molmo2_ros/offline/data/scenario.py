"""A synthetic world with exact ground truth, written as a rosbag2 plus scenario.json (docs/ground_truth.md).

Coloured shapes move over a textured background: three red balls (one crosses the image behind a grey box and
leaves it on the right, two fall off shelves), three blue squares (two meet, touch and bounce apart, one enters
from the top) and a green triangle that crosses the image diagonally. Motions are analytic, so positions,
visibility and event spans are exact for every frame stamp. Sizes scale with the image, motions with `seconds`
(falls take a fixed 1.5 s).

World "two_colours": a red ball and a blue ball, the same shape, that cross each other (only the colour tells
them apart), with point and track queries for each.

World "random": the same kinds of motion drawn from the seed (objects that rest, move in straight lines, enter and
leave, fall off shelves, or approach each other, touch and bounce apart), with point, count, track and event
queries for every label: held-out scenes for a model trained on this synthetic world.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from molmo2_ros.core.types import NS_PER_S

START_NS = 1_700_000_000 * NS_PER_S
FALL_S = 1.5
OCCLUDER = (0.42, 0.18, 0.58, 0.42)  # x0, y0, x1, y1 as fractions of the image
ENCODINGS = ("rgb8", "bgr8", "mono8", "jpeg")
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


@dataclass(frozen=True)
class SceneObject:
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


def build_world(seconds: float, width: int, height: int, rng: np.random.Generator | None = None) -> list[SceneObject]:
    """The objects of the default scenario for a clip of `seconds` and this image size (`rng` is not used)."""
    d = seconds
    r = 0.05
    gap = 1.8 * r * min(width, height) / width  # the squares' centres meet at 90% of their touching distance
    return [
        SceneObject("ball_1", "red ball", "ball", "red", r, _linear((-0.08, 0.3), (1.08, 0.3), 0.0, 0.6 * d)),
        SceneObject("ball_2", "red ball", "ball", "red", r, _fall(0.78, 0.15, 0.85, 0.3 * d),
                ((0.3 * d, 0.3 * d + FALL_S),)),
        SceneObject("ball_3", "red ball", "ball", "red", r, _fall(0.15, 0.1, 0.85, 0.65 * d),
                ((0.65 * d, 0.65 * d + FALL_S),)),
        SceneObject("square_1", "blue square", "square", "blue", r, _bounce(0.2, 0.5 - gap / 2, 0.65, 0.45 * d)),
        SceneObject("square_2", "blue square", "square", "blue", r, _bounce(0.8, 0.5 + gap / 2, 0.65, 0.45 * d)),
        SceneObject("square_3", "blue square", "square", "blue", r,
                    _linear((0.3, -0.08), (0.3, 0.45), 0.55 * d, 0.8 * d)),
        SceneObject("triangle_1", "green triangle", "triangle", "green", r,
                _linear((-0.08, 1.0), (1.08, -0.08), 0.1 * d, 0.9 * d)),
    ]


def build_two_colour_world(seconds: float, width: int, height: int,
                           rng: np.random.Generator | None = None) -> list[SceneObject]:
    """Two balls that differ only by colour, on diagonals that cross below the occluder mid-clip (`rng` is not
    used)."""
    r = 0.05
    return [
        SceneObject("red_ball", "red ball", "ball", "red", r, _linear((0.1, 0.35), (0.9, 0.75), 0.0, seconds)),
        SceneObject("blue_ball", "blue ball", "ball", "blue", r, _linear((0.9, 0.35), (0.1, 0.75), 0.0, seconds)),
    ]


def _approach(far: tuple[float, float], meet: tuple[float, float], t_meet: float, half_s: float):
    """At `far` until t_meet - half_s, straight to `meet` at t_meet, straight back to `far` by t_meet + half_s."""
    def f(t: float) -> tuple[float, float]:
        u = min(abs(t - t_meet) / half_s, 1.0)
        return meet[0] + (far[0] - meet[0]) * u, meet[1] + (far[1] - meet[1]) * u
    return f


KINDS = ("ball", "square", "triangle")


def build_random_world(seconds: float, width: int, height: int, rng: np.random.Generator | None = None,
                       palette: tuple[tuple[str, str], ...] = ()) -> list[SceneObject]:
    """1-9 objects with random labels (colour x kind) and the default world's kinds of motion, drawn from `rng`:
    resting, straight moves that may start or end outside the image (enter, leave), falls from rest (1.5 s,
    landing inside), and pairs that approach, touch (centres at 75-95 % of the touching distance) and bounce
    apart. Times are spread over [-1 s, seconds + 1 s], so a window of the clip may hold none, part or all of an
    event. Objects other than a touching pair are redrawn (up to 30 times) when they would come within touching
    distance of another object, except for 20 % of the moving ones (crossings). `palette`: (colour, kind) pairs
    to draw labels from (several objects of one label are then common); empty: any colour and kind."""
    rng = rng if rng is not None else np.random.default_rng(0)
    px = min(width, height)
    grid = np.arange(-1.0, seconds + 1.0, 0.1)
    objects: list[SceneObject] = []
    paths: list[np.ndarray] = []  # pixel positions of each object on `grid`

    def path(motion) -> np.ndarray:
        return np.array([motion(float(t)) for t in grid]) * (width, height)

    def clear(p: np.ndarray, s: float) -> bool:
        return all(np.hypot(*(p - q).T).min() >= (s + o.size) * px for o, q in zip(objects, paths))

    def add(make, crossing_ok: bool = False, colour: str = "", kind: str = "") -> None:
        """make() -> (motion, size, falls); redrawn while it would touch another object."""
        for _ in range(30):
            motion, s, falls = make()
            p = path(motion)
            if crossing_ok or clear(p, s):
                break
        else:
            return
        if palette and not (colour and kind):
            colour, kind = palette[int(rng.integers(len(palette)))]
        colour = colour or str(rng.choice(list(COLORS)))
        kind = kind or str(rng.choice(KINDS))
        n = sum(o.kind == kind for o in objects) + 1
        objects.append(SceneObject(f"{kind}_{n}", f"{colour} {kind}", kind, colour, s, motion, tuple(falls)))
        paths.append(p)

    def size() -> float:
        return float(rng.uniform(0.04, 0.065))

    if rng.random() < 0.5:  # a pair that meets, touches and bounces apart
        colour, kind = palette[int(rng.integers(len(palette)))] if palette else (
            str(rng.choice(list(COLORS))), str(rng.choice(KINDS)))
        sa, sb = size(), size()
        angle = float(rng.choice([0.0, math.pi / 2, rng.uniform(0, 2 * math.pi)]))
        gap = float(rng.uniform(0.75, 0.95)) * (sa + sb) * px  # centre distance at the meeting, pixels
        cx, cy = float(rng.uniform(0.2, 0.8)) * width, float(rng.uniform(0.2, 0.8)) * height
        dx, dy = math.cos(angle) * gap / 2, math.sin(angle) * gap / 2
        travel = float(rng.uniform(0.1, 0.3)) * px
        half_s = travel / (float(rng.uniform(0.03, 0.1)) * px)
        t_meet = float(rng.uniform(-1.0, seconds + 1.0))
        for sign, s in ((-1, sa), (1, sb)):
            meet = ((cx + sign * dx) / width, (cy + sign * dy) / height)
            far = ((cx + sign * (dx + math.cos(angle) * travel)) / width,
                   (cy + sign * (dy + math.sin(angle) * travel)) / height)
            same = rng.random() < 0.7
            add(lambda m=_approach(far, meet, t_meet, half_s), s=s: (m, s, ()), True,
                colour if same else "", kind if same else "")

    def fall():
        y0 = float(rng.uniform(0.06, 0.4))
        y1 = float(rng.uniform(max(y0 + 0.3, 0.6), 0.92))
        t0 = float(rng.uniform(-1.0, seconds - 0.5))
        return _fall(float(rng.uniform(0.06, 0.94)), y0, y1, t0), size(), ((t0, t0 + FALL_S),)

    def move():
        p0 = (float(rng.uniform(-0.1, 1.1)), float(rng.uniform(-0.1, 1.1)))
        p1 = (float(rng.uniform(-0.1, 1.1)), float(rng.uniform(-0.1, 1.1)))
        speed = float(rng.uniform(0.04, 0.15))  # image sizes per second
        t0 = float(rng.uniform(-1.0, seconds + 1.0)) - seconds / 2
        return _linear(p0, p1, t0, t0 + max(math.dist(p0, p1) / speed, 0.5)), size(), ()

    def rest():
        p = (float(rng.uniform(0.04, 0.96)), float(rng.uniform(0.04, 0.96)))
        return _linear(p, p, 0.0, 1.0), size(), ()

    for _ in range(int(rng.integers(0, 3))):
        add(fall)
    for _ in range(int(rng.integers(0, 4))):
        add(move, crossing_ok=rng.random() < 0.2)
    for _ in range(int(rng.integers(0 if objects else 1, 3))):
        add(rest)
    return objects


def is_visible(x: float, y: float, width: int, height: int) -> bool:
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


def scenario_events(objects: list[SceneObject], tracks: dict[str, list[tuple[float, float]]], times: list[float],
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
            flags = [math.dist(pa, pb) < limit and is_visible(*pa, width, height) and is_visible(*pb, width, height)
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


def textured_background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 200 + 30 * (xx / max(width - 1, 1)) - 20 * (yy / max(height - 1, 1))
    noise = rng.normal(0, 4, (height, width))
    gray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def render_frame(background: np.ndarray, objects: list[SceneObject],
                 positions: dict[str, tuple[float, float]]) -> np.ndarray:
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


def default_queries(objects: list[SceneObject]) -> list[dict]:
    """Standing queries of the default scenario and the objects they refer to: one per task, an event query per
    event type (asked as Molmo2 is asked: "Point to any {text} in the video"), the triangle (hidden behind the
    occluder or outside the image part of the time) and a label that is never there (green ball)."""
    balls = [o.id for o in objects if o.label == "red ball"]
    squares = [o.id for o in objects if o.label == "blue square"]
    triangles = [o.id for o in objects if o.label == "green triangle"]
    return [
        {"id": "ball_point", "task": "point", "text": "red ball", "objects": balls},
        {"id": "square_count", "task": "count", "text": "blue squares", "objects": squares},
        {"id": "ball_track", "task": "track", "text": "red ball", "objects": balls},
        {"id": "ball_fall", "task": "event", "text": "ball falling", "objects": balls, "event_type": "fall"},
        {"id": "square_touch", "task": "event", "text": "squares touching", "objects": squares,
         "event_type": "touch"},
        {"id": "ball_leave", "task": "event", "text": "ball leaving the frame", "objects": balls,
         "event_type": "leave"},
        {"id": "triangle_point", "task": "point", "text": "green triangle", "objects": triangles},
        {"id": "green_ball_point", "task": "point", "text": "green ball", "objects": []},
    ]


def two_colour_queries(objects: list[SceneObject]) -> list[dict]:
    """Point and track queries for each ball of the two-colour world, asked by colour."""
    return [{"id": f"{o.color}_{task}", "task": task, "text": o.label, "objects": [o.id]}
            for o in objects for task in ("point", "track")]


EVENT_TEXT = {"fall": "{kind} falling", "touch": "{kind}s touching", "leave": "{kind} leaving the frame"}


def random_queries(objects: list[SceneObject]) -> list[dict]:
    """For every label: point, count and track; for every kind: one event query per event type; plus a point
    query for a label that is not in the scene (when one is left)."""
    labels = sorted({o.label for o in objects})
    queries = []
    for label in labels:
        ids = [o.id for o in objects if o.label == label]
        key = label.replace(" ", "_")
        queries += [{"id": f"{key}_point", "task": "point", "text": label, "objects": ids},
                    {"id": f"{key}_count", "task": "count", "text": label + "s", "objects": ids},
                    {"id": f"{key}_track", "task": "track", "text": label, "objects": ids}]
    for kind in sorted({o.kind for o in objects}):
        ids = [o.id for o in objects if o.kind == kind]
        queries += [{"id": f"{kind}_{etype}", "task": "event", "text": text.format(kind=kind), "objects": ids,
                     "event_type": etype} for etype, text in EVENT_TEXT.items()]
    absent = [f"{c} {k}" for c in COLORS for k in KINDS if f"{c} {k}" not in labels]
    if absent:
        queries.append({"id": "absent_point", "task": "point", "text": absent[0], "objects": []})
    return queries


WORLDS = {"default": (build_world, default_queries), "two_colours": (build_two_colour_world, two_colour_queries),
          "random": (build_random_world, random_queries)}


def image_message(typestore, img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str, jpeg_quality: int):
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
    objects = build(seconds, width, height, np.random.default_rng([seed, 1]))
    tracks = {o.id: [(o.motion(t)[0] * width, o.motion(t)[1] * height) for t in times] for o in objects}
    topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    msgtype = "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image"
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    background = textured_background(width, height, seed)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    depth_world = None
    if depth is not None:
        from molmo2_ros.offline.data.depth_world import DepthWorld

        depth_world = DepthWorld(depth, width, height, objects, OCCLUDER, frame_id)
    with Writer(bag, version=bag_version, storage_plugin=plugin) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=typestore)
        if depth_world is not None:
            depth_world.add_connections(writer, typestore)
        for k, stamp in enumerate(stamps):
            img = render_frame(background, objects, {o.id: tracks[o.id][k] for o in objects})
            _, msg = image_message(typestore, img, encoding, stamp, frame_id, jpeg_quality)
            writer.write(conn, stamp, typestore.serialize_cdr(msg, msgtype))
            if depth_world is not None:
                depth_world.write(writer, typestore, stamp, {o.id: tracks[o.id][k] for o in objects})
    truth = {
        "version": 1, "world": world, "camera_topic": topic, "width": width, "height": height, "frame_id": frame_id,
        "fps": fps, "frames": stamps,
        "objects": [{"id": o.id, "label": o.label, "kind": o.kind, "color": o.color,
                     "radius_px": o.size * min(width, height),
                     "track": [[s, round(x, 3), round(y, 3), is_visible(x, y, width, height)]
                               for s, (x, y) in zip(stamps, tracks[o.id])]} for o in objects],
        "events": scenario_events(objects, tracks, times, stamps, width, height),
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
        """Ground-truth events an event query asks for: those of its event_type whose objects are all among the
        query's objects (any of that type when it lists none; "squares touching" is not a square touching a
        ball), else any event of its objects."""
        kind = query.get("event_type")
        objects = set(query.get("objects", []))
        if kind:
            return [e for e in self.events
                    if e["type"] == kind and (not objects or set(e["object_ids"]) <= objects)]
        return [e for e in self.events if objects & set(e["object_ids"])]
