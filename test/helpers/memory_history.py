"""An in-memory camera history with the FrameSource methods of core/history.HistoryStore (frames, load, span), for
rewind tests that need no store on disk: frames can be marked missing (load -> None)."""

from __future__ import annotations

import bisect

from molmo2_ros.core.history import StoredFrame
from molmo2_ros.core.types import Clip, Frame


# The store's own index row type, so that rewind sees exactly what HistoryStore.frames gives.
MemoryStoredFrame = StoredFrame


class MemoryHistory:
    def __init__(self) -> None:
        self._stored: dict[str, list[MemoryStoredFrame]] = {}
        self._frames: dict[tuple[str, int], Frame | None] = {}
        self.loads = 0

    def add(self, camera: str, frame: Frame, sample_index: int, epoch: int = 0, missing: bool = False) -> None:
        stored = MemoryStoredFrame(camera, frame.stamp_ns, epoch, sample_index, frame.width, frame.height,
                                   frame.frame_id, False)
        items = self._stored.setdefault(camera, [])
        if (camera, frame.stamp_ns) in self._frames:
            return
        bisect.insort(items, stored, key=lambda s: s.stamp_ns)
        self._frames[(camera, frame.stamp_ns)] = None if missing else frame

    def add_clips(self, camera: str, clips: list[Clip]) -> None:
        """Every frame of these clips with its sample index and epoch (what the live path's history writer keeps)."""
        for clip in clips:
            for f in clip.frames:
                self.add(camera, f.frame, f.sample_index, clip.epoch)

    def frames(self, camera: str, start_ns: int, end_ns: int) -> list[MemoryStoredFrame]:
        return [s for s in self._stored.get(camera, []) if start_ns <= s.stamp_ns <= end_ns]

    def load(self, stored: MemoryStoredFrame) -> Frame | None:
        self.loads += 1
        return self._frames.get((stored.camera, stored.stamp_ns))

    def span(self, camera: str) -> tuple[int, int] | None:
        items = self._stored.get(camera)
        return (items[0].stamp_ns, items[-1].stamp_ns) if items else None
