"""One camera stream: its clip buffer, standing queries, and the state that turns answers into grounded results
(persistent track ids, events). The runtime owns the engine and decides when a stream's clips run.

Threads: `accepts`/`push` from the stream's camera thread; `ground_inference` from the runtime's worker; query
changes and on-demand clips from service/action threads. The buffer and the query/grounding state each have
their own lock.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field, replace

from .clip_buffer import BufferConfig, ClipBuffer
from .counters import Counters
from .depth import DepthConfig, DepthLifter
from .events import EventMerger
from .grounding import ground_points
from .parsing import parse_answer
from .prompts import MAX_QUERY_CHARS
from .queries import validate_query
from .sampling import SlowFastConfig
from .tracks import TrackAssociator
from .types import Clip, Frame, Inference, Query, QueryResult, TaskKind

@dataclass(frozen=True)
class GroundingConfig:
    """max_points: points kept per answer; track_gate_frac: association gate as a fraction of the image
    diagonal; lost_timeout_s: a track unseen this long ends; event_max_gap_s: moments this close form one event;
    max_trajectory_points: newest points kept per track."""

    max_points: int = 256
    track_gate_frac: float = 0.05
    lost_timeout_s: float = 2.0
    event_max_gap_s: float = 1.0
    max_trajectory_points: int = 256


@dataclass(frozen=True)
class StreamConfig:
    """Everything that shapes one stream: sampling (buffer, SlowFast), grounding, generation limits and 3D lifting
    (`depth`). `grounding` and `max_new_tokens` may change while running (`Stream.set_config`); the rest is fixed."""

    buffer: BufferConfig = field(default_factory=BufferConfig)
    slowfast: SlowFastConfig = field(default_factory=SlowFastConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    max_new_tokens: int | None = None
    max_query_chars: int = MAX_QUERY_CHARS
    depth: DepthConfig = field(default_factory=DepthConfig)


class Stream:
    """Standing queries over the sliding window of one camera."""

    def __init__(self, name: str, queries: list[Query], config: StreamConfig = StreamConfig()) -> None:
        self.name = name
        self.config = config
        self.buffer = ClipBuffer(config.buffer, config.slowfast, stream=name)
        self.counters = Counters()
        self.depth = DepthLifter(config.depth, self.counters) if config.depth.enabled else None
        self._buffer_lock = threading.Lock()
        self._lock = threading.Lock()
        self._queries: dict[str, Query] = {}
        self._trackers: dict[str, TrackAssociator] = {}
        self._events: dict[str, EventMerger] = {}
        self._epoch = 0
        self._last_clip: Clip | None = None
        for query in queries:
            self.add_query(query)

    # ---- configuration and standing queries --------------------------------------------------------------
    def set_config(self, grounding: GroundingConfig, max_new_tokens: int | None) -> None:
        """Apply grounding and generation settings from the next window on (running tracks keep their ids)."""
        with self._lock:
            self.config = replace(self.config, grounding=grounding, max_new_tokens=max_new_tokens)
            for tracker in self._trackers.values():
                tracker.gate_frac = grounding.track_gate_frac
                tracker.lost_timeout_ns = int(grounding.lost_timeout_s * 1e9)
                tracker.max_trajectory_points = grounding.max_trajectory_points
            for merger in self._events.values():
                merger.max_gap_ns = int(grounding.event_max_gap_s * 1e9)

    @property
    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries.values())

    def add_query(self, query: Query) -> Query:
        query = validate_query(query, self.config.max_query_chars)
        with self._lock:
            if query.id in self._queries:
                raise ValueError(f"query id '{query.id}' already exists")
            self._queries[query.id] = query
            g = self.config.grounding
            if query.task == TaskKind.TRACK:
                self._trackers[query.id] = self._new_tracker(query.id, g)
            if query.task == TaskKind.EVENT:
                self._events[query.id] = EventMerger(query, max_gap_s=g.event_max_gap_s)
        return query

    def remove_query(self, query_id: str) -> None:
        with self._lock:
            if query_id not in self._queries:
                raise ValueError(f"no query with id '{query_id}'")
            del self._queries[query_id]
            self._trackers.pop(query_id, None)
            self._events.pop(query_id, None)
            if self.depth is not None:
                self.depth.forget(query_id)

    @staticmethod
    def _new_tracker(track_prefix: str, g: GroundingConfig) -> TrackAssociator:
        return TrackAssociator(track_prefix, gate_frac=g.track_gate_frac, lost_timeout_s=g.lost_timeout_s,
                               max_trajectory_points=g.max_trajectory_points)

    # ---- frames ------------------------------------------------------------------------------------------
    def accepts(self, stamp_ns: int) -> str:
        """What the buffer would do with a frame of this stamp ("keep", "decimate", or a drop/reset reason), so
        that callers decode only the frames it keeps."""
        with self._buffer_lock:
            return self.buffer.accepts(stamp_ns)

    def push(self, frame: Frame) -> Clip | None:
        """Buffer a frame; returns a clip when one is due. A kept frame gets a depth slot (depth enabled)."""
        with self._buffer_lock:
            kept = self.buffer.counters["kept"]
            clip = self.buffer.push(frame)
            if self.depth is not None and self.buffer.counters["kept"] > kept:
                self.depth.store.add_colour(frame)
            return clip

    def wants_depth(self, stamp_ns: int) -> bool:
        """Whether a depth frame of this stamp can match a kept colour frame (decode it only then)."""
        store = self.depth.store
        with self._buffer_lock:
            verdict = self.buffer.accepts(stamp_ns + store.max_dt_ns)
        return store.wants(stamp_ns, verdict)

    def reset_buffer(self, reason: str) -> None:
        with self._buffer_lock:
            if self.buffer.buffered_frames:
                self.buffer.reset(reason)

    def clip_between(self, start_ns: int, end_ns: int) -> tuple[Clip | None, tuple[int, int] | None]:
        """(clip of the buffered frames in [start_ns, end_ns], or of the whole window when both are 0; the span
        of buffered stamps), for on-demand queries."""
        with self._buffer_lock:
            span = self.buffer.buffered_span_ns
            if start_ns == 0 and end_ns == 0:
                return self.buffer.latest_clip(), span
            return self.buffer.clip_between(start_ns, end_ns), span

    def counter_snapshot(self) -> dict[str, int]:
        """This stream's counters, the buffer's prefixed with `buffer_`."""
        with self._buffer_lock:
            buffer = {f"buffer_{k}": v for k, v in self.buffer.counters.items()}
        return {**self.counters.snapshot(), **buffer}

    # ---- grounding ---------------------------------------------------------------------------------------
    def ground_inference(self, inference: Inference, model_id: str) -> list[QueryResult]:
        """Ground every answer of a standing-query inference; tracks and events persist across windows.
        Answers of queries removed while the inference ran are dropped."""
        clip = inference.clip
        with self._lock:
            if clip.epoch != self._epoch:
                self._epoch = clip.epoch
                for state in (*self._trackers.values(), *self._events.values()):
                    state.reset()
                if self.depth is not None:
                    self.depth.reset()
        self._last_clip = clip
        results = []
        for g in inference.generations:
            if g.query.id in self._queries:
                results.append(self.ground(inference, g.query, g.text, g.inference_s, model_id, stateful=True,
                                           confidence=g.confidence, lift=False))
        if self.depth is not None:
            self.depth.store.wait_for(clip.end_ns, self.config.depth.wait_s)  # the newest frame's depth may trail
            with self._lock:
                self.depth.lift(results, stateful=True)  # all answers of the clip at once: one look-up per point
        return results

    def finish(self, model_id: str) -> list[QueryResult]:
        """End the stream: every open track and event ends now. Returns one closing result (QueryResult.closing)
        per track or event query that had any open, stamped with the last processed clip, so that the last
        report of every track and event is final (ENDED)."""
        clip = self._last_clip
        with self._lock:
            stateful = [(self._queries[qid], s) for qid, s in (*self._trackers.items(), *self._events.items())]
        results = []
        for query, state in stateful:
            ended = state.finish()
            if not ended or clip is None:
                continue
            results.append(QueryResult(
                query=query, clip_index=clip.index, clip_start_ns=clip.start_ns, clip_end_ns=clip.end_ns,
                frame_id=clip.frame_id, width=clip.width, height=clip.height, num_frames=0, num_visual_tokens=0,
                text="", model_id=model_id, inference_s=0.0, closing=True,
                tracks=ended if query.task == TaskKind.TRACK else [],
                events=ended if query.task == TaskKind.EVENT else []))
        if self.depth is not None:  # the 3D side ends too (the lifter keeps the 3D of points it lifted before)
            with self._lock:
                self.depth.lift(results, stateful=True)
        return results

    def ground(self, inference: Inference, query: Query, text: str, inference_s: float, model_id: str,
               stateful: bool, confidence: float = math.nan, lift: bool = True) -> QueryResult:
        """Parse and ground one answer; track and event state is updated only when `stateful` (standing queries),
        otherwise the answer gets its own (on-demand queries). `lift`: add its 3D (depth enabled)."""
        clip = inference.clip
        with self._lock:
            g = self.config.grounding
            parsed = parse_answer(text, max_points=g.max_points)
            # the model's object numbers are kept only to associate tracks (GroundedPoint.object_id)
            points, drops = ground_points(parsed, clip, model_ids=query.task == TaskKind.TRACK)
            dropped = Counter(parsed.dropped) + drops
            result = QueryResult(
                query=query, clip_index=clip.index, clip_start_ns=clip.start_ns, clip_end_ns=clip.end_ns,
                frame_id=clip.frame_id, width=clip.width, height=clip.height, num_frames=len(clip.frames),
                num_visual_tokens=clip.num_visual_tokens, text=text, model_id=model_id,
                inference_s=inference_s, dropped=dict(dropped), frame_stamps_ns=clip.stamps_ns,
                confidence=confidence)
            if query.task in (TaskKind.POINT, TaskKind.COUNT):
                result.points = points
            if query.task == TaskKind.COUNT:
                result.count = parsed.count if parsed.count is not None else (
                    0 if parsed.kind == "none" else len(points))
            if query.task == TaskKind.TRACK:
                by_object: dict[int, list] = {}
                for p in points:
                    if p.object_id.isdigit():
                        by_object.setdefault(int(p.object_id), []).append(p)
                tracker = self._trackers.get(query.id) if stateful else None
                if tracker is None:
                    tracker = self._new_tracker(query.id, g)
                result.tracks = tracker.update(clip, by_object)
            if query.task == TaskKind.EVENT:
                merger = self._events.get(query.id) if stateful else None
                if merger is None:
                    merger = EventMerger(query, max_gap_s=g.event_max_gap_s)
                result.events = merger.update(clip, points)
                result.points = points
            if self.depth is not None and lift:
                self.depth.lift([result], stateful)
        for reason, n in dropped.items():
            self.counters.add(f"dropped_{reason}", n)
        return result
