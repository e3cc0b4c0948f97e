"""The whole ROS-free pipeline: frames -> clip buffer -> engine -> parser -> grounding -> results.

The live node and the offline replay tool both drive this class; only how clips are scheduled differs
(the node may skip windows when inference is slower than the stride, replay never does).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from .clip_buffer import BufferConfig, ClipBuffer
from .events import EventMerger
from .grounding import ground_points
from .parsing import parse_answer
from .prompts import MAX_QUERY_CHARS, sanitize_text
from .sampling import SlowFastConfig
from .tracks import TrackAssociator
from .types import Clip, Frame, Inference, Query, QueryResult, TaskKind

QUERY_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class Engine(Protocol):
    """What the pipeline needs from an engine (Molmo2Engine, or the oracle evaluation instrument)."""

    model_id: str

    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None) -> Inference: ...


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
class PipelineConfig:
    buffer: BufferConfig = field(default_factory=BufferConfig)
    slowfast: SlowFastConfig = field(default_factory=SlowFastConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    max_new_tokens: int | None = None
    max_query_chars: int = MAX_QUERY_CHARS


def validate_query(query: Query, max_chars: int = MAX_QUERY_CHARS) -> Query:
    """A clean copy of `query`, or ValueError saying what is wrong with it."""
    if not query.id or not set(query.id) <= QUERY_ID_CHARS or len(query.id) > 64:
        raise ValueError(f"query id '{query.id}' must be 1-64 letters, digits or '_'")
    task = TaskKind(query.task)
    text = sanitize_text(query.text, max_chars)
    if task not in (TaskKind.CAPTION,) and not text:
        raise ValueError(f"query '{query.id}': a {task.value} query needs a text")
    return Query(id=query.id, task=task, text=text, topic=query.topic)


class Pipeline:
    """Standing queries over a sliding window of frames. `push` from one thread; `process` may run on another
    (query changes are guarded by a lock)."""

    def __init__(self, engine: Engine, queries: list[Query], config: PipelineConfig = PipelineConfig()) -> None:
        self.engine = engine
        self.config = config
        self.buffer = ClipBuffer(config.buffer, config.slowfast)
        self.counters: Counter = Counter()
        self._lock = threading.Lock()
        self._queries: dict[str, Query] = {}
        self._trackers: dict[str, TrackAssociator] = {}
        self._events: dict[str, EventMerger] = {}
        self._epoch = 0
        self._last_clip: Clip | None = None
        self.last_error = ""
        for query in queries:
            self.add_query(query)

    # ---- standing queries --------------------------------------------------------------------------------
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
                self._trackers[query.id] = TrackAssociator(
                    query.id, gate_frac=g.track_gate_frac, lost_timeout_s=g.lost_timeout_s,
                    max_trajectory_points=g.max_trajectory_points)
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

    # ---- stream ------------------------------------------------------------------------------------------
    def push(self, frame: Frame) -> Clip | None:
        """Buffer a frame; returns a clip when one is due."""
        return self.buffer.push(frame)

    def process(self, clip: Clip) -> list[QueryResult]:
        """Run every standing query on the clip and ground the answers (tracks and events persist)."""
        queries = self.queries
        if not queries:
            return []
        if clip.epoch != self._epoch:
            self._epoch = clip.epoch
            for state in (*self._trackers.values(), *self._events.values()):
                state.reset()
        inference = self.engine.infer(clip, queries, self.config.max_new_tokens)
        if inference.error:
            self.counters["inference_errors"] += 1
            self.last_error = inference.error
            return []
        self.counters["windows_processed"] += 1
        self.counters["oom_retries"] += inference.oom_retries
        self._last_clip = inference.clip
        return [self.ground(inference, g.query, g.text, g.inference_s, stateful=True, confidence=g.confidence)
                for g in inference.generations]

    def answer(self, clip: Clip, query: Query, max_new_tokens: int | None = None) -> QueryResult | str:
        """On-demand query on any clip; its tracks and events are local to this answer. Returns the result or
        an error message."""
        query = validate_query(query, self.config.max_query_chars)
        inference = self.engine.infer(clip, [query], max_new_tokens or self.config.max_new_tokens)
        if inference.error:
            return inference.error
        g = inference.generations[0]
        return self.ground(inference, query, g.text, g.inference_s, stateful=False, confidence=g.confidence)

    def finish(self) -> list[QueryResult]:
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
                text="", model_id=self.engine.model_id, inference_s=0.0, closing=True,
                tracks=ended if query.task == TaskKind.TRACK else [],
                events=ended if query.task == TaskKind.EVENT else []))
        return results

    def ground(self, inference: Inference, query: Query, text: str, inference_s: float,
               stateful: bool, confidence: float = math.nan) -> QueryResult:
        """Parse and ground one answer; track and event state is updated only when `stateful`."""
        clip = inference.clip
        parsed = parse_answer(text, max_points=self.config.grounding.max_points)
        # the model's object numbers are kept only to associate tracks (GroundedPoint.object_id)
        points, drops = ground_points(parsed, clip, model_ids=query.task == TaskKind.TRACK)
        dropped = Counter(parsed.dropped) + drops
        result = QueryResult(
            query=query, clip_index=clip.index, clip_start_ns=clip.start_ns, clip_end_ns=clip.end_ns,
            frame_id=clip.frame_id, width=clip.width, height=clip.height, num_frames=len(clip.frames),
            num_visual_tokens=clip.num_visual_tokens, text=text, model_id=self.engine.model_id,
            inference_s=inference_s, dropped=dict(dropped), frame_stamps_ns=clip.stamps_ns, confidence=confidence)
        g = self.config.grounding
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
                tracker = TrackAssociator(f"{query.id}", gate_frac=g.track_gate_frac,
                                          lost_timeout_s=g.lost_timeout_s)
            result.tracks = tracker.update(clip, by_object)
        if query.task == TaskKind.EVENT:
            merger = self._events.get(query.id) if stateful else None
            if merger is None:
                merger = EventMerger(query, max_gap_s=g.event_max_gap_s)
            result.events = merger.update(clip, points)
            result.points = points
        for reason, n in dropped.items():
            self.counters[f"dropped_{reason}"] += n
        return result
