"""A real vLLM server for the tests (tiny model on 127.0.0.1): conftest's session fixture `vllm_server` starts one
for the test_vllm* modules; every server is always stopped: on teardown, on failure and at interpreter exit."""

from __future__ import annotations

import atexit
from pathlib import Path

import pytest

from scripts.vllm_server import TINY_MODEL, VLLM_PYTHON, VllmServer

needs_vllm = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm: run `make setup-vllm`")
START_TIMEOUT_S = 600.0  # start-up is 35-95 s on 2 idle cores; other work on the machine makes it slower


def start_server(log_dir: Path, port: int = 0) -> VllmServer:
    """Start (and register for stopping at exit) a tiny-model server."""
    server = VllmServer(TINY_MODEL, port=port, log=log_dir / f"vllm_{port or 'auto'}.log")
    atexit.register(server.stop)
    server.start(START_TIMEOUT_S)
    return server
