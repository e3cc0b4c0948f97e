"""Quantized weights: the transformers quantization config the engine asks for, and what runs on the CPU (tiny
model, bitsandbytes int8 and NF4): memory lower, vision encoder untouched, logits close to the unquantized ones.
CUDA-only behaviour (bf16 compute on the GPU, GPU memory) is covered by bench/gpu_check.py."""

import sys

import numpy as np
import pytest
import torch

from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
from molmo2_ros.core.engine import (QUANTIZATION_SKIP_MODULES, EngineConfig, ModelLoadError, Molmo2Engine,
                                    quantization_config)
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind

from _models import tiny_model_dir
from released_models import video_features

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

QUERIES = [Query("a", TaskKind.POINT, "red ball"), Query("b", TaskKind.QUESTION, "What is moving?")]


def test_configs_handed_to_transformers():
    assert quantization_config("none", torch.bfloat16) is None
    int8 = quantization_config("int8", torch.bfloat16)
    assert int8.load_in_8bit and int8.llm_int8_skip_modules == QUANTIZATION_SKIP_MODULES
    int4 = quantization_config("int4", torch.bfloat16)
    assert int4.load_in_4bit and int4.bnb_4bit_quant_type == "nf4" and int4.bnb_4bit_use_double_quant
    assert int4.bnb_4bit_compute_dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="use none, int8 or int4"):
        quantization_config("int3", torch.float32)


def test_missing_bitsandbytes_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ModelLoadError, match=r"pip install bitsandbytes==0\.50\.2"):
        Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", quantization="int8")).load()


def _clip():
    rng = np.random.RandomState(1)
    buf = ClipBuffer(BufferConfig(window_s=3.0, stride_s=1.0), SlowFastConfig())
    clips = [c for i in range(40)
             if (c := buf.push(Frame(i * NS_PER_S // 10, rng.randint(0, 255, (48, 64, 3), np.uint8), "cam")))]
    return clips[-1]


def _last_logits(engine, clip):
    features, _ = engine._clip_features(clip)
    tokens = engine.builder.tokens(clip, "Point to the ball.")
    with torch.inference_mode():
        out = engine.model(input_ids=tokens.input_ids, attention_mask=torch.ones_like(tokens.input_ids),
                           mm_token_type_ids=tokens.mm_token_type_ids, mm_encoder_outputs=video_features(features))
    return out.logits[0, -1].float()


@pytest.fixture(scope="module")
def reference():
    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", max_new_tokens=8))
    engine.load()
    clip = _clip()
    return engine.model.get_memory_footprint(), _last_logits(engine, clip), clip


@pytest.mark.parametrize("quantization,min_corr", [("int8", 0.995), ("int4", 0.9)])
def test_quantized_tiny_model_runs_on_cpu(reference, quantization, min_corr):
    pytest.importorskip("bitsandbytes")
    footprint, logits, clip = reference
    engine = Molmo2Engine(EngineConfig(model=str(tiny_model_dir()), device="cpu", quantization=quantization,
                                       max_new_tokens=8))
    engine.load()
    kinds = {name: type(module).__name__ for name, module in engine.model.named_modules()}
    assert kinds["model.language_model.layers.0.self_attn.q_proj"] != "Linear"
    assert kinds["model.vision_tower.layers.0.self_attn.q_proj"] == "Linear"
    assert kinds["lm_head"] == "Linear"
    assert engine.model.get_memory_footprint() < 0.75 * footprint
    quantized = _last_logits(engine, clip)
    assert float(torch.corrcoef(torch.stack([logits, quantized]))[0, 1]) > min_corr
    assert int(quantized.argmax()) == int(logits.argmax())
    result = engine.infer(clip, QUERIES)
    assert not result.error and len(result.generations) == 2
