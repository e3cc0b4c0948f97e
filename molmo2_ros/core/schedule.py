"""Scheduling policies: which pending clips the runtime runs next, and which it gives up (always counted).

- `live`: a robot wants the newest answer. Each stream keeps only its newest pending clip; a clip replaced before
  it ran is counted as `windows_skipped`. Memory: at most one pending clip per stream.
- `every_window`: replay and simulation want every window, in order. Clips wait in a queue per stream; the
  frames they pin are bounded by `max_pending_bytes` (overlapping clips share frames, counted once): past it the
  oldest pending clip is dropped and counted as `windows_dropped_budget`.

Both hand out at most one clip per stream per call to `take`, so the streams that are due together can run in one
batched engine call. Not thread-safe: the runtime calls them under its lock.
"""

from __future__ import annotations

import abc
from collections import deque

from .types import Clip

LIVE = "live"
EVERY_WINDOW = "every_window"
SCHEDULES = (LIVE, EVERY_WINDOW)


class SchedulePolicy(abc.ABC):
    name: str

    @abc.abstractmethod
    def offer(self, clip: Clip) -> dict[str, list[Clip]]:
        """Queue a clip; returns the clips given up because of it, by counter name (e.g. windows_skipped)."""

    @abc.abstractmethod
    def take(self) -> list[Clip]:
        """Remove and return the clips to run next: at most one per stream, oldest stream-clip first."""

    @abc.abstractmethod
    def pending(self) -> list[Clip]:
        """Every clip waiting, oldest first within each stream."""

    @abc.abstractmethod
    def clear(self, stream: str | None = None) -> int:
        """Forget the pending clips (of one stream, or all); returns how many."""

    def pending_bytes(self) -> int:
        """Bytes of frame pixels the pending clips pin (a frame shared by several clips counts once)."""
        return _frame_bytes(self.pending())


class LivePolicy(SchedulePolicy):
    name = LIVE

    def __init__(self) -> None:
        self._newest: dict[str, Clip] = {}

    def offer(self, clip: Clip) -> dict[str, list[Clip]]:
        replaced = self._newest.pop(clip.stream, None)
        self._newest[clip.stream] = clip
        return {"windows_skipped": [replaced]} if replaced is not None else {}

    def take(self) -> list[Clip]:
        clips = sorted(self._newest.values(), key=lambda c: c.end_ns)
        self._newest.clear()
        return clips

    def pending(self) -> list[Clip]:
        return list(self._newest.values())

    def clear(self, stream: str | None = None) -> int:
        if stream is None:
            n = len(self._newest)
            self._newest.clear()
            return n
        return int(self._newest.pop(stream, None) is not None)


class EveryWindowPolicy(SchedulePolicy):
    name = EVERY_WINDOW

    def __init__(self, max_pending_bytes: int) -> None:
        if max_pending_bytes <= 0:
            raise ValueError("max_pending_bytes must be > 0")
        self.max_pending_bytes = max_pending_bytes
        self._queues: dict[str, deque[Clip]] = {}
        self._refs: dict[int, list] = {}  # id(frame image) -> [clips holding it, bytes]
        self._bytes = 0

    def offer(self, clip: Clip) -> dict[str, list[Clip]]:
        self._queues.setdefault(clip.stream, deque()).append(clip)
        self._hold(clip, +1)
        dropped = []
        while self._bytes > self.max_pending_bytes and self._count() > 1:
            oldest = min((q for q in self._queues.values() if q), key=lambda q: q[0].end_ns)
            victim = oldest.popleft()
            self._hold(victim, -1)
            dropped.append(victim)
        return {"windows_dropped_budget": dropped} if dropped else {}

    def take(self) -> list[Clip]:
        clips = [q.popleft() for q in self._queues.values() if q]
        for clip in clips:
            self._hold(clip, -1)
        return sorted(clips, key=lambda c: c.end_ns)

    def pending(self) -> list[Clip]:
        return [c for q in self._queues.values() for c in q]

    def pending_bytes(self) -> int:
        return self._bytes

    def clear(self, stream: str | None = None) -> int:
        names = list(self._queues) if stream is None else [stream]
        n = 0
        for name in names:
            queue = self._queues.get(name, deque())
            while queue:
                self._hold(queue.popleft(), -1)
                n += 1
        return n

    def _count(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _hold(self, clip: Clip, delta: int) -> None:
        for f in clip.frames:
            key = id(f.frame.image)
            ref = self._refs.get(key)
            if ref is None:
                ref = self._refs[key] = [0, int(f.frame.image.nbytes)]
                self._bytes += ref[1]
            ref[0] += delta
            if ref[0] == 0:
                self._bytes -= ref[1]
                del self._refs[key]


def make_policy(name: str, max_pending_mb: float) -> SchedulePolicy:
    """The policy called `name` (live | every_window); ValueError names the choices."""
    if name == LIVE:
        return LivePolicy()
    if name == EVERY_WINDOW:
        return EveryWindowPolicy(int(max_pending_mb * 2**20))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got '{name}'")


def _frame_bytes(clips: list[Clip]) -> int:
    seen: dict[int, int] = {}
    for clip in clips:
        for f in clip.frames:
            seen[id(f.frame.image)] = int(f.frame.image.nbytes)
    return sum(seen.values())
