"""Deterministic replay of a rosbag2 through the core runtime (policy every_window): every window is processed
in order, one at a time as it falls due, so identical bags give identical outputs.

Outputs (in the output folder): results.jsonl (one `result_to_dict` per line, flushed per window), an mcap bag
`molmo2_bag` with the node's messages on the node's topics (`/molmo2/...`, see ResultBagWriter), replay.gif
(annotated clip-end frames) and summary.json. At the end of the bag every open track and event ends (closing
results, `QueryResult.closing`). Ctrl-C stops the replay after the window in progress and ends every open track and
event the same way, so the partial outputs are valid and every event reported has its ENDED (a second Ctrl-C stops
at once, see InterruptRequest).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from molmo2_ros.core.messages import (MessageTypes, VisionOptions, VisionTypes, bag_topic, detection_messages,
                                      full_name, output_topics, result_messages)
from molmo2_ros.core.overlay import draw_overlay
from molmo2_ros.core.engine_interface import Engine
from molmo2_ros.core.history import HistoryStore
from molmo2_ros.core.intake import BadFrame, ColourGate
from molmo2_ros.core.runtime import Runtime
from molmo2_ros.core.schedule import EveryWindowPolicy
from molmo2_ros.core.stream import Stream, StreamConfig
from molmo2_ros.core.serialization import result_to_dict
from molmo2_ros.core.settings import SPECS
from molmo2_ros.core.types import Frame, Query, QueryResult, TaskKind
from molmo2_ros.offline.annotations import ANNOTATIONS_TYPE, IMAGE_TYPE, AnnotationBuilder
from molmo2_ros.offline.annotations import register as register_foxglove
from molmo2_ros.offline.data.bags import BagError, BagFrame, CameraBag

GIF_MAX_WIDTH = 320
GIF_MAX_FRAMES = 400
HISTORY_WAIT_S = 30.0  # longest wait for room in the history's write queue (a replay runs faster than real time)


# ---- reading ---------------------------------------------------------------------------------------------
def runtime_frames(camera: CameraBag, stream: Stream, warn: Callable[[str], None]) -> Iterator[Frame]:
    """The frames to push into the runtime, through the node's intake (core/intake.py): a frame is decoded only when
    the stream's clip buffer will keep it (others pass as placeholders without pixels, which the buffer counts); a
    frame that cannot be deserialized or decoded is dropped and counted in the stream's counters under bad_<reason>
    (the node's counter names), the first of each reason with a warning."""
    def dropped(error: BadFrame, item: BagFrame | None) -> None:
        key = f"bad_{error.reason}"
        if stream.counters[key] == 1:
            where = camera.topic if item is None else f"frame {item.index} (stamp {item.stamp_ns} ns) cannot be decoded"
            warn(f"{where}: {error} (dropped; further drops are only counted as {key})")

    gate = ColourGate(stream.accepts, lambda item, _stamp: item.decode(), stream.counters, dropped)
    for item in camera.frames(gate.drop):
        frame = gate.take(item.stamp_ns, item)
        if frame is not None:
            yield frame


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


# The vision_msgs 4.x messages of the standard outputs (ros-perception/vision_msgs, the same field names and types;
# comments left out): the bag needs only their definitions, so a replay writes them with or without vision_msgs
# installed. test/test_vision_msgs_outputs.py checks them against the test package's (test/interfaces/vision_msgs).
VISION_MSGS = {
    "Point2D": "float64 x\nfloat64 y\n",
    "Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "ObjectHypothesis": "string class_id\nfloat64 score\n",
    "ObjectHypothesisWithPose": "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "Detection2D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                   "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "Detection3D": "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                   "vision_msgs/BoundingBox3D bbox\nstring id\n",
    "Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}


def project_typestore():
    """A ROS 2 typestore with the molmo2_ros messages registered from their .msg text, and vision_msgs'
    (VISION_MSGS)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"molmo2_ros/msg/{path.stem}"))
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, f"vision_msgs/msg/{name}"))
    store.register(types)
    return store


class ResultBagWriter:
    """Writes QueryResults to an mcap bag on the node's topics (`/molmo2/...`, the 3D sides of a replay with depth
    on `/molmo2/points3d/<id>`, ..., the standard outputs on `/molmo2/detections/<id>` and with depth
    `/molmo2/detections3d/<id>`) through the node's mapping (core/messages.py). `box_px`: the side of the
    Detection2D boxes (the node's `vision_msgs.box_px`).

    Header stamps are source stamps. The log time of every message of a result is the result's stamp (its clip's
    newest frame), so the bag is ordered by log time: an Event's header keeps its evidence stamp, which may be
    older than the clip that reported it (a replay writes its results in clip order, and clip ends never
    decrease)."""

    def __init__(self, path: Path, box_px: float = float(SPECS["vision_msgs.box_px"].default)) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.store = project_typestore()
        register_foxglove(self.store)
        self._annotate = AnnotationBuilder(self.store)
        self.types = MessageTypes.resolve(self.store.types.__getitem__)
        self.vision = VisionOptions(VisionTypes.resolve(self.store.types.__getitem__), box_px)
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.messages = 0

    def _write(self, topic: str, msgtype: str, msg: Any, log_ns: int) -> None:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self._writer.write(self._conns[topic], log_ns, self.store.serialize_cdr(msg, msgtype))
        self.messages += 1

    def write(self, r: QueryResult) -> None:
        """Every message the node publishes for `r`, its 3D side (a result with `lifted`) and standard outputs
        included."""
        topics = output_topics(r.query).by_output(depth=True, vision=True)
        for out in result_messages(self.types, r) + detection_messages(self.vision, r):
            self._write(bag_topic(topics[out.output][0]), full_name(out.type_name), out.msg, r.stamp_ns)

    def write_frame(self, frame: Frame, results: list[QueryResult], max_trail: int = 32) -> None:
        """A window's newest frame (`/molmo2/image`, JPEG) and its results drawn as Foxglove image annotations
        (`/molmo2/annotations`), both stamped (header and log time) with the frame's stamp."""
        self._write(bag_topic("~/image"), IMAGE_TYPE, self._annotate.image(frame.image, frame.stamp_ns,
                                                                          frame.frame_id), frame.stamp_ns)
        self._write(bag_topic("~/annotations"), ANNOTATIONS_TYPE,
                    self._annotate.annotations(results, frame.stamp_ns, max_trail), frame.stamp_ns)

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


class InterruptRequest:
    """Ctrl-C (SIGINT) while in this context: the first one sets `requested` (the replay stops after the window in
    progress, then ends open tracks and events), a second one raises KeyboardInterrupt at once. Only in the main
    thread, where signal handlers live; elsewhere SIGINT keeps its handler."""

    def __init__(self, on_request: Callable[[], None]) -> None:
        self.requested = False
        self._on_request = on_request
        self._previous: Any = None

    def __enter__(self) -> InterruptRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._on_request()

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
    # Frames not fed to the model, by reason, with the node's counter names (bad_<reason>, buffer_dropped_<reason>).
    frames_dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    results_path: str = ""
    output_bag: str = ""
    gif: str = ""
    history: str = ""  # the history folder written (replay --history), "" for none

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
        if self.frames_dropped:
            lines.append("  frames dropped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.frames_dropped.items())))
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.error:
            lines.append(f"  ERROR: {self.error}")
        lines += [f"  results: {self.results_path}", f"  bag:     {self.output_bag}"]
        if self.gif:
            lines.append(f"  gif:     {self.gif}")
        if self.history:
            lines.append(f"  history: {self.history}")
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
           progress: bool = True, depth_topic: str = "", camera_info_topic: str = "",
           history: HistoryStore | None = None) -> ReplaySummary:
    """Run the runtime over every window of the bag's camera topic and write the outputs to out_dir. With
    config.depth.enabled, points are lifted to 3D from the bag's depth and CameraInfo topics
    (offline/data/depth_bag.py). `history`: also store the sampled frames (with their depth) and the sightings of
    every result there, as the node does (HistoryStore.offer_clip with each clip run, then the window left over;
    HistoryStore.record with every result); flushed at the end, closed by the caller."""
    out = Path(out_dir)
    bag_out = out / "molmo2_bag"
    if bag_out.exists():
        raise FileExistsError(f"{bag_out} exists: choose an empty output folder")
    warnings: list[str] = []
    bar_active = progress  # a warning during the progress bar starts on a new line

    def warn(text: str) -> None:
        warnings.append(text)
        print(f"{chr(10) if bar_active else ''}warning: {text}", file=sys.stderr, flush=True)

    def note_interrupt() -> None:
        print(f"{chr(10) if bar_active else ''}interrupted: stopping after this window and ending open tracks and "
              "events (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    # Vision features are cached by stream and stamp: an engine that replayed another bag (same stamps, other
    # pixels) must not reuse them.
    engine.clear_cache()
    # Depth is fed before each colour frame up to its stamp + max_dt (DepthFeeder.feed_until): the best match is
    # there when a clip is lifted, nothing to wait for.
    stream = Stream("", queries, replace(config, depth=replace(config.depth, wait_s=0.0)))
    # Clips run as soon as they fall due, so at most one is ever pending: the byte budget never binds here.
    runtime = Runtime(engine, [stream], EveryWindowPolicy(max_pending_bytes=2**40))
    camera = CameraBag(bag, topic)
    depth = None
    if config.depth.enabled:
        from molmo2_ros.offline.data.depth_bag import DepthFeeder

        try:
            depth = DepthFeeder(bag, stream, camera.topic, depth_topic, camera_info_topic)
        except ValueError as error:
            camera.close()
            raise BagError(str(error)) from error
    out.mkdir(parents=True, exist_ok=True)
    summary = ReplaySummary(bag=str(bag), topic=camera.topic, model_id=engine.model_id,
                            results_path=str(out / "results.jsonl"), output_bag=str(bag_out), warnings=warnings)
    summary.per_query = {q.id: {"task": q.task.value, "answers": 0, "points": 0, "tracks": 0, "events": 0,
                                "empty": 0} for q in stream.queries}
    writer = ResultBagWriter(bag_out)
    bar = Progress(camera.count, progress)
    gif_frames: list[np.ndarray] = []
    started = time.perf_counter()
    try:
        with open(out / "results.jsonl", "w", encoding="utf-8") as jsonl, InterruptRequest(note_interrupt) as stop:
            def emit(results: list[QueryResult]) -> None:
                for r in results:
                    jsonl.write(json.dumps(result_to_dict(r)) + "\n")
                    writer.write(r)
                jsonl.flush()
                if history is not None:
                    history.record("", results)

            def store(clip) -> None:
                if history is not None and clip is not None:  # faster than real time: wait, never drop
                    history.offer_clip("", clip, stream.depth.store.depth_for if stream.depth else None,
                                       wait_s=HISTORY_WAIT_S)

            try:
                for frame in runtime_frames(camera, stream, warn):
                    summary.frames += 1
                    if depth is not None:
                        depth.feed_until(frame.stamp_ns)
                    clip = runtime.push("", frame)
                    if clip is not None:
                        done = runtime.step()
                        results = done[0][1] if done else []
                        summary.windows += 1
                        store(clip)
                        emit(results)
                        for r in results:
                            _tally(summary.per_query[r.query.id], r)
                        if results:
                            writer.write_frame(clip.frames[-1].frame, results)
                        summary.results += len(results)
                        summary.inference_s += max((r.inference_s for r in results), default=0.0)
                        if gif and len(gif_frames) < GIF_MAX_FRAMES:
                            gif_frames.append(_gif_frame(clip.frames[-1].frame.image, results))
                    bar.update(summary.frames, f"windows {summary.windows}")
                    if stop.requested:
                        break
            except KeyboardInterrupt:  # a second Ctrl-C: the window in progress is lost
                stop.requested = True
            summary.interrupted = stop.requested
            # the bag is over (or the replay stops): end open tracks and events, their last report is final
            emit(runtime.finish()[""])
            store(stream.clip_between(0, 0)[0])  # the frames kept after the last clip
    except KeyboardInterrupt:  # Ctrl-C again while the closing reports are written
        summary.interrupted = True
    except Exception as error:
        summary.error = str(error) if isinstance(error, BagError) else f"{type(error).__name__}: {error}"
        raise
    finally:
        camera.close()
        writer.close()
        if history is not None:
            history.flush(HISTORY_WAIT_S)
            summary.history = str(history.config.path)
        if depth is not None:
            depth.close()
        bar.update(summary.frames, f"windows {summary.windows}", force=True)
        bar.close()
        bar_active = False
        summary.output_messages = writer.messages
        counters = stream.counter_snapshot()
        summary.counters = {k: int(v) for k, v in sorted(counters.items())}
        summary.frames_dropped = {k: n for k, n in summary.counters.items()
                                  if k.startswith(("bad_", "buffer_dropped_"))}
        summary.frames += sum(n for k, n in counters.items() if k.startswith("bad_"))  # never reached the runtime
        zero = counters.get("buffer_dropped_zero_stamp", 0)
        if zero:
            warn(f"{zero} of {summary.frames} frames on {camera.topic} have a zero header stamp and were dropped (the "
                 f"node drops them too){': no window was processed' if zero == summary.frames else ''}; the camera "
                 f"driver must stamp its images (header.stamp), re-record the bag with stamped images")
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
