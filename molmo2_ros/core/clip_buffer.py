"""Sliding-window clip buffer: decimates frames on arrival and emits a clip every `stride` seconds.

Only frames the sampler can use are kept (at most `sample_fps`, and at most `max_frames` per window), and only
those inside the window, so memory is bounded by `max_buffered_frames() * frame bytes` (e.g. 8 s at 2 fps of
1080p RGB: at most 18 frames, 112 MB).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from .sampling import SlowFastConfig, plan_clip
from .types import NS_PER_S, Clip, Frame

MAX_SAMPLE_FPS = 2.0


@dataclass(frozen=True)
class BufferConfig:
    """window_s: clip length; stride_s: time between clips; sample_fps: kept rate (<= 2, Molmo2's training rate);
    max_frames: frames per clip (<= 128); backward_jump_s: a stamp this far behind the newest one resets the
    buffer (looping bag, sim-time reset) instead of being dropped as out-of-order."""

    window_s: float = 8.0
    stride_s: float = 1.0
    sample_fps: float = 2.0
    max_frames: int = 128
    backward_jump_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.sample_fps <= MAX_SAMPLE_FPS:
            raise ValueError(f"sample_fps must be in (0, {MAX_SAMPLE_FPS}], got {self.sample_fps}")
        if self.window_s <= 0 or self.stride_s <= 0:
            raise ValueError("window_s and stride_s must be > 0")
        if not 1 <= self.max_frames <= 128:
            raise ValueError(f"max_frames must be in [1, 128], got {self.max_frames}")
        if self.backward_jump_s < 0:
            raise ValueError("backward_jump_s must be >= 0")

    @property
    def period_ns(self) -> int:
        """Spacing of kept frames: 1/sample_fps, widened so that a window holds at most max_frames."""
        return round(NS_PER_S * max(1.0 / self.sample_fps, self.window_s / self.max_frames))

    @property
    def frames_per_window(self) -> int:
        """Kept frames in a whole window (frames newer than `newest - window_s`)."""
        return math.ceil(round(self.window_s * NS_PER_S) / self.period_ns)

    def max_buffered_frames(self) -> int:
        """Upper bound of frames held at once."""
        return int(self.window_s * NS_PER_S / self.period_ns) + 2


class ClipBuffer:
    """Turns a stream of frames into overlapping clips. Not thread-safe: feed it from one thread.

    A clip is emitted on a kept frame (so it always ends with the newest sampled frame) once `stride_s` has
    passed since the previous clip; the effective stride is thus rounded up to the kept-frame spacing."""

    def __init__(self, config: BufferConfig = BufferConfig(), slowfast: SlowFastConfig = SlowFastConfig(),
                 patches_per_side: int = 27, stream: str = "") -> None:
        self.config = config
        self.stream = stream
        self.slowfast = slowfast
        self.patches_per_side = patches_per_side
        self.counters: Counter = Counter()
        self.epoch = 0
        self._frames: deque[tuple[int, Frame]] = deque()
        self._newest_ns: int | None = None
        self._last_kept_ns: int | None = None
        self._next_emit_ns: int | None = None
        self._next_sample_index = 0
        self._next_clip_index = 0
        self._size: tuple[int, int] | None = None

    def reset(self, reason: str) -> None:
        """Forget all frames; sample indices restart, clip indices keep counting, `epoch` increases."""
        self._frames.clear()
        self._newest_ns = self._last_kept_ns = self._next_emit_ns = None
        self._next_sample_index = 0
        self._size = None
        self.epoch += 1
        self.counters[f"reset_{reason}"] += 1

    def accepts(self, stamp_ns: int) -> str:
        """Classify a stamp before decoding its image: "keep", "decimate", or a drop/reset reason.

        Lets callers skip converting frames that will not be sampled."""
        if stamp_ns <= 0:
            return "zero_stamp"
        if self._newest_ns is None:
            return "keep"
        if stamp_ns == self._newest_ns:
            return "duplicate"
        if stamp_ns < self._newest_ns:
            behind = self._newest_ns - stamp_ns
            return "backward_jump" if behind >= self.config.backward_jump_s * NS_PER_S else "out_of_order"
        tolerance = self.config.period_ns // 50
        if stamp_ns - self._last_kept_ns >= self.config.period_ns - tolerance:
            return "keep"
        return "decimate"

    def push(self, frame: Frame) -> Clip | None:
        """Add a frame; returns a clip when one is due."""
        self.counters["received"] += 1
        verdict = self.accepts(frame.stamp_ns)
        if verdict == "backward_jump":
            self.reset("backward_jump")
            verdict = "keep"
        if verdict == "decimate":
            self._newest_ns = frame.stamp_ns
            self.counters["decimated"] += 1
            return None
        if verdict != "keep":
            self.counters[f"dropped_{verdict}"] += 1
            return None
        size = (frame.height, frame.width)
        if self._size is not None and size != self._size:
            self.reset("resolution_change")
        self._size = size
        self._newest_ns = self._last_kept_ns = frame.stamp_ns
        self._frames.append((self._next_sample_index, frame))
        self._next_sample_index += 1
        self.counters["kept"] += 1
        window_ns = round(self.config.window_s * NS_PER_S)
        while self._frames and self._frames[0][1].stamp_ns <= frame.stamp_ns - window_ns:
            self._frames.popleft()
        stride_ns = round(self.config.stride_s * NS_PER_S)
        tolerance = self.config.period_ns // 50
        if self._next_emit_ns is None:
            self._next_emit_ns = frame.stamp_ns + stride_ns - tolerance
            return None
        if frame.stamp_ns < self._next_emit_ns:
            return None
        self._next_emit_ns = frame.stamp_ns + stride_ns - tolerance
        return self._emit()

    def _emit(self) -> Clip:
        clip = plan_clip(list(self._frames), self._next_clip_index, self.config.max_frames, self.slowfast,
                         self.patches_per_side, epoch=self.epoch,
                         stream=self.stream)
        self._next_clip_index += 1
        self.counters["clips"] += 1
        return clip

    def clip_between(self, start_ns: int, end_ns: int) -> Clip | None:
        """A clip of the buffered frames with start_ns <= stamp <= end_ns (on-demand queries), or None."""
        frames = [(i, f) for i, f in self._frames if start_ns <= f.stamp_ns <= end_ns]
        if not frames:
            return None
        return plan_clip(frames, -1, self.config.max_frames, self.slowfast, self.patches_per_side, epoch=self.epoch,
                         stream=self.stream)

    def latest_clip(self) -> Clip | None:
        """A clip of everything buffered (the current window), or None when empty."""
        if not self._frames:
            return None
        return plan_clip(list(self._frames), -1, self.config.max_frames, self.slowfast, self.patches_per_side,
                         epoch=self.epoch, stream=self.stream)

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)

    @property
    def buffered_span_ns(self) -> tuple[int, int] | None:
        """Stamps of the oldest and newest buffered frame."""
        if not self._frames:
            return None
        return self._frames[0][1].stamp_ns, self._frames[-1][1].stamp_ns


def whole_clips(frames: Iterable[Frame], config: BufferConfig, slowfast: SlowFastConfig = SlowFastConfig(),
                limit: int = 0) -> list[Clip]:
    """The clips a buffer makes of `frames` that span a whole window (the first clips, before a window has
    passed, hold fewer frames): the first `limit` of them, or all when `limit` is 0."""
    buffer = ClipBuffer(config, slowfast)
    out: list[Clip] = []
    for frame in frames:
        clip = buffer.push(frame)
        if clip is not None and len(clip.frames) >= config.frames_per_window:
            out.append(clip)
            if len(out) == limit:
                break
    return out
