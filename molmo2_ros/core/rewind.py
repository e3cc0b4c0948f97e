"""Rewind: a new question about a time range of one camera's stored history, answered by the model on clips of the
stored frames and merged into one result with source-frame stamps.

Planning (`plan_dense`, `plan_sparse`): the range's stored frames (oldest first) are cut into clips (`clip_frames`):
for grounded tasks (point, count, track, event) as long as the live window (at most the model's frame limit
`max_frames`), because their answers grow with the frames (~10 tokens per point) and max_new_tokens and max_points
are set for a window: a 128-frame clip of a pointing question overran the 256-point cap on the synthetic world
(recall 0.87 instead of 1.0 with the oracle); for caption and question, whose answers do not grow with the frames,
the model's frame limit (more context per answer). Each frame keeps the SlowFast role of its stored `sample_index`
and the clip its stored `epoch` and the camera's stream name, so the engine's feature cache key (stream, epoch,
stamp, pooling) finds the features the live standing queries computed: exact reuse, same tokens.

Overlap: consecutive dense clips share `overlap` frames, the live window's frame count capped at half a clip.
An interval of k consecutive frames then lies whole in at least one clip when k <= overlap + 1 (a clip starts
every clip - overlap frames), so anything the standing queries could see in one window, an event crossing a
clip border included, is seen whole by at least one rewind clip; the cost over unshared clips is at most
clip / (clip - overlap), 2x at the cap. The shared frames also give the track association of the grounding
stream shared stamps, so track ids persist across clips.

Scans: "dense" runs every clip. "sparse" first runs non-overlapping clips of every other stored frame (half the
frames, a clip spans twice the time), then dense clips only where a sparse clip found something (points, a
non-zero count, tracks or events); caption and question tasks have nothing to find, so sparse answers them from
the first pass alone. The first pass's features are cached under the same keys, so the dense pass reuses them
while the cache holds them.

Merging: every answer is grounded, in time order, through one fresh `Stream` with the camera's stream
configuration (stateful grounding: persistent track ids, each event once with its whole span), then:
- points: every point once per source stamp: where two overlapping clips both point on a stamp, the later clip's
  points win (the track association and event evidence keep the later clip's point of a stamp too, so the
  three agree);
- tracks: merged by id (the union of every report's trajectory, later reports winning per stamp);
- events: the last report of each id (start/end are source stamps);
- count: the largest count of one clip (`clips` keeps each clip's own count and span);
- text: one clip's text, or each clip's text after its span in seconds from `origin_ns`.
Stored frames that cannot be read (`load` -> None) are skipped and counted (`frames_skipped`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from .depth import DepthConfig
from .engine_interface import Engine, InferRequest, StopFlag
from .sampling import plan_clip
from .stream import Stream, StreamConfig
from .types import NS_PER_S, Clip, Frame, Inference, Query, QueryResult, TaskKind, Track

SCANS = ("dense", "sparse")


class StoredFrameLike(Protocol):
    """What planning reads of a stored frame (core/history.StoredFrame)."""

    stamp_ns: int
    epoch: int
    sample_index: int


class FrameSource(Protocol):
    """A camera history (core/history.HistoryStore): stored frames of a range, oldest first, and their pixels
    (None: missing or corrupt)."""

    def frames(self, camera: str, start_ns: int, end_ns: int) -> list: ...

    def load(self, stored) -> Frame | None: ...

    def span(self, camera: str) -> tuple[int, int] | None: ...


def clip_frames(config: StreamConfig, task: TaskKind) -> int:
    """Frames per rewind clip: the live window's for grounded tasks, the model's frame limit for caption and
    question (see the module docstring)."""
    if task in (TaskKind.CAPTION, TaskKind.QUESTION):
        return config.buffer.max_frames
    return max(1, min(config.buffer.frames_per_window, config.buffer.max_frames))


def default_overlap(config: StreamConfig, clip: int | None = None) -> int:
    """Frames shared by consecutive dense clips of `clip` frames (default max_frames): the live window's frame
    count, at most half a clip."""
    clip = config.buffer.max_frames if clip is None else clip
    return max(0, min(config.buffer.frames_per_window, clip // 2))


def _runs_by_epoch(stored: list) -> list[list]:
    runs: list[list] = []
    for s in stored:
        if runs and runs[-1][-1].epoch == s.epoch:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def plan_dense(stored: list, max_frames: int, overlap: int) -> list[list]:
    """Clips (lists of stored frames, oldest first) of at most `max_frames` frames, consecutive clips sharing
    `overlap` frames; a clip never crosses an epoch change (a reset of the live buffer: a time jump or a new image
    size). The last clip of a run is filled back to `max_frames` frames where the run is long enough."""
    if max_frames < 1 or not 0 <= overlap < max_frames:
        raise ValueError(f"need max_frames >= 1 and 0 <= overlap < max_frames, got {max_frames}, {overlap}")
    step = max_frames - overlap
    plans = []
    for run in _runs_by_epoch(stored):
        if len(run) <= max_frames:
            plans.append(run)
            continue
        starts = list(range(0, len(run) - max_frames, step)) + [len(run) - max_frames]
        plans += [run[a:a + max_frames] for a in starts]
    return plans


def plan_sparse(stored: list, max_frames: int) -> list[list]:
    """Non-overlapping clips of every other stored frame (per epoch run), at most `max_frames` frames each."""
    plans = []
    for run in _runs_by_epoch(stored):
        thinned = run[::2]
        plans += [thinned[a:a + max_frames] for a in range(0, len(thinned), max_frames)]
    return plans


@dataclass
class RewindResult:
    """A range question's answer.

    result: the merged QueryResult (clip_index -1; clip_start/end_ns: first/last stamp the model saw;
    frame_stamps_ns: every stamp the model saw, both passes of a sparse scan; points, tracks, events, count and text
    merged as the module says). clips: each answered clip's own result (its points and count over its own
    frames), in time order, of the pass that the merge is made of (a sparse scan: the dense clips, and the first
    pass's clips that found nothing). closing: the reports that ended the open tracks and events at the range's
    end (already folded into `result`). clips_scanned: clips run by the model (both passes); frames_scanned:
    distinct stored frames the model saw; frames_skipped: stored frames that could not be read; frames_encoded:
    frames the engine's vision encoder ran on (the rest came from its feature cache; 0 for engines that do not
    report it); engine_calls: engine calls made (a batch of clips is one call); clips_failed / error: clips whose
    inference failed and the last error; stopped: the scan ended early (stop flag): the rest is partial."""

    result: QueryResult
    scan: str
    clips: list[QueryResult] = field(default_factory=list)
    closing: list[QueryResult] = field(default_factory=list)
    clips_scanned: int = 0
    frames_scanned: int = 0
    frames_skipped: int = 0
    frames_encoded: int = 0
    engine_calls: int = 0
    clips_failed: int = 0
    error: str = ""
    wall_s: float = 0.0
    stopped: bool = False


@dataclass
class _Pass:
    """Everything one scan pass produced."""

    results: list[QueryResult] = field(default_factory=list)
    stamps: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)
    encoded: int = 0
    calls: int = 0
    clips: int = 0
    failed: int = 0
    error: str = ""
    stopped: bool = False


class _Loader:
    """Loads stored frames, keeping the previous batch's frames (the overlap) so a frame is read once."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self._kept: dict[int, Frame | None] = {}
        self.skipped: set[int] = set()

    def batch(self, plans: list[list]) -> list[list[tuple[int, Frame]]]:
        loaded: dict[int, Frame | None] = {}
        out = []
        for plan in plans:
            frames = []
            for s in plan:
                if s.stamp_ns not in loaded:
                    loaded[s.stamp_ns] = self._kept[s.stamp_ns] if s.stamp_ns in self._kept else self.source.load(s)
                frame = loaded[s.stamp_ns]
                if frame is None:
                    self.skipped.add(s.stamp_ns)
                else:
                    frames.append((s.sample_index, frame))
            out.append(frames)
        self._kept = loaded
        return out


