"""OracleEngine: an EVALUATION INSTRUMENT that answers queries from a scenario's ground truth.

It writes Molmo2's exact output grammar (see docs/ground_truth.md) so that everything after the model (parsing,
grounding, track association, event merging, messages) can be measured against known answers, with optional
seeded noise. It sees the ground truth, not the images: never use it as a model for a live robot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from molmo2_ros.core.engine_interface import Engine, StopFlag
from molmo2_ros.core.types import Clip, Generation, Inference, Query, TaskKind
from molmo2_ros.offline.data.scenario import GroundTruth

FIXED_SENTENCE = "This answer comes from the oracle evaluation instrument, which cannot describe or answer about video."


@dataclass(frozen=True)
class NoiseConfig:
    """jitter: std of the coordinate noise as a fraction of the frame size; drop: fraction of points left out;
    id_swap: probability that a track answer swaps the ids of two objects from a random frame on;
    hallucinate: probability per frame of an extra point at a random position; seed: base of all randomness."""

    jitter: float = 0.02
    drop: float = 0.1
    id_swap: float = 0.05
    hallucinate: float = 0.0
    seed: int = 0


NO_NOISE = NoiseConfig(jitter=0.0, drop=0.0, id_swap=0.0, hallucinate=0.0)


def _coords(groups: list[tuple[str, list[tuple[int, float, float]]]], width: int, height: int) -> str:
    """'t id x y id x y;t ...' with x, y as zero-padded integers 0..1000."""
    def v(p: float, size: int) -> str:
        return f"{min(max(int(round(p / size * 1000)), 0), 1000):03d}"
    return ";".join(key + "".join(f" {i} {v(x, width)} {v(y, height)}" for i, x, y in pts) for key, pts in groups)


class OracleEngine(Engine):
    """An engine answering from ground truth: an evaluation instrument.

    Frames are looked up by their exact stamp_ns; a clip frame missing from the ground truth makes `infer`
    return an error. Noise is deterministic per (noise seed, clip index, query id).
    """

    def __init__(self, truth: GroundTruth, noise: NoiseConfig = NO_NOISE) -> None:
        self.truth = truth
        self.noise = noise

    @property
    def model_id(self) -> str:
        return "oracle"

    def load(self) -> None:
        """Nothing to load: the ground truth is given to the constructor."""

    def unload(self) -> None:
        """Nothing to free."""

    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: StopFlag | None = None) -> Inference:
        missing = [s for s in clip.stamps_ns if s not in self.truth.frame_index]
        if missing:
            return Inference(clip=clip, generations=[],
                             error=f"oracle: frame stamp {missing[0]} ns is not in the ground truth")
        generations = []
        for query in queries:
            text = self._answer(clip, query)
            generations.append(Generation(query=query, text=text, num_new_tokens=len(text)))
        return Inference(clip=clip, generations=generations)

    def _rng(self, clip: Clip, query: Query) -> np.random.Generator:
        return np.random.default_rng([self.noise.seed, clip.index, zlib.crc32(query.id.encode())])

    def _answer(self, clip: Clip, query: Query) -> str:
        if query.task in (TaskKind.CAPTION, TaskKind.QUESTION):
            return FIXED_SENTENCE
        spec = self.truth.query_for(query.id, query.text)
        objects = list(spec.get("objects", [])) if spec else []
        label = query.text
        rng = self._rng(clip, query)
        # per frame: [(object id, x, y)] of what the answer should contain
        frames: list[list[tuple[str, float, float]]] = []
        for stamp in clip.stamps_ns:
            frames.append([(o, *p) for o in objects if (p := self.truth.visible(o, stamp)) is not None])
        if query.task == TaskKind.COUNT:
            seen: set[str] = set()
            for row in frames:
                row[:] = [item for item in row if item[0] not in seen]
                seen.update(item[0] for item in row)
        if query.task == TaskKind.EVENT:
            spans = [(e["start_ns"], e["end_ns"], set(e["object_ids"])) for e in self.truth.query_events(spec or {})]
            frames = [[item for item in row if any(a <= s <= b and item[0] in ids for a, b, ids in spans)]
                      for s, row in zip(clip.stamps_ns, frames)]
        total = len({item[0] for row in frames for item in row})
        frames = self._noisy(frames, rng, query.task == TaskKind.TRACK)
        times = [f"{t:.1f}" for t in clip.relative_times()]
        groups: list[tuple[str, list[tuple[int, float, float]]]] = []
        numbers: dict[str, int] = {}
        running = 0
        for key, row in zip(times, frames):
            pts = []
            for obj, x, y in row:
                if query.task == TaskKind.TRACK:
                    number = numbers.setdefault(obj, len(numbers) + 1)
                else:
                    running += 1
                    number = running
                pts.append((number, x, y))
            if pts:
                groups.append((key, pts))
        if query.task == TaskKind.COUNT:
            if not groups:
                return "There are none."
            return f'Counting the <points coords="{_coords(groups, clip.width, clip.height)}">{label}</points> ' \
                   f"shows a total of {total}."
        if not groups:
            return "No tracks available." if query.task == TaskKind.TRACK else "There are none."
        tag = "tracks" if query.task == TaskKind.TRACK else "points"
        return f'<{tag} coords="{_coords(groups, clip.width, clip.height)}">{label}</{tag}>'

    def _noisy(self, frames: list[list[tuple[str, float, float]]], rng: np.random.Generator,
               is_track: bool) -> list[list[tuple[str, float, float]]]:
        """Jitter, drops, an id swap (tracks) and hallucinated points, all drawn from `rng`."""
        n = self.noise
        width, height = self.truth.width, self.truth.height
        if n == NO_NOISE:
            return frames
        swap: tuple[str, str, int] | None = None
        ids = sorted({item[0] for row in frames for item in row})
        if is_track and len(ids) >= 2 and rng.random() < n.id_swap:
            a, b = rng.choice(len(ids), size=2, replace=False)
            swap = (ids[a], ids[b], int(rng.integers(0, len(frames))))
        out = []
        for k, row in enumerate(frames):
            new_row = []
            for obj, x, y in row:
                if rng.random() < n.drop:
                    continue
                if swap and k >= swap[2] and obj in swap[:2]:
                    obj = swap[1] if obj == swap[0] else swap[0]
                new_row.append((obj, x + rng.normal(0, n.jitter * width), y + rng.normal(0, n.jitter * height)))
            if rng.random() < n.hallucinate:
                new_row.append(("hallucination", rng.uniform(0, width), rng.uniform(0, height)))
            out.append(new_row)
        return out
