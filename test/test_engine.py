"""Molmo2 engine on a tiny random model: inputs equal the stock processor's, both reuses are exact, faults are
handled, loading errors say what to do."""

import json
import shutil
import socket

import numpy as np
import pytest
import torch

from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
from molmo2_ros.core.engine import EngineConfig, ModelLoadError, Molmo2Engine
from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder, chat_text, video_metadata
from molmo2_ros.core.prompts import build_prompt
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind

from _models import tiny_model_dir

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

QUERIES = [Query("a", TaskKind.POINT, "red ball"), Query("b", TaskKind.COUNT, "cubes"),
           Query("c", TaskKind.TRACK, "person"), Query("d", TaskKind.QUESTION, "What is moving?")]
T0 = 1_700_000_000 * NS_PER_S


def clips(slowfast: SlowFastConfig, n_frames=45, window_s=3.0, size=(48, 64)):
    """Sliding-window clips over random 10 Hz frames with slightly irregular stamps."""
    rng = np.random.RandomState(1)
    buf = ClipBuffer(BufferConfig(window_s=window_s, stride_s=1.0), slowfast)
    out = []
    for i in range(n_frames):
        stamp = T0 + i * NS_PER_S // 10 + (i % 3) * 1_000_000
        clip = buf.push(Frame(stamp, rng.randint(0, 255, (*size, 3), np.uint8), "cam"))
        if clip is not None:
            out.append(clip)
    return out


@pytest.fixture(scope="module")
def engine():
    e = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), max_new_tokens=12))
    e.load()
    return e


def stock_answer(engine, clip, query, max_new_tokens=12):
    """The seed recipe: stock processor over all clip frames, then generate."""
    proc = engine.processor
    images = np.stack([f.frame.image for f in clip.frames])
    inputs = proc(text=chat_text(proc, build_prompt(query)), videos=[images],
                  video_metadata=[video_metadata(clip.relative_times(), clip.width, clip.height)],
                  do_sample_frames=False, return_tensors="pt")
    out = engine.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return proc.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_uniform_inputs_bit_identical_to_stock_processor(engine):
    builder = Molmo2InputBuilder(engine.processor)
    for clip in clips(SlowFastConfig(enabled=False))[:3]:
        images = np.stack([f.frame.image for f in clip.frames])
        prompt = build_prompt(QUERIES[0])
        stock = engine.processor(text=chat_text(engine.processor, prompt), videos=[images],
                                 video_metadata=[video_metadata(clip.relative_times(), clip.width, clip.height)],
                                 do_sample_frames=False, return_tensors="pt")
        tokens = builder.tokens(clip, prompt)
        vision = builder.clip_vision_inputs(clip, builder.frame_patches(images))
        assert torch.equal(tokens.input_ids, stock["input_ids"])
        assert torch.equal(tokens.mm_token_type_ids, stock["mm_token_type_ids"])
        for key, value in vision.items():
            assert torch.equal(value, stock[key]), key


def test_slowfast_inputs_carry_per_frame_token_counts(engine):
    builder = Molmo2InputBuilder(engine.processor)
    clip = clips(SlowFastConfig(key_every=2))[-1]
    assert {f.pooling for f in clip.frames} == {(3, 3), (5, 5)}
    tokens = builder.tokens(clip, "Describe this video.")
    patch_id = engine.processor.tokenizer.convert_tokens_to_ids("<im_patch>")
    assert int((tokens.input_ids == patch_id).sum()) == clip.num_visual_tokens
    images = np.stack([f.frame.image for f in clip.frames])
    vision = builder.clip_vision_inputs(clip, builder.frame_patches(images))
    assert vision["video_token_pooling"].shape == (clip.num_visual_tokens, 25)  # padded to the 5x5 rows
    assert vision["video_grids"].tolist() == [[1, clip.num_visual_tokens, 1]]


def test_engine_equals_stock_path_over_sliding_windows(engine):
    """Per-frame feature cache + shared prefix give the stock path's greedy tokens in every window."""
    engine._features.clear()
    windows = clips(SlowFastConfig(enabled=False))
    seen: set[int] = set()
    for clip in windows:
        result = engine.infer(clip, QUERIES)
        assert not result.error
        new_frames = len({s for s in clip.stamps_ns} - seen)
        seen |= set(clip.stamps_ns)
        assert result.vision_frames_encoded == new_frames
        assert [g.text for g in result.generations] == [stock_answer(engine, clip, q) for q in QUERIES]
    assert len({g.text for c in windows[:2] for g in engine.infer(c, QUERIES).generations}) > 1


def test_shared_prefix_prefills_video_once(engine):
    clip = clips(SlowFastConfig(enabled=False))[-1]
    plain = Molmo2Engine(EngineConfig(model=engine.config.model, max_new_tokens=12, reuse_prefix=False,
                                      cache_features=False))
    plain.model, plain.processor, plain.builder = engine.model, engine.processor, Molmo2InputBuilder(engine.processor)
    sequential = Molmo2Engine(EngineConfig(model=engine.config.model, max_new_tokens=12, batch_queries=False))
    sequential.model, sequential.processor, sequential.builder = plain.model, plain.processor, plain.builder
    a = engine.infer(clip, QUERIES)
    b = plain.infer(clip, QUERIES)
    c = sequential.infer(clip, QUERIES)
    assert [g.text for g in a.generations] == [g.text for g in b.generations] == [g.text for g in c.generations]
    assert c.prefill_tokens == a.prefill_tokens
    assert b.prefill_tokens > 3 * a.prefill_tokens
    assert b.vision_frames_encoded == len(clip.frames)


