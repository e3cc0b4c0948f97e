"""Deterministic replay of a rosbag2 through the core runtime (policy every_window): every window is processed
in order, one at a time as it falls due, so identical bags give identical outputs.

Outputs (in the output folder): results.jsonl (one `result_to_dict` per line, flushed per window), an mcap bag
`molmo2_bag` with the project's messages stamped with the source frame stamps, replay.gif (annotated clip-end
frames) and summary.json. Interrupting (Ctrl-C) leaves valid partial outputs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.image_decode import BadImage, decode_compressed, decode_raw
from ..core.overlay import draw_overlay
from ..core.engine_interface import Engine
from ..core.runtime import Runtime
from ..core.schedule import EveryWindowPolicy
from ..core.stream import Stream, StreamConfig
from ..core.serialization import result_to_dict
from ..core.types import NS_PER_S, Frame, Query, QueryResult, TaskKind

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GIF_MAX_WIDTH = 320
GIF_MAX_FRAMES = 400


class BagError(RuntimeError):
    """The bag cannot be replayed; the message names the topic and message."""


# ---- reading ---------------------------------------------------------------------------------------------
def pick_camera_topic(connections, topic: str = "") -> tuple[str, str]:
    """(topic, msgtype): `topic` when given, else the first Image or CompressedImage topic (by name; topics named
    *depth* last, they are rarely the colour camera)."""
    image_topics = sorted({(c.topic, c.msgtype) for c in connections if c.msgtype in IMAGE_TYPES},
                          key=lambda t: ("depth" in t[0], t))
    if topic:
        match = [t for t in image_topics if t[0] == topic]
        if not match:
            known = ", ".join(f"{c.topic} [{c.msgtype}]" for c in connections) or "none"
            raise BagError(f"topic '{topic}' is not an Image/CompressedImage topic of the bag (topics: {known})")
        return match[0]
    if not image_topics:
        raise BagError("the bag has no sensor_msgs/Image or sensor_msgs/CompressedImage topic")
    return image_topics[0]


def message_to_frame(msgtype: str, msg: Any) -> Frame:
    """Decode one image message into a Frame stamped with its header stamp. Raises BadImage."""
    stamp = int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec)
    if msgtype.endswith("CompressedImage"):
        image = decode_compressed(msg.format, msg.data)
    else:
        image = decode_raw(msg.encoding, int(msg.width), int(msg.height), int(msg.step), msg.is_bigendian, msg.data)
    return Frame(stamp_ns=stamp, image=image, frame_id=msg.header.frame_id)


def read_frames(bag: Path, topic: str = "") -> tuple[str, int, Iterator[Frame]]:
    """(topic, message count, frames in log-time order). Errors say which topic and message failed."""
    from rosbags.highlevel import AnyReader

    try:
        reader = AnyReader([Path(bag)])
        reader.open()
    except Exception as error:  # noqa: BLE001 - any reader failure becomes one clear error
        raise BagError(f"cannot open bag '{bag}': {type(error).__name__}: {error}") from error
    name, msgtype = pick_camera_topic(reader.connections, topic)
    conns = [c for c in reader.connections if c.topic == name]
    total = sum(c.msgcount for c in conns)

    def frames() -> Iterator[Frame]:
        try:
            for i, (conn, log_ns, raw) in enumerate(reader.messages(connections=conns)):
                where = f"topic '{name}' message {i} (log time {log_ns} ns)"
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as error:  # noqa: BLE001
                    raise BagError(f"{where}: cannot deserialize {conn.msgtype}: {error}") from error
                try:
                    yield message_to_frame(conn.msgtype, msg)
                except BadImage as error:
                    raise BagError(f"{where}: bad image: {error}") from error
        finally:
            reader.close()
    return name, total, frames()


def load_queries(path: str | Path) -> list[Query]:
    """Queries from YAML/JSON: a list of {id, task, text[, topic]} (or {queries: [...]})."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("queries", data.get("standing_queries"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{id, task, text}} queries")
    return [Query(id=str(q["id"]), task=TaskKind(q["task"]), text=str(q.get("text", "")),
                  topic=str(q.get("topic", ""))) for q in data]


# ---- output bag ------------------------------------------------------------------------------------------
def msg_dir() -> Path:
    """Folder with the project's .msg files (source tree, else the installed ament share folder)."""
    here = Path(__file__).resolve().parents[2] / "msg"
    if here.is_dir():
        return here
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        share = Path(prefix) / "share" / "molmo2_ros" / "msg"
        if share.is_dir():
            return share
    raise FileNotFoundError("cannot find molmo2_ros msg/*.msg (not in the source tree nor AMENT_PREFIX_PATH)")


