"""SlowFast sampling plan: which frames go into a clip and at which pooling.

Key ("slow") frames get a finer pooling (more visual tokens), the others ("fast") a coarser one. The role is
chosen by the absolute sample index, so a frame keeps its role (and its cached vision features) in every
window it belongs to. Disabled, every frame uses the fast pooling, i.e. Molmo2's released uniform 3x3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .types import Clip, ClipFrame, Frame


@dataclass(frozen=True)
class SlowFastConfig:
    enabled: bool = True
    slow_pooling: tuple[int, int] = (2, 2)
    fast_pooling: tuple[int, int] = (3, 3)
    key_every: int = 4

    def __post_init__(self) -> None:
        if self.key_every < 1:
            raise ValueError("key_every must be >= 1")
        for p in (self.slow_pooling, self.fast_pooling):
            if len(p) != 2 or min(p) < 1 or max(p) > 9:
                raise ValueError(f"pooling must be two ints in 1..9, got {p}")

    def role(self, sample_index: int) -> tuple[tuple[int, int], bool]:
        """(pooling, is_key) for the frame with this absolute sample index."""
        if self.enabled and sample_index % self.key_every == 0:
            return tuple(self.slow_pooling), True
        return tuple(self.fast_pooling), False


def tokens_per_frame(pooling: tuple[int, int], patches_per_side: int = 27) -> int:
    """Visual tokens one frame takes at this pooling (378 px / 14 px patches = 27 per side)."""
    return math.ceil(patches_per_side / pooling[0]) * math.ceil(patches_per_side / pooling[1])


def uniform_keep_newest(n: int, max_frames: int) -> list[int]:
    """Indices of at most `max_frames` of `n` items, evenly spread, always including the newest (last)."""
    if n <= max_frames:
        return list(range(n))
    picks = np.round(np.linspace(n - 1, 0, max_frames)).astype(int)
    return sorted(set(picks.tolist()))


def plan_clip(frames: list[tuple[int, Frame]], index: int, max_frames: int, slowfast: SlowFastConfig,
              patches_per_side: int = 27, epoch: int = 0, stream: str = "") -> Clip:
    """Build a clip from (absolute sample index, frame) pairs, oldest first."""
    chosen = [frames[i] for i in uniform_keep_newest(len(frames), max_frames)]
    clip_frames = []
    for sample_index, frame in chosen:
        pooling, is_key = slowfast.role(sample_index)
        clip_frames.append(ClipFrame(frame, sample_index, pooling, is_key))
    tokens = sum(tokens_per_frame(f.pooling, patches_per_side) for f in clip_frames)
    return Clip(index=index, frames=tuple(clip_frames), epoch=epoch, num_visual_tokens=tokens, stream=stream)


def subsample_clip(clip: Clip, max_frames: int) -> Clip:
    """The same clip with at most `max_frames` frames (newest kept); used to retry after out-of-memory."""
    chosen = [clip.frames[i] for i in uniform_keep_newest(len(clip.frames), max_frames)]
    tokens = sum(tokens_per_frame(f.pooling) for f in chosen)
    return replace(clip, frames=tuple(chosen), num_visual_tokens=tokens)