def _same_size_runs(frames: list[tuple[int, Frame]]) -> list[list[tuple[int, Frame]]]:
    """A clip's frames split where the stored image size changes (the engine stacks the frames of a clip)."""
    runs: list[list[tuple[int, Frame]]] = []
    for item in frames:
        shape = item[1].image.shape
        if runs and runs[-1][-1][1].image.shape == shape:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _found(r: QueryResult) -> bool:
    return bool(r.points or r.tracks or r.events or r.count)


class _Scanner:
    """Runs clip plans through the engine in batches and grounds the answers in time order."""

    def __init__(self, engine: Engine, source: FrameSource, camera: str, query: Query, config: StreamConfig, *,
                 max_new_tokens: int | None, batch: int, stop: StopFlag | None,
                 between: Callable[[], None] | None, progress: Callable[[int, int], None] | None,
                 model_id: str) -> None:
        self.engine, self.camera, self.query, self.config = engine, camera, query, config
        self.max_new_tokens = max_new_tokens or config.max_new_tokens
        self.batch = max(1, batch) if engine.capabilities.batch_clips else 1
        self.stop, self.between, self.progress = stop, between, progress
        self.model_id = model_id
        self.loader = _Loader(source)
        self.next_index = 0
        self.done = 0
        self.planned = 0

    def grounder(self) -> Stream:
        """A fresh stream for one pass (same configuration as the live camera, no depth lifting)."""
        return Stream(self.camera, [self.query], replace(self.config, depth=DepthConfig(enabled=False)))

    def clips(self, frames: list[tuple[int, Frame]], epoch: int) -> list[Clip]:
        """The clips of one plan's loaded frames: (sample index, frame) pairs keep their stored SlowFast role."""
        out = []
        for run in _same_size_runs(frames):
            out.append(plan_clip(run, self.next_index, len(run), self.config.slowfast, epoch=epoch,
                                 stream=self.camera))
            self.next_index += 1
        return out

    def run(self, plans: list[list], grounder: Stream) -> _Pass:
        out = _Pass()
        for a in range(0, len(plans), self.batch):
            if self.stop is not None and self.stop.is_set():
                out.stopped = True
                break
            if a and self.between is not None:
                self.between()  # e.g. the worker serves live windows due meanwhile
            chunk = plans[a:a + self.batch]
            clips = []
            for plan, frames in zip(chunk, self.loader.batch(chunk)):
                clips += self.clips(frames, plan[0].epoch)
            inferences = self._infer(clips) if clips else []
            out.calls += bool(clips)
            for inference in inferences:
                if inference.stopped:
                    out.stopped = True
                    break
                out.clips += 1
                out.encoded += inference.vision_frames_encoded
                out.stamps.update(inference.clip.stamps_ns)
                if inference.error:
                    out.failed += 1
                    out.error = inference.error
                    continue
                out.results += grounder.ground_inference(inference, self.model_id)
            self.done += len(chunk)
            if self.progress is not None:
                self.progress(self.done, self.planned)
            if out.stopped:
                break
        out.skipped = set(self.loader.skipped)
        return out

    def _infer(self, clips: list[Clip]) -> list[Inference]:
        if len(clips) > 1:
            return self.engine.infer_batch([InferRequest(c, (self.query,), self.max_new_tokens) for c in clips],
                                           self.stop)
        return [self.engine.infer(clips[0], [self.query], self.max_new_tokens, self.stop)]