def project_typestore():
    """A ROS 2 typestore with the molmo2_ros messages registered from their .msg text."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"molmo2_ros/msg/{path.stem}"))
    store.register(types)
    return store


class ResultBagWriter:
    """Writes QueryResults as molmo2_ros messages to an mcap bag; log time and header stamps = source stamps."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.store = project_typestore()
        self.t = self.store.types
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.messages = 0

    def _time(self, ns: int):
        return self.t["builtin_interfaces/msg/Time"](sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)

    def _header(self, ns: int, frame_id: str):
        return self.t["std_msgs/msg/Header"](stamp=self._time(ns), frame_id=frame_id)

    def _point(self, p):
        return self.t["molmo2_ros/msg/GroundedPoint"](stamp=self._time(p.stamp_ns), x=float(p.x), y=float(p.y),
                                                      label=p.label, object_id=p.object_id)

    def _write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self._writer.write(self._conns[topic], stamp_ns, self.store.serialize_cdr(msg, msgtype))
        self.messages += 1

    def write(self, r: QueryResult) -> None:
        t, q, s = self.t, r.query, r.stamp_ns
        header = self._header(s, r.frame_id)
        self._write(f"/molmo2/answers/{q.id}", "molmo2_ros/msg/Answer", t["molmo2_ros/msg/Answer"](
            header=header, query_id=q.id, query=q.text, task=q.task.value, text=r.text,
            clip_start=self._time(r.clip_start_ns), clip_end=self._time(r.clip_end_ns), num_frames=r.num_frames,
            num_visual_tokens=r.num_visual_tokens, model_id=r.model_id, inference_time=float(r.inference_s)), s)
        if q.task in (TaskKind.POINT, TaskKind.COUNT):
            self._write(f"/molmo2/points/{q.id}", "molmo2_ros/msg/PointArray", t["molmo2_ros/msg/PointArray"](
                header=header, query_id=q.id, query=q.text, image_width=r.width, image_height=r.height,
                clip_start=self._time(r.clip_start_ns), clip_end=self._time(r.clip_end_ns),
                points=[self._point(p) for p in r.points], count=-1 if r.count is None else int(r.count)), s)
        if q.task == TaskKind.TRACK:
            tracks = [t["molmo2_ros/msg/Track"](
                id=k.id, label=k.label, status=int(k.status), first_seen=self._time(k.first_ns),
                last_seen=self._time(k.last_ns), trajectory=[self._point(p) for p in k.trajectory]) for k in r.tracks]
            self._write(f"/molmo2/tracks/{q.id}", "molmo2_ros/msg/TrackArray", t["molmo2_ros/msg/TrackArray"](
                header=header, query_id=q.id, query=q.text, image_width=r.width, image_height=r.height,
                tracks=tracks), s)
        for e in r.events:
            stamp = e.evidence[-1].stamp_ns if e.evidence else e.end_ns
            self._write(f"/molmo2/events/{q.id}", "molmo2_ros/msg/Event", t["molmo2_ros/msg/Event"](
                header=self._header(stamp, r.frame_id), id=e.id, query_id=e.query_id, query=e.query,
                description=e.description, start=self._time(e.start_ns), end=self._time(e.end_ns),
                state=int(e.state), evidence=[self._point(p) for p in e.evidence], track_ids=list(e.track_ids)),
                stamp)

    def close(self) -> None:
        self._writer.close()


