"""Engines for the reliability tests, loaded through the node's `engine_plugin` parameter.

FaultEngine is the real core Molmo2Engine (its `infer`: out-of-memory detection, freeing and retry with half
the frames, error reporting) with the model call `_infer` replaced by a scripted answer, so no weights are
loaded. What happens is chosen by words in the query text:
- "oom":     the first attempt on each clip raises torch.cuda.OutOfMemoryError (the retry succeeds);
- "oomall":  every attempt raises it (the engine gives up and reports an error);
- "boom":    the model call raises RuntimeError (the engine reports an error, it does not raise);
- "crash":   `infer` itself raises (a plugin bug: the node's worker must survive it);
- "echo":    any task answers "frames=N echo=<prompt>" (below);
- "slow":    prints "fault_engine: inference started" and sleeps FAULT_ENGINE_SLOW_S (default 3) seconds.
Answers: point/count/event -> one point per frame at 50 %/50 % plus MANY_POINTS extra points on the newest
frame when the text contains "many"; track -> two objects per frame; caption/question -> "frames=N echo=<text>"
(the prompt the real prompt builder makes of the query, to show what reaches the model).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from molmo2_ros.core.engine import Molmo2Engine
from molmo2_ros.core.engine_interface import InferRequest, StopFlag
from molmo2_ros.core.prompts import build_prompt
from molmo2_ros.core.types import Clip, Generation, Inference, Query, TaskKind

MANY_POINTS = 400


class FaultEngine(Molmo2Engine):
    def load(self) -> None:
        self.model = "scripted"  # Molmo2Engine.infer only checks that a model is loaded
        self._first_size: dict[tuple, int] = {}  # frames of each clip's first attempt

    def infer_batch(self, requests: list[InferRequest], stop: StopFlag | None = None) -> list[Inference]:
        if any("crash" in q.text for r in requests for q in r.queries):
            raise RuntimeError("fault_engine: injected crash inside infer")
        return super().infer_batch(requests, stop)

    def _run(self, requests: list[InferRequest], stop: StopFlag | None) -> list[Inference]:
        return [self._scripted(r.clip, list(r.queries)) for r in requests]

    def _scripted(self, clip: Clip, queries: list[Query]) -> Inference:
        texts = " ".join(q.text for q in queries)
        if "slow" in texts:
            print("fault_engine: inference started", file=sys.stderr, flush=True)
            time.sleep(float(os.environ.get("FAULT_ENGINE_SLOW_S", "3")))
        first = len(clip.frames) == self._first_size.setdefault((clip.stream, clip.epoch, clip.index),
                                                                  len(clip.frames))
        if "oomall" in texts or ("oom" in texts and first):
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (injected, {len(clip.frames)} frames)")
        if "boom" in texts:
            raise RuntimeError("fault_engine: injected model fault")
        return Inference(clip=clip, generations=[Generation(q, self._answer(clip, q)) for q in queries])

    @staticmethod
    def _answer(clip: Clip, query: Query) -> str:
        rel = clip.relative_times()
        if "echo" in query.text:
            return f"frames={len(clip.frames)} echo={build_prompt(query)}"
        if query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
            groups = [f"{t:.1f} 1 500 500" for t in rel]
            if "many" in query.text:
                groups[-1] += "".join(f" {i + 2} {100 + i % 800:03d} {100 + i // 800:03d}"
                                      for i in range(MANY_POINTS))
            return f'<points coords="{";".join(groups)}">{query.text}</points>'
        if query.task == TaskKind.TRACK:
            groups = [f"{t:.1f} 1 {100 + k * 5:03d} 300 2 800 {600 - k * 5:03d}" for k, t in enumerate(rel)]
            return f'<tracks coords="{";".join(groups)}">{query.text}</tracks>'
        return f"frames={len(clip.frames)} echo={build_prompt(query)}"
