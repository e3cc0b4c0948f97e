"""The runtime: one engine serving one or more camera streams under an explicit scheduling policy.

The live node and `molmo2-ros replay` both drive it:
- frames go in per stream (`accepts` first, so callers decode only the frames a stream keeps, then `push`);
- due clips wait in the policy (`schedule.py`: live or every_window);
- `step` runs the clips that are due together in ONE engine call (`Engine.infer_batch`; batched when the engine
  can, else one after another) and grounds each answer in its stream;
- on-demand queries (`submit`) run before the next windows: over the live buffer (`make_job`), or over a time
  range of the camera's stored history (`make_range_job`, core/rewind.py), whose clips run in batches with the
  windows that fall due meanwhile served between them;
- `start` runs `step` on a worker thread that the runtime owns; `stop` sets a flag that a running engine call
  checks between decode steps, so shutdown, deactivate and cancel take effect within one token.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .counters import Counters
from .engine_interface import AnyStop, Engine, InferRequest
from .queries import validate_query
from .rewind import FrameSource, RewindResult, rewind, span_text, stored_range
from .sampling import SlowFastConfig, plan_clip
from .schedule import SchedulePolicy
from .stream import Stream
from .types import Clip, Frame, Inference, Query, QueryResult, TaskKind

ResultsCallback = Callable[[Clip, list[QueryResult]], None]
ErrorCallback = Callable[[str], None]


@dataclass(frozen=True)
class RangeRequest:
    """A time range of a stream's stored history: [start_ns, end_ns] source stamps, read from `source`
    (core/history.HistoryStore), scanned "dense" or "sparse" (core/rewind.py)."""

    source: FrameSource
    start_ns: int
    end_ns: int
    scan: str = "dense"


@dataclass
class Job:
    """An on-demand query on a clip of one stream (`clip`), or on a range of its history (`range`, clip None).
    `cancel` stops it (within one token when the engine can); `stage` is queued -> encoding -> generating -> done;
    `progress`: (clips done, clips planned) of a range job; `result` is the QueryResult (a range job: the
    RewindResult) or an error message."""

    stream: str
    query: Query
    clip: Clip | None
    max_new_tokens: int | None = None
    stage: str = "queued"
    result: QueryResult | RewindResult | str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    range: RangeRequest | None = None
    progress: tuple[int, int] = (0, 0)

    def finish(self, result: QueryResult | str) -> None:
        self.result = result
        self.stage = "done"
        self.done.set()


class Runtime:
    """Streams, one engine, one policy. `batch_streams`: run the clips of streams due together in one engine call
    (off: one call per clip, for comparison)."""

    def __init__(self, engine: Engine, streams: list[Stream], policy: SchedulePolicy, *,
                 batch_streams: bool = True) -> None:
        if len({s.name for s in streams}) != len(streams):
            raise ValueError("stream names must be unique")
        self.engine = engine
        self.streams: dict[str, Stream] = {s.name: s for s in streams}
        self.batch_streams = batch_streams
        self.counters = Counters()
        self.last_error = ""
        self._policy = policy
        self._jobs: deque[Job] = deque()
        self._work = threading.Condition()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._on_results: ResultsCallback | None = None
        self._on_error: ErrorCallback | None = None

    # ---- intake (camera threads) -------------------------------------------------------------------------
    def stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            raise ValueError(f"unknown camera '{name}' (cameras: {', '.join(map(repr, self.streams))})")
        return stream

    def accepts(self, stream: str, stamp_ns: int) -> str:
        return self.streams[stream].accepts(stamp_ns)

    def push(self, stream: str, frame: Frame) -> Clip | None:
        """Buffer a frame of a stream; a clip that falls due is queued under the policy (and returned)."""
        clip = self.streams[stream].push(frame)
        if clip is not None:
            self.offer(clip)
        return clip

    def offer(self, clip: Clip) -> None:
        with self._work:
            given_up = self._policy.offer(clip)
            self._work.notify()
        for reason, clips in given_up.items():
            for c in clips:
                self.streams[c.stream].counters.add(reason)

    # ---- scheduling ----------------------------------------------------------------------------------------
    @property
    def policy(self) -> SchedulePolicy:
        return self._policy

    def set_policy(self, policy: SchedulePolicy) -> None:
        """Switch policy at run time; pending clips move over (the new policy may give some up, counted)."""
        with self._work:
            pending = sorted(self._policy.pending(), key=lambda c: c.end_ns)
            self._policy.clear()
            self._policy = policy
        for clip in pending:
            self.offer(clip)

    def pending(self) -> tuple[int, int]:
        """(pending clips, bytes of frames they pin)."""
        with self._work:
            return len(self._policy.pending()), self._policy.pending_bytes()

    def clear_pending(self, stream: str | None = None) -> None:
        with self._work:
            self._policy.clear(stream)

    # ---- processing ----------------------------------------------------------------------------------------
    def step(self) -> list[tuple[Clip, list[QueryResult]]]:
        """Run the clips due now (one per stream) and ground their answers: [(clip, results)], oldest first.
        Synchronous: replay calls it until nothing is pending; the worker thread calls it in a loop."""
        with self._work:
            clips = self._policy.take()
        return self.run(clips)

    def run(self, clips: list[Clip]) -> list[tuple[Clip, list[QueryResult]]]:
        """Run these clips' standing queries (one engine call when batching) and ground the answers."""
        requests = []
        for clip in clips:
            stream = self.streams[clip.stream]
            queries = stream.queries
            if queries:
                requests.append(InferRequest(clip, tuple(queries), stream.config.max_new_tokens))
        if not requests:
            return []
        if self.batch_streams and self.engine.capabilities.batch_clips:
            inferences = self.engine.infer_batch(requests, self._stop)
        else:
            inferences = [self.engine.infer(r.clip, list(r.queries), r.max_new_tokens, self._stop)
                          for r in requests]
        out = []
        for inference in inferences:
            results = self._ground(inference)
            if results is not None:
                out.append((inference.clip, results))
        return out

    def _ground(self, inference: Inference) -> list[QueryResult] | None:
        stream = self.streams[inference.clip.stream]
        if inference.stopped:
            stream.counters.add("windows_stopped")
            return None
        if inference.error:
            stream.counters.add("inference_errors")
            self.last_error = inference.error
            if self._on_error is not None:
                self._on_error(f"inference failed on camera '{stream.name}': {inference.error}")
            return None
        stream.counters.add("windows_processed")
        stream.counters.add("oom_retries", inference.oom_retries)
        return stream.ground_inference(inference, self.engine.model_id)

    def drain(self) -> list[tuple[Clip, list[QueryResult]]]:
        """Run `step` until nothing is pending (replay at the end of a bag)."""
        out = []
        while True:
            done = self.step()
            if not done and not self.pending()[0]:
                return out
            out.extend(done)

    def finish(self) -> dict[str, list[QueryResult]]:
        """End every stream (end of a replay, deactivation): open tracks and events end now; their closing results
        by stream name."""
        return {name: stream.finish(self.engine.model_id) for name, stream in self.streams.items()}

    # ---- on-demand queries -------------------------------------------------------------------------------
    def make_job(self, stream: str, query: Query, start_ns: int, end_ns: int,
                 max_new_tokens: int | None = None) -> Job:
        """A job over the buffered frames of `stream` in [start_ns, end_ns] (both 0: the current window);
        ValueError says what is wrong (unknown camera, bad query, no frames in the range)."""
        s = self.stream(stream)
        if end_ns < start_ns:
            raise ValueError("time range: end is before start")
        query = validate_query(query, s.config.max_query_chars)
        clip, span = s.clip_between(start_ns, end_ns)
        if clip is None:
            raise ValueError(f"no buffered frames of camera '{stream}' in the requested range "
                             f"(the buffer holds {span_text(span)})")
        return Job(stream, query, clip, max_new_tokens)

    def make_range_job(self, stream: str, query: Query, start_ns: int, end_ns: int, source: FrameSource,
                       scan: str = "dense", max_new_tokens: int | None = None) -> Job:
        """A job over the stored history of `stream` in [start_ns, end_ns] (source stamps, ns), read from `source`;
        its result is a RewindResult. ValueError says what is wrong (unknown camera, bad query or scan, no stored
        frame in the range)."""
        s = self.stream(stream)
        if end_ns < start_ns:
            raise ValueError("time range: end is before start")
        query = validate_query(query, s.config.max_query_chars)
        stored_range(source, stream, start_ns, end_ns, scan)
        return Job(stream, query, None, max_new_tokens, range=RangeRequest(source, start_ns, end_ns, scan))

    def buffer_covers(self, stream: str, start_ns: int, end_ns: int) -> bool:
        """Whether the live buffer of `stream` holds [start_ns, end_ns] (then `make_job` answers it from there)."""
        span = self.stream(stream).clip_between(0, 0)[1]
        return span is not None and span[0] <= start_ns and end_ns <= span[1]

    def submit(self, job: Job) -> None:
        """Queue an on-demand job for the worker (runs before pending windows)."""
        with self._work:
            if self._stop.is_set():
                job.finish("runtime stopped")
                return
            self._jobs.append(job)
            self._work.notify()

    def run_job(self, job: Job) -> None:
        """Answer one on-demand query (its tracks and events are its own); sets job.result."""
        if job.cancel.is_set():
            job.finish("cancelled")
            return
        stream = self.streams[job.stream]
        if job.range is not None:
            self._run_range(job, stream)
            return
        if self.engine.capabilities.prefetch:
            job.stage = "encoding"
            self.engine.encode(job.clip)
        job.stage = "generating"
        stop = AnyStop(self._stop, job.cancel)
        inference = self.engine.infer(job.clip, [job.query], job.max_new_tokens or stream.config.max_new_tokens,
                                      stop)
        if inference.stopped or job.cancel.is_set():
            job.finish("cancelled" if job.cancel.is_set() else "runtime stopped")
        elif inference.error:
            job.finish(inference.error)
        else:
            g = inference.generations[0]
            job.finish(stream.ground(inference, job.query, g.text, g.inference_s, self.engine.model_id,
                                     stateful=False, confidence=g.confidence))

    def _run_range(self, job: Job, stream: Stream) -> None:
        """A range job: rewind over the history; on the worker thread, the windows due meanwhile are served between
        its batches (the standing queries do not stall behind a long range)."""
        r = job.range
        job.stage = "generating"

        def progress(done: int, planned: int) -> None:
            job.progress = (done, planned)

        on_worker = self._worker is not None and threading.current_thread() is self._worker
        try:
            result = rewind(self.engine, r.source, job.stream, job.query, r.start_ns, r.end_ns, stream.config,
                            scan=r.scan, max_new_tokens=job.max_new_tokens, stop=AnyStop(self._stop, job.cancel),
                            between=self._serve_due if on_worker else None, progress=progress)
        except ValueError as error:  # the range lost its frames (evicted) since the job was made
            job.finish(str(error))
            return
        if result.stopped or job.cancel.is_set():
            job.finish("cancelled" if job.cancel.is_set() else "runtime stopped")
        elif result.error and not result.clips:
            job.finish(result.error)
        else:
            job.finish(result)

    def _serve_due(self) -> None:
        """Run the windows due now and hand their results on (the worker thread, between a range job's batches)."""
        with self._work:
            clips = [] if self._stop.is_set() else self._policy.take()
        if clips:
            try:
                self._run_windows(clips)
            except Exception as error:  # noqa: BLE001 - as in _loop: the worker must outlive any engine fault
                self.counters.add("worker_errors")
                self.last_error = f"{type(error).__name__}: {error}"
                if self._on_error is not None:
                    self._on_error(f"worker error: {self.last_error}")

    def _run_windows(self, clips: list[Clip]) -> None:
        started = time.perf_counter()
        for clip, results in self.run(clips):
            if results and self._on_results is not None:
                self._on_results(clip, results)
        self.counters.add("engine_calls")
        self.counters.add("engine_ms", int((time.perf_counter() - started) * 1e3))

    # ---- worker thread -----------------------------------------------------------------------------------
    def start(self, on_results: ResultsCallback, on_error: ErrorCallback | None = None) -> None:
        """Run jobs and due clips on a worker thread owned by the runtime; results go to `on_results`."""
        if self._worker is not None:
            raise RuntimeError("runtime already started")
        self._stop.clear()
        self._on_results, self._on_error = on_results, on_error
        self._worker = threading.Thread(target=self._loop, name="molmo2_runtime", daemon=True)
        self._worker.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the worker: a running engine call ends within one decode step (engines with
        `stop_within_token`), pending clips are dropped, queued jobs fail. True when the worker ended in time."""
        self._stop.set()
        with self._work:
            jobs = list(self._jobs)
            self._jobs.clear()
            self._policy.clear()
            self._work.notify_all()
        for job in jobs:
            job.finish("runtime stopped")
        worker, self._worker = self._worker, None
        if worker is None:
            return True
        worker.join(timeout_s)
        return not worker.is_alive()

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _loop(self) -> None:
        while True:
            with self._work:
                while not (self._stop.is_set() or self._jobs or self._policy.pending()):
                    self._work.wait()
                if self._stop.is_set():
                    return
                job = self._jobs.popleft() if self._jobs else None
                clips = [] if job else self._policy.take()
            try:
                if job is not None:
                    self.run_job(job)
                    continue
                self._run_windows(clips)
            except Exception as error:  # noqa: BLE001 - the worker must outlive any engine/plugin fault
                self.counters.add("worker_errors")
                self.last_error = f"{type(error).__name__}: {error}"
                if job is not None and not job.done.is_set():
                    job.finish(self.last_error)
                if self._on_error is not None:
                    self._on_error(f"worker error: {self.last_error}")


def warm_up(engine: Engine, slowfast: SlowFastConfig) -> None:
    """One tiny inference (two black frames, one caption token) so that the first real clip does not pay for lazy
    initialisation; RuntimeError when the engine cannot answer it."""
    black = np.zeros((378, 378, 3), np.uint8)
    frames = [(i, Frame(stamp_ns=i + 1, image=black, frame_id="warmup")) for i in range(2)]
    clip = plan_clip(frames, -1, 2, slowfast, epoch=-1, stream="warmup")
    inference = engine.infer(clip, [Query("warmup", TaskKind.CAPTION)], 1)
    engine.clear_cache()
    if inference.error:
        raise RuntimeError(f"warm-up inference failed: {inference.error}")