# ---- progress --------------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar with ETA on a stream (stderr); silent when disabled."""

    def __init__(self, total: int, enabled: bool = True, stream=sys.stderr) -> None:
        self.total, self.enabled, self.stream = max(total, 1), enabled, stream
        self.started = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        elapsed = now - self.started
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(frac * 30)
        eta_text = f"{eta:5.0f}s" if math.isfinite(eta) else "    ?"
        self.stream.write(f"\r[{bar:<30}] {done}/{self.total} frames {frac:4.0%} ETA {eta_text} {note}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ---- replay ----------------------------------------------------------------------------------------------
@dataclass
class ReplaySummary:
    bag: str
    topic: str
    model_id: str
    frames: int = 0
    windows: int = 0
    results: int = 0
    output_messages: int = 0
    wall_s: float = 0.0
    inference_s: float = 0.0
    interrupted: bool = False
    per_query: dict[str, dict[str, Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    results_path: str = ""
    output_bag: str = ""
    gif: str = ""

    def table(self) -> str:
        """Readable summary."""
        lines = [f"replay of {self.bag} [{self.topic}] with model {self.model_id}"
                 + (" (INTERRUPTED: partial output)" if self.interrupted else ""),
                 f"  frames {self.frames}, windows {self.windows}, results {self.results}, "
                 f"messages written {self.output_messages}, wall {self.wall_s:.1f} s, "
                 f"inference {self.inference_s:.1f} s",
                 f"  {'query':<20} {'task':<9} {'answers':>7} {'points':>7} {'tracks':>7} {'events':>7} {'empty':>6}"]
        for qid, s in self.per_query.items():
            lines.append(f"  {qid:<20} {s['task']:<9} {s['answers']:>7} {s['points']:>7} {s['tracks']:>7} "
                         f"{s['events']:>7} {s['empty']:>6}")
        if self.counters:
            lines.append("  counters: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())))
        lines += [f"  results: {self.results_path}", f"  bag:     {self.output_bag}", f"  gif:     {self.gif}"]
        return "\n".join(lines)


def _gif_frame(image: np.ndarray, results: list[QueryResult]) -> np.ndarray:
    import cv2

    img = draw_overlay(image, results)
    if img.shape[1] > GIF_MAX_WIDTH:
        h = int(round(img.shape[0] * GIF_MAX_WIDTH / img.shape[1]))
        img = cv2.resize(img, (GIF_MAX_WIDTH, h), interpolation=cv2.INTER_AREA)
    return img


def _save_gif(path: Path, frames: list[np.ndarray], frame_ms: int) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=False)


def replay(bag: str | Path, out_dir: str | Path, engine: Engine, queries: list[Query], *,
           config: StreamConfig = StreamConfig(), topic: str = "", gif: bool = True,
           progress: bool = True, depth_topic: str = "", camera_info_topic: str = "") -> ReplaySummary:
    """Run the runtime over every window of the bag's camera topic and write the outputs to out_dir. With
    config.depth.enabled, points are lifted to 3D from the bag's depth and CameraInfo topics (offline/depth_bag.py)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag_out = out / "molmo2_bag"
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists: choose an empty output folder")
    name, total, frames = read_frames(Path(bag), topic)
    stream = Stream("", queries, config)
    depth = None
    if config.depth.enabled:
        from .depth_bag import DepthFeeder

        try:
            depth = DepthFeeder(bag, stream, name, depth_topic, camera_info_topic)
        except ValueError as error:
            raise BagError(str(error)) from error
    # Clips run as soon as they fall due, so at most one is ever pending: the byte budget never binds here.
    runtime = Runtime(engine, [stream], EveryWindowPolicy(max_pending_bytes=2**40))
    summary = ReplaySummary(bag=str(bag), topic=name, model_id=engine.model_id,
                            results_path=str(out / "results.jsonl"), output_bag=str(bag_out))
    summary.per_query = {q.id: {"task": q.task.value, "answers": 0, "points": 0, "tracks": 0, "events": 0,
                                "empty": 0} for q in stream.queries}
    writer = ResultBagWriter(bag_out)
    bar = Progress(total, progress)
    gif_frames: list[np.ndarray] = []
    started = time.perf_counter()
    try:
        with open(out / "results.jsonl", "w", encoding="utf-8") as jsonl:
            for frame in frames:
                summary.frames += 1
                if depth is not None:
                    depth.feed_until(frame.stamp_ns)
                clip = runtime.push("", frame)
                if clip is not None:
                    done = runtime.step()
                    results = done[0][1] if done else []
                    summary.windows += 1
                    for r in results:
                        jsonl.write(json.dumps(result_to_dict(r)) + "\n")
                        writer.write(r)
                        _tally(summary.per_query[r.query.id], r)
                    jsonl.flush()
                    summary.results += len(results)
                    summary.inference_s += max((r.inference_s for r in results), default=0.0)
                    if gif and len(gif_frames) < GIF_MAX_FRAMES:
                        gif_frames.append(_gif_frame(clip.frames[-1].frame.image, results))
                bar.update(summary.frames, f"windows {summary.windows}")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        writer.close()
        if depth is not None:
            depth.close()
        bar.update(summary.frames, f"windows {summary.windows}", force=True)
        bar.close()
        summary.output_messages = writer.messages
        summary.counters = {k: int(v) for k, v in sorted(stream.counter_snapshot().items())}
        if gif_frames:
            _save_gif(out / "replay.gif", gif_frames, int(config.buffer.stride_s * 1000))
            summary.gif = str(out / "replay.gif")
        summary.wall_s = time.perf_counter() - started
        (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=1))
    return summary


def _tally(stats: dict[str, Any], r: QueryResult) -> None:
    stats["answers"] += 1
    stats["points"] += len(r.points)
    stats["tracks"] += len(r.tracks)
    stats["events"] += len(r.events)
    stats["empty"] += int(not (r.points or r.tracks or r.events or r.count))


def default_model_dir() -> Path:
    """Where the default tiny random model lives: $XDG_CACHE_HOME (or ~/.cache)/molmo2_ros/tiny-random."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "molmo2_ros" / "tiny-random"


def ensure_tiny_model(folder: Path | None = None) -> Path:
    """Build the tiny random Molmo2 into `folder` once (atomically); returns the folder."""
    import shutil
    import tempfile

    from ..core.tiny_model import build_tiny_model

    folder = Path(folder or default_model_dir())
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        build_tiny_model(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not built by a concurrent process meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
