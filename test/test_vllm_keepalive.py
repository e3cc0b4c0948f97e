"""The vLLM client never sends a request on a kept-alive connection the server may be closing.

vLLM's HTTP server closes a connection idle for 5 s (`VLLM_HTTP_TIMEOUT_KEEP_ALIVE`), and httpx keeps idle
connections 5 s by default: a request sent just as the server closes its connection is lost ("disconnect", seen in
test_vllm.py after a 5 s pause between clips). The instrument below is a stdlib HTTP/1.1 server that answers like
vLLM's routes but treats a connection idle for longer than IDLE_CLOSE_S as closing: the next request on it gets no
answer, which is what the client sees in that race, made deterministic.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig, whole_clips
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.types import Frame, Query, TaskKind
from molmo2_ros.core.vllm_engine import VllmConfig, VllmEngine

pytestmark = pytest.mark.ros_free

IDLE_CLOSE_S = 3.0
ANSWER = {"choices": [{"message": {"content": "There are none."}}], "usage": {"prompt_tokens": 10,
                                                                              "completion_tokens": 4}}


class ClosingServer(BaseHTTPRequestHandler):
    """One handler per connection: a request that arrives after IDLE_CLOSE_S of idleness is dropped unanswered."""

    protocol_version = "HTTP/1.1"
    idle_since: float | None = None

    def _reply(self, body: dict) -> None:
        if self.idle_since is not None and time.monotonic() - self.idle_since > IDLE_CLOSE_S:
            self.close_connection = True
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.idle_since = time.monotonic()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._reply({"data": [{"id": "tiny"}]} if self.path.endswith("/models") else {"version": "test"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply(ANSWER)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ClosingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def two_requests_with_a_pause(url: str, keepalive_s: float) -> list[str]:
    """The errors of two one-query requests from one engine, IDLE_CLOSE_S + 0.5 s apart."""
    frames = [Frame(int(t * 5e8), np.full((48, 64, 3), 128, np.uint8)) for t in range(4)]
    clip = whole_clips(frames, BufferConfig(window_s=1.0, stride_s=0.5), SlowFastConfig(enabled=False), 1)[0]
    engine = VllmEngine(VllmConfig(server_url=url, keepalive_s=keepalive_s, max_inflight=1))
    engine.load()
    try:
        first = engine.infer(clip, [Query("q", TaskKind.POINT, "ball")])
        time.sleep(IDLE_CLOSE_S + 0.5)
        second = engine.infer(clip, [Query("q", TaskKind.POINT, "ball")])
    finally:
        engine.unload()
    return [first.error, second.error]


def test_an_idle_connection_is_not_reused_after_the_keepalive(server_url):
    assert two_requests_with_a_pause(server_url, VllmConfig.keepalive_s) == ["", ""]


def test_the_instrument_reproduces_the_lost_request_with_httpx_default_keepalive(server_url):
    errors = two_requests_with_a_pause(server_url, 5.0)
    assert errors[0] == "" and "disconnect" in errors[1], errors
