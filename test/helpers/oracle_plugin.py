"""The offline OracleEngine as a node `engine_plugin` (test hook): `model` is the path of a scenario.json.

Deterministic (no noise), so the live node on a played bag can be compared with `molmo2-ros replay --oracle`.
The node's warm-up clip (frame_id "warmup", stamps not in the ground truth) gets a fixed caption.
"""

from __future__ import annotations

from molmo2_ros.core.engine_interface import Engine, StopFlag
from molmo2_ros.core.types import Clip, Generation, Inference, Query
from molmo2_ros.offline.evaluation.oracle import NO_NOISE, OracleEngine
from molmo2_ros.offline.data.scenario import GroundTruth


class OraclePlugin(Engine):
    def __init__(self, config) -> None:
        self.config = config
        self._oracle: OracleEngine | None = None

    @property
    def model_id(self) -> str:
        return "oracle"

    def load(self) -> None:
        self._oracle = OracleEngine(GroundTruth.load(self.config.model), NO_NOISE)

    def unload(self) -> None:
        self._oracle = None

    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: StopFlag | None = None) -> Inference:
        if clip.frame_id == "warmup":
            return Inference(clip=clip, generations=[Generation(q, "warm") for q in queries])
        return self._oracle.infer(clip, queries, max_new_tokens)