def span_text(span: tuple[int, int] | None) -> str:
    """What a frame buffer or history holds, for error messages: "[first, last] s" or "no frames"."""
    return f"[{span[0] / NS_PER_S:.3f}, {span[1] / NS_PER_S:.3f}] s" if span else "no frames"


def stored_range(source: FrameSource, camera: str, start_ns: int, end_ns: int, scan: str = "dense") -> list:
    """The stored frames of `camera` in [start_ns, end_ns], oldest first; ValueError for an unknown scan or a range
    without stored frames (saying what the history holds)."""
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {', '.join(SCANS)}, got '{scan}'")
    stored = source.frames(camera, start_ns, end_ns)
    if not stored:
        raise ValueError(f"no stored frames of camera '{camera}' in the requested range (the history holds "
                         f"{span_text(source.span(camera))})")
    return stored


def rewind(engine: Engine, source: FrameSource, camera: str, query: Query, start_ns: int, end_ns: int,
           config: StreamConfig, *, scan: str = "dense", max_new_tokens: int | None = None,
           overlap: int | None = None, batch: int = 4, stop: StopFlag | None = None,
           between: Callable[[], None] | None = None, progress: Callable[[int, int], None] | None = None,
           origin_ns: int | None = None) -> RewindResult:
    """Answer `query` over the stored frames of `camera` with start_ns <= stamp <= end_ns (ns, source time).

    config: the camera's stream configuration (window and frame limit -> frames per clip, `clip_frames`; SlowFast
    plan, grounding, max_new_tokens); overlap: frames shared by dense clips (default `default_overlap`); batch:
    clips per engine call when the engine batches clips (`capabilities.batch_clips`); stop: ends the scan between
    batches and, with engines that can, within one decode step; between: called between batches (the runtime's
    worker serves the live windows due meanwhile); progress(done, planned): clips planned done so far; origin_ns:
    where the time spans of a joined text count from (default: the range start). ValueError: no stored frame in the
    range, or an unknown scan."""
    started = time.perf_counter()
    stored = stored_range(source, camera, start_ns, end_ns, scan)
    clip = clip_frames(config, query.task)
    overlap = default_overlap(config, clip) if overlap is None else min(overlap, clip - 1)
    scanner = _Scanner(engine, source, camera, query, config, max_new_tokens=max_new_tokens, batch=batch, stop=stop,
                       between=between, progress=progress, model_id=engine.model_id)
    dense = plan_dense(stored, clip, overlap)
    passes: list[_Pass] = []
    leftovers: list[QueryResult] = []
    grounder = scanner.grounder()
    if scan == "sparse":
        first = plan_sparse(stored, clip)
        scanner.planned = len(first) + len(dense)
        probe = scanner.run(first, scanner.grounder())
        passes.append(probe)
        if query.task in (TaskKind.CAPTION, TaskKind.QUESTION):
            grounder, dense, leftovers = None, [], probe.results
        else:
            hits = [(r.clip_start_ns, r.clip_end_ns) for r in probe.results if _found(r)]
            leftovers = [r for r in probe.results if not _found(r)]
            dense = [p for p in dense if any(p[0].stamp_ns <= b and p[-1].stamp_ns >= a for a, b in hits)]
            scanner.planned = len(first) + len(dense)
    else:
        scanner.planned = len(dense)
    main = _Pass()
    if dense and not (passes and passes[0].stopped):
        main = scanner.run(dense, grounder)
        passes.append(main)
    closing = grounder.finish(engine.model_id) if grounder is not None else []
    clips = sorted([*leftovers, *main.results], key=lambda r: (r.clip_start_ns, r.clip_end_ns))
    merged = merge(query, clips, closing, sorted(set().union(*(p.stamps for p in passes))),
                   engine.model_id, start_ns if origin_ns is None else origin_ns)
    return RewindResult(
        result=merged, scan=scan, clips=clips, closing=closing, clips_scanned=sum(p.clips for p in passes),
        frames_scanned=len(set().union(*(p.stamps for p in passes))),
        frames_skipped=len(scanner.loader.skipped), frames_encoded=sum(p.encoded for p in passes),
        engine_calls=sum(p.calls for p in passes), clips_failed=sum(p.failed for p in passes),
        error=next((p.error for p in reversed(passes) if p.error), ""), wall_s=time.perf_counter() - started,
        stopped=any(p.stopped for p in passes))


