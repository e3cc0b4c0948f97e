"""Tiny Molmo2 models for tests, built once per test session (offline, ~1 s)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from scripts.tiny_model import TinySpec, build_tiny_model


@functools.lru_cache(maxsize=None)
def tiny_model_dir(seed: int = 0) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="molmo2_tiny_"))
    atexit.register(shutil.rmtree, folder, True)
    return build_tiny_model(folder, TinySpec(seed=seed))