def test_slowfast_cached_equals_whole_clip_mixed_inputs(engine):
    engine._features.clear()
    builder = Molmo2InputBuilder(engine.processor)
    for clip in clips(SlowFastConfig(key_every=3)):
        result = engine.infer(clip, QUERIES[:2])
        for query, gen in zip(QUERIES[:2], result.generations):
            tokens = builder.tokens(clip, build_prompt(query))
            images = np.stack([f.frame.image for f in clip.frames])
            vision = builder.clip_vision_inputs(clip, builder.frame_patches(images))
            out = engine.model.generate(input_ids=tokens.input_ids, attention_mask=torch.ones_like(tokens.input_ids),
                                        mm_token_type_ids=tokens.mm_token_type_ids, **vision,
                                        max_new_tokens=12, do_sample=False)
            text = engine.processor.tokenizer.decode(out[0, tokens.input_ids.shape[1]:], skip_special_tokens=True)
            assert gen.text == text


def test_cuda_oom_retries_with_fewer_frames(engine, monkeypatch):
    clip = clips(SlowFastConfig(enabled=False))[-1]
    engine._features.clear()
    real = engine.model.get_video_features
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine.model, "get_video_features", flaky)
    result = engine.infer(clip, QUERIES[:1])
    assert not result.error and result.oom_retries == 1
    assert len(result.clip.frames) == len(clip.frames) // 2
    assert result.clip.end_ns == clip.end_ns


def test_max_new_tokens_is_enforced(engine):
    clip = clips(SlowFastConfig(enabled=False))[-1]
    result = engine.infer(clip, QUERIES, max_new_tokens=3)
    assert all(0 < g.num_new_tokens <= 3 for g in result.generations)


def test_exception_in_inference_is_reported_and_next_clip_runs(engine, monkeypatch):
    clip = clips(SlowFastConfig(enabled=False))[-1]
    real = engine.model.generate
    monkeypatch.setattr(engine.model, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    broken = engine.infer(clip, QUERIES[:1])
    assert "boom" in broken.error and broken.generations == []
    monkeypatch.setattr(engine.model, "generate", real)
    assert not engine.infer(clip, QUERIES[:1]).error


def test_load_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Molmo2Engine(EngineConfig(model=str(tmp_path / "missing"))).load()
    with pytest.raises(ModelLoadError, match="no config.json"):
        Molmo2Engine(EngineConfig(model=str(tmp_path))).load()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir(), corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        Molmo2Engine(EngineConfig(model=str(corrupt))).load()
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cuda")).load()


def test_offline_hub_id_fails_clearly_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    opened = []
    real_connect = socket.socket.connect

    def no_connect(self, address):
        opened.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        Molmo2Engine(EngineConfig(model="allenai/Molmo2-4B")).load()
    assert opened == []


def test_folder_with_custom_code_is_loaded_natively(tmp_path):
    """trust_remote_code is never passed: a folder's own modeling code is not executed."""
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir(), folder)
    marker = tmp_path / "executed"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageTextToText": "modeling_evil.Evil", "AutoConfig": "modeling_evil.Cfg"}
    (folder / "config.json").write_text(json.dumps(config))
    engine = Molmo2Engine(EngineConfig(model=str(folder)))
    engine.load()
    assert type(engine.model).__name__ == "Molmo2ForConditionalGeneration"
    assert not marker.exists()


def test_confidence_is_the_mean_logprob_of_the_coordinate_tokens(engine):
    """The engine reports the mean log-probability of the digits inside coords="..." (NaN without coordinates):
    recomputed here from one full forward pass per answer token."""
    from molmo2_ros.core.engine import ChosenLogProb, coordinate_confidence

    tok = engine.processor.tokenizer
    text = '<points coords="0.5 1 100 200">cup</points>'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    lps = [-(i + 1.0) for i in range(len(ids))]
    digits = [k for k, i in enumerate(ids) if any(c.isdigit() for c in tok.decode([i]))
              and text.index('coords="') < sum(len(tok.decode([j])) for j in ids[:k + 1]) <= text.index('">')]
    assert digits and coordinate_confidence(tok, ids, lps, text) == pytest.approx(sum(lps[k] for k in digits)
                                                                                   / len(digits))
    assert np.isnan(coordinate_confidence(tok, ids[:3], lps[:3], tok.decode(ids[:3])))
    # the recorded per-step values are the log-softmax of the token greedy decoding picked
    clip = clips(SlowFastConfig(enabled=False))[-1]
    tokens = engine.builder.tokens(clip, build_prompt(QUERIES[0]))
    images = np.stack([f.frame.image for f in clip.frames])
    vision = engine.builder.clip_vision_inputs(clip, engine.builder.frame_patches(images))
    recorder = ChosenLogProb()
    out = engine.model.generate(input_ids=tokens.input_ids, attention_mask=torch.ones_like(tokens.input_ids),
                                mm_token_type_ids=tokens.mm_token_type_ids, **vision, max_new_tokens=6,
                                do_sample=False, logits_processor=[recorder], output_scores=True,
                                return_dict_in_generate=True)
    expected = [torch.log_softmax(step[0].float(), -1).max().item() for step in out.scores]
    assert recorder.row(0) == pytest.approx(expected, abs=1e-5)
    generations = engine.infer(clip, QUERIES).generations
    assert all(np.isnan(g.confidence) == ('coords="' not in g.text) for g in generations)
