"""The engine contract: everything the runtime, the node and the offline tools call on an engine.

Engines: `Molmo2Engine` (transformers, local GPU/CPU), the oracle evaluation instrument, remote engines (vLLM)
and the test engines. Optional abilities have working defaults here and are declared in `capabilities`, so
callers never probe an engine with getattr/hasattr.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

from .types import Clip, Inference, Query


class StopFlag(Protocol):
    """Asks a running call to end early (a threading.Event, or several combined: `AnyStop`)."""

    def is_set(self) -> bool: ...


class AnyStop:
    """Set when any of its flags is set (e.g. the runtime's shutdown flag and one query's cancel flag)."""

    def __init__(self, *flags: StopFlag) -> None:
        self.flags = flags

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do beyond answering one clip; each is read where behaviour differs.

    batch_clips: `infer_batch` answers the clips of several streams together (one prefill and decode batch, or
    all requests in flight at once) with the same tokens as one call per clip; the runtime then hands it every
    due clip in one call, else it calls `infer` clip by clip.
    prefetch: `encode` computes vision features ahead of `infer` (on-demand queries report the stage).
    stop_within_token: a set stop flag ends a running `infer` within one decode step (else only between clips:
    the node says so when a stop times out).
    local_memory: the engine holds model memory on this machine: `check_memory` plans it before loading and
    `memory_report` is meaningful (the node's diagnostics show it).
    """

    batch_clips: bool = False
    prefetch: bool = False
    stop_within_token: bool = False
    local_memory: bool = False


@dataclass(frozen=True)
class MemoryReport:
    """Memory the engine holds now. device: e.g. 'cuda:0', 'cpu' or a server URL; allocated/reserved: MiB of
    accelerator memory (0 on CPU or remote); cached_frames: vision features kept for reuse; host_cache_mb: MiB of
    them kept in host memory for rewind questions (history.feature_cache_mb: the process grows by up to that)."""

    device: str = ""
    allocated_mb: float = 0.0
    reserved_mb: float = 0.0
    cached_frames: int = 0
    host_cache_mb: float = 0.0


@dataclass(frozen=True)
class InferRequest:
    """One clip and the queries to answer on it."""

    clip: Clip
    queries: tuple[Query, ...]
    max_new_tokens: int | None = None


class Engine(abc.ABC):
    """Answers queries on clips. `infer`/`infer_batch` never raise for model faults: they return an
    `Inference` with `error` set. `stop` asks a running call to end early; an engine without
    `stop_within_token` checks it only between clips."""

    capabilities: EngineCapabilities = EngineCapabilities()

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """Identifier reported in every Answer (Hub id, folder, server model name, ...)."""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model (or connect to the server); raises with a message that says what to do."""

    @abc.abstractmethod
    def unload(self) -> None:
        """Free the model and its memory (or disconnect)."""

    @abc.abstractmethod
    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: StopFlag | None = None) -> Inference:
        """Answer every query on the clip."""

    def infer_batch(self, requests: list[InferRequest], stop: StopFlag | None = None) -> list[Inference]:
        """Answer several clips (e.g. of different cameras); one Inference per request, in order."""
        results = []
        for r in requests:
            if stop is not None and stop.is_set():
                results.append(Inference(clip=r.clip, generations=[], error="stopped", stopped=True))
            else:
                results.append(self.infer(r.clip, list(r.queries), r.max_new_tokens, stop))
        return results

    def encode(self, clip: Clip) -> int:
        """Compute and cache the clip's vision features ahead of `infer`; returns frames encoded."""
        return 0

    def clear_cache(self) -> None:
        """Forget cached features (the model stays loaded)."""

    def check_memory(self, setting) -> str:
        """Before `load`: raise ValueError when `setting` (a core.memory_plan.Setting) cannot fit the device,
        saying what to lower; returns a note when it could not be planned ('' otherwise). Engines without
        `local_memory` have nothing to check."""
        return ""

    def memory_report(self) -> MemoryReport:
        return MemoryReport()

    def diagnostics(self) -> dict[str, str]:
        """Engine-specific key/values for /diagnostics (e.g. a server's request latency, failures by kind).
        Never secrets (API keys)."""
        return {}
