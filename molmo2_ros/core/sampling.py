"""SlowFast sampling plan: which frames go into a clip and at which pooling.

Key ("slow") frames get a finer pooling (more visual tokens), the others ("fast") a coarser one. The role is
chosen by the absolute sample index, so a frame keeps its role (and its cached vision features) in every
window it belongs to. Disabled, every frame uses Molmo2's released uniform 3x3 (`RELEASED_POOLING`).

Plans (27x27 patches per frame, key_every 4):
- default ("lean"): keys at the released 3x3 (81 tokens), others 5x5 (36 tokens): 47.25 tokens/frame, 1.71x fewer
  than uniform 3x3;
- "detail": keys 2x2 (196 tokens), others 3x3: 109.75 tokens/frame, 1.35x more than uniform 3x3;
- uniform (disabled): 81 tokens/frame, what the released models were trained on.
The released models never saw 5x5 or 2x2 pooling of video frames, nor mixed poolings in one clip: the quality of
both SlowFast plans with real weights is unmeasured (compare them on your data with replay + eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .types import Clip, ClipFrame, Frame


RELEASED_POOLING = (3, 3)


@dataclass(frozen=True)
class SlowFastConfig:
    """slow_pooling: (rows, cols) of patches pooled into one token on key frames; fast_pooling: on the others;
    key_every: every Nth sample is a key frame; enabled False: every frame at `RELEASED_POOLING`."""

    enabled: bool = True
    slow_pooling: tuple[int, int] = (3, 3)
    fast_pooling: tuple[int, int] = (5, 5)
    key_every: int = 4

    def __post_init__(self) -> None:
        if self.key_every < 1:
            raise ValueError("key_every must be >= 1")
        for p in (self.slow_pooling, self.fast_pooling):
            if len(p) != 2 or min(p) < 1 or max(p) > 9:
                raise ValueError(f"pooling must be two ints in 1..9, got {p}")

    def role(self, sample_index: int) -> tuple[tuple[int, int], bool]:
        """(pooling, is_key) for the frame with this absolute sample index."""
        if not self.enabled:
            return RELEASED_POOLING, False
        if sample_index % self.key_every == 0:
            return tuple(self.slow_pooling), True
        return tuple(self.fast_pooling), False

    def mean_tokens_per_frame(self, patches_per_side: int = 27) -> float:
        """Visual tokens per frame averaged over a key period (81 for the released uniform plan)."""
        if not self.enabled:
            return tokens_per_frame(RELEASED_POOLING, patches_per_side)
        keys = tokens_per_frame(self.slow_pooling, patches_per_side)
        return (keys + (self.key_every - 1) * tokens_per_frame(self.fast_pooling, patches_per_side)) / self.key_every


# Named plans (README "SlowFast plans"): the default, "detail" (2x2 keys, 3x3 others), and the released uniform pooling.
SLOWFAST_PRESETS = {
    "default": SlowFastConfig(),
    "detail": SlowFastConfig(slow_pooling=(2, 2), fast_pooling=(3, 3)),
    "uniform": SlowFastConfig(enabled=False),
}


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
