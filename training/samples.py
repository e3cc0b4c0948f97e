"""What every training task produces: a `Sample` (a clip, its prompt and answer, and where the answer's
coordinate digits and time keys must look), plus the coordinate helpers of Molmo2's output grammar."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from molmo2_ros.core.types import Clip, ClipFrame, Frame

COLOURS = ("red", "blue", "green")
KINDS = ("ball", "square", "triangle")
LABELS = [f"{c} {k}" for c in COLOURS for k in KINDS]
NONE_ANSWER = "There are none."
EVENT_FLAGS = ("fall", "touch", "leave", "new")  # per-object flags of the LM's auxiliary head, in this order


def coord(v: float, size: int) -> int:
    return min(max(int(round(v / size * 1000)), 0), 1000)


def cell_of(x: float, y: float, w: int, h: int, pool: int = 3) -> int:
    """Row-major index of the pooled visual token whose patches hold pixel (x, y) (27x27 patches, pool x pool)."""
    grid = -(-27 // pool)
    col = min(int(x / w * 27), 26) // pool
    row = min(int(y / h * 27), 26) // pool
    return row * grid + col


FRAME_DT = 0.5  # 2 fps, the product's sampling rate
STAMP0 = 1_700_000_000_000_000_000


@dataclass
class Sample:
    """One training example: a clip (1..12 frames of one size), its prompt, the answer and where its coordinate
    digits point (character offset in the answer, frame index, pooled-token cell in that frame). `keys`: the
    time-key characters of each group and the token of the group's first point (same layout). `flags`: per frame,
    (x, y, one 0/1 per EVENT_FLAGS) of every visible object, targets of the auxiliary head on the LM's visual
    tokens (empty: that head is not trained on this sample)."""

    frames: list[np.ndarray]
    pools: list[int]
    prompt: str
    answer: str
    digits: list[tuple[int, int, int]]
    visible: list[list[tuple[str, float, float]]]  # per frame: (label, x, y) of every visible object
    w: int
    h: int
    label: str = ""
    targets: list[list[tuple[float, float]]] = field(default_factory=list)  # per frame: the asked instances
    keys: list[tuple[int, int, int]] = field(default_factory=list)
    flags: list[list[tuple[float, float, tuple[int, ...]]]] = field(default_factory=list)

    def clip(self) -> Clip:
        """The clip as the product builds it (frame i at i * FRAME_DT s; the finest pooling marks key frames)."""
        finest = min(self.pools)
        return Clip(index=0, frames=tuple(
            ClipFrame(Frame(STAMP0 + int(round(i * FRAME_DT * 1e9)), img), i, (p, p), p == finest)
            for i, (img, p) in enumerate(zip(self.frames, self.pools))))


def write_coords(groups: list[tuple[int, list[tuple[int, float, float]]]], pools: list[int], w: int, h: int,
                 offset: int) -> tuple[str, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The coords attribute `t id x y id x y;t ...` for groups (frame index, [(id, x px, y px)]), and the
    supervision of its characters: (answer offset of each coordinate digit, frame, cell) and (answer offset of
    each time-key character, frame, cell of the group's first point). `offset`: where the attribute starts in
    the answer."""
    text, digits, keys = "", [], []
    for f, points in groups:
        if text:
            text += ";"
        key = f"{f * FRAME_DT:.1f}"
        first = cell_of(points[0][1], points[0][2], w, h, pools[f])
        keys += [(offset + len(text) + k, f, first) for k in range(len(key))]
        text += key
        for pid, x, y in points:
            text += f" {pid} "
            at = offset + len(text)
            text += f"{coord(x, w):03d} {coord(y, h):03d}"
            cell = cell_of(x, y, w, h, pools[f])
            digits += [(at + d, f, cell) for d in (0, 1, 2, 4, 5, 6)]
    return text, digits, keys


