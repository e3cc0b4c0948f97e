"""A deterministic stand-in engine for node tests, loaded through the node's `engine_plugin` parameter.

Answers depend only on the clip's absolute frame stamps (and pixels for captions), so grounding, persistent
track ids and events can be checked exactly:
- point: one point per frame at the "ball" position ball_xy(stamp);
- count: two points on the newest frame, "There are 2 ...";
- track: two objects moving smoothly (obj_a_xy, obj_b_xy); their per-answer ids swap on odd clips, as a model
  that renumbers per answer would do;
- event: points on frames whose stamp second s satisfies s % 10 < 3;
- caption/question: "frames=N rgb=R,G,B" with the mean colour of the newest frame (checks decoding).
A prompt containing "slow" sleeps 3 s (cancellation tests; it does not check the stop flag, like a plugin
without `stop_within_token`). `model` may be "scripted" or "fail" (load error).
"""

from __future__ import annotations

import time

from molmo2_ros.core.engine_interface import Engine, StopFlag
from molmo2_ros.core.types import NS_PER_S, Clip, Generation, Inference, Query, TaskKind


def ball_xy(stamp_ns: int) -> tuple[int, int]:
    return 500, 500


def obj_a_xy(stamp_ns: int) -> tuple[int, int]:
    return 100 + int(stamp_ns // (NS_PER_S // 10)) % 100, 300


def obj_b_xy(stamp_ns: int) -> tuple[int, int]:
    return 800, 600 + int(stamp_ns // (NS_PER_S // 10)) % 100


def event_on(stamp_ns: int) -> bool:
    return (stamp_ns // NS_PER_S) % 10 < 3


class ScriptedEngine(Engine):
    def __init__(self, config) -> None:
        self.config = config
        self.loaded = False

    @property
    def model_id(self) -> str:
        return f"scripted:{self.config.model}"

    def load(self) -> None:
        if self.config.model == "fail":
            raise RuntimeError("scripted load failure")
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: StopFlag | None = None) -> Inference:
        return Inference(clip=clip, generations=[Generation(q, self._answer(clip, q)) for q in queries])

    def _answer(self, clip: Clip, query: Query) -> str:
        rel = clip.relative_times()
        stamps = clip.stamps_ns
        if "slow" in query.text:
            time.sleep(3.0)
        if query.task == TaskKind.POINT:
            groups = [f"{t:.1f} 1 {x:03d} {y:03d}" for t, s in zip(rel, stamps) for x, y in [ball_xy(s)]]
            return f'<points coords="{";".join(groups)}">{query.text}</points>'
        if query.task == TaskKind.COUNT:
            return f'There are 2 <points coords="{rel[-1]:.1f} 1 200 200 2 800 800">{query.text}</points>.'
        if query.task == TaskKind.TRACK:
            first, second = (obj_a_xy, obj_b_xy) if clip.index % 2 == 0 else (obj_b_xy, obj_a_xy)
            groups = []
            for t, s in zip(rel, stamps):
                (ax, ay), (bx, by) = first(s), second(s)
                groups.append(f"{t:.1f} 1 {ax:03d} {ay:03d} 2 {bx:03d} {by:03d}")
            return f'<tracks coords="{";".join(groups)}">{query.text}</tracks>'
        if query.task == TaskKind.EVENT:
            groups = [f"{t:.1f} 1 500 500" for t, s in zip(rel, stamps) if event_on(s)]
            return f'<points coords="{";".join(groups)}">{query.text}</points>' if groups else "There are none."
        image = clip.frames[-1].frame.image
        r, g, b = (int(round(v)) for v in image.reshape(-1, 3).mean(axis=0))
        return f"frames={len(clip.frames)} rgb={r},{g},{b}"
