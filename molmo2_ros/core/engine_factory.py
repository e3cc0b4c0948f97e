"""Making the engine a configuration asks for: the node and the command line tools both call `make_engine`.

Engines: `transformers` (Molmo2Engine, the model in this process), `vllm` (VllmEngine, a vLLM server over
HTTP), or a `module:Class` plugin (testing/extension hook) constructed as `Class(config)`. Imports happen here,
lazily, so a robot that only talks to a vLLM server never imports torch for its engine.
"""

from __future__ import annotations

import importlib

from .engine_config import ENGINE_KINDS
from .engine_interface import Engine


def make_engine(kind: str, config, plugin: str = "") -> Engine:
    """An engine, not loaded yet. kind: transformers (config: engine_config.EngineConfig) or vllm
    (config: engine_config.VllmConfig); plugin: 'module:Class' made as Class(config) instead (the config of `kind`)."""
    if plugin:
        module, _, name = plugin.partition(":")
        engine = getattr(importlib.import_module(module), name)(config)
        if not isinstance(engine, Engine):
            raise TypeError(f"engine plugin '{plugin}' is not a molmo2_ros.core.engine_interface.Engine")
        return engine
    if kind == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine(config)
    if kind == "transformers":
        if not config.model:
            raise ValueError("no model: set preset (e.g. tiny, molmo2-4b) or model (a Hub id such as "
                             "allenai/Molmo2-4B, or a model folder)")
        from .engine import Molmo2Engine

        return Molmo2Engine(config)
    raise ValueError(f"unknown engine '{kind}': use {' or '.join(ENGINE_KINDS)}")