def merge(query: Query, clips: list[QueryResult], closing: list[QueryResult], stamps: list[int], model_id: str,
          origin_ns: int) -> QueryResult:
    """One result of the per-clip results (time order) and the closing reports; see the module docstring."""
    points: dict[int, list] = {}
    for r in clips:  # later clips win a stamp: they replace its points
        by_stamp: dict[int, list] = {}
        for p in r.points:
            by_stamp.setdefault(p.stamp_ns, []).append(p)
        points.update(by_stamp)
    tracks: dict[str, Track] = {}
    trajectories: dict[str, dict[int, object]] = {}
    events = {}
    for r in (*clips, *closing):
        for t in r.tracks:
            trajectories.setdefault(t.id, {}).update((p.stamp_ns, p) for p in t.trajectory)
            tracks[t.id] = t
        for e in r.events:
            events[e.id] = e
    merged_tracks = []
    for tid, t in tracks.items():
        trajectory = [trajectories[tid][s] for s in sorted(trajectories[tid])]
        merged_tracks.append(replace(t, trajectory=trajectory, first_ns=trajectory[0].stamp_ns if trajectory else
                                     t.first_ns, last_ns=trajectory[-1].stamp_ns if trajectory else t.last_ns))
    answered = [r for r in clips if r.text]
    if len(answered) == 1:
        text = answered[0].text
    else:
        text = "\n".join(f"[{(r.clip_start_ns - origin_ns) / NS_PER_S:.1f}-{(r.clip_end_ns - origin_ns) / NS_PER_S:.1f}"
                         f" s] {r.text}" for r in answered)
    counts = [r.count for r in clips if r.count is not None]
    confidences = [r.confidence for r in clips if not math.isnan(r.confidence)]
    dropped: Counter = Counter()
    for r in clips:
        dropped.update(r.dropped)
    first = clips[0] if clips else None
    return QueryResult(
        query=query, clip_index=-1, clip_start_ns=stamps[0] if stamps else 0, clip_end_ns=stamps[-1] if stamps else 0,
        frame_id=first.frame_id if first else "", width=first.width if first else 0,
        height=first.height if first else 0, num_frames=len(stamps),
        num_visual_tokens=sum(r.num_visual_tokens for r in clips), text=text, model_id=model_id,
        inference_s=sum(r.inference_s for r in clips),
        points=[p for s in sorted(points) for p in points[s]],
        count=max(counts) if counts else None,
        tracks=sorted(merged_tracks, key=lambda t: (t.first_ns, t.id)),
        events=sorted(events.values(), key=lambda e: (e.start_ns, e.id)),
        dropped=dict(dropped), frame_stamps_ns=list(stamps),
        confidence=sum(confidences) / len(confidences) if confidences else math.nan)
