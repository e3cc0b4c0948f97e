"""The real Molmo2Engine on a tiny model whose every forward pass is slowed to STEP_S and which never emits its
stop token: one standing-query window takes about a minute (600 decode steps). For the stop-within-one-token tests.
Prints "slow_engine: generating" once the first window's decoding is under way (after the warm-up)."""

from __future__ import annotations

import sys
import time

from molmo2_ros.core.engine import Molmo2Engine

STEP_S = 0.1


class SlowEngine(Molmo2Engine):
    def load(self) -> None:
        super().load()
        self.model.generation_config.eos_token_id = None  # generate until max_new_tokens
        self.forwards = 0

        def slow(module, args, kwargs):
            self.forwards += 1
            if self.forwards == 5:
                print("slow_engine: generating", file=sys.stderr, flush=True)
            time.sleep(STEP_S)
        self.model.register_forward_pre_hook(slow, with_kwargs=True)

    def clear_cache(self) -> None:
        super().clear_cache()
        self.forwards = 0  # the warm-up's few forwards do not count
