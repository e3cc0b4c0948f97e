"""Memory planner: exact parameter counts of the released configs, the full-size numbers on paper, SlowFast token
counts, frames as the clip buffer makes them, and the refusal message. CPU measurement at real width (within
20 %) is `test_released_models.py::test_planner_matches_measured_memory` and `make bench-realsize`."""

import numpy as np
import pytest

from molmo2_ros.core import memory_plan as mp
from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
from molmo2_ros.core.sampling import SLOWFAST_PRESETS, SlowFastConfig
from molmo2_ros.core.types import NS_PER_S, Frame

GIB = 2 ** 30


def test_parameter_counts_equal_the_releases():
    # 4B: the Hub's model.safetensors.index.json total_parameters; 8B: the Hub page's 8.66 B (BRIEF section 6).
    assert mp.geometry("allenai/Molmo2-4B").parameters() == 4_850_869_200
    assert mp.geometry("allenai/Molmo2-8B").parameters() == 8_661_703_120
    assert mp.geometry("allenai/Molmo2-O-7B").parameters() == 7_760_786_896


def test_parameter_count_equals_the_transformers_model():
    """The formula against the model transformers builds (on the meta device: no memory), for every release."""
    torch = pytest.importorskip("torch")
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    for model in mp.RELEASED:
        config, _ = mp.load_config(model)
        with torch.device("meta"):
            built = Molmo2ForConditionalGeneration(Molmo2Config(**config))
        assert sum(p.numel() for p in built.parameters()) == mp.geometry(model).parameters(), model


def test_full_size_numbers_on_paper():
    p8 = mp.plan("allenai/Molmo2-8B", mp.Setting(dtype="bfloat16"))
    assert p8.weights / GIB == pytest.approx(16.13, abs=0.01)
    assert p8.kv_per_token == 147_456
    assert mp.plan("allenai/Molmo2-4B").weights / GIB == pytest.approx(9.04, abs=0.01)
    assert mp.plan("allenai/Molmo2-4B").kv_per_token == 147_456
    # O-7B: 32 layers x 32 KV heads (no grouped-query attention) x 128 x 2 x 2 bytes.
    assert mp.plan("allenai/Molmo2-O-7B").kv_per_token == 524_288


def test_quantization_lowers_weights():
    none, int8, int4 = (mp.plan("allenai/Molmo2-8B", mp.Setting(quantization=q)).weights
                        for q in ("none", "int8", "int4"))
    assert int4 < int8 < none
    # Only the text decoder's linear layers are quantized: embeddings, lm_head and vision stay bf16.
    g = mp.geometry("allenai/Molmo2-8B")
    assert none - int8 == pytest.approx(g.text_linear_parameters() * 1.0 - g.text_linear_rows() * 4, rel=1e-9)


@pytest.mark.parametrize("window_s,fps,max_frames", [(8.0, 2.0, 128), (3.0, 2.0, 128), (8.0, 2.0, 5),
                                                     (4.0, 1.0, 128), (0.4, 2.0, 128)])
def test_frames_and_tokens_as_the_clip_buffer_makes_them(window_s, fps, max_frames):
    setting = mp.Setting(window_s=window_s, sample_fps=fps, max_frames=max_frames)
    for preset in SLOWFAST_PRESETS.values():
        buf = ClipBuffer(BufferConfig(window_s=window_s, stride_s=0.5, sample_fps=fps, max_frames=max_frames), preset)
        clips = [c for i in range(100) if (c := buf.push(Frame(i * NS_PER_S // 10, np.zeros((8, 8, 3), np.uint8),
                                                                "cam"))) is not None]
        s = mp.Setting(window_s=window_s, sample_fps=fps, max_frames=max_frames, slowfast=preset.enabled,
                       slow_pooling=preset.slow_pooling[0], fast_pooling=preset.fast_pooling[0],
                       key_every=preset.key_every)
        assert max(len(c.frames) for c in clips) == setting.frames
        # The planner counts the worst alignment of key frames: never fewer tokens than a real clip.
        assert max(c.num_visual_tokens for c in clips) == s.visual_tokens()


def test_default_slowfast_plan_saves_tokens():
    default, detail, uniform = (SLOWFAST_PRESETS[k] for k in ("default", "detail", "uniform"))
    assert default == SlowFastConfig() and default.slow_pooling == (3, 3) and default.fast_pooling == (5, 5)
    assert uniform.mean_tokens_per_frame() == 81
    assert default.mean_tokens_per_frame() == pytest.approx(47.25)
    assert uniform.mean_tokens_per_frame() / default.mean_tokens_per_frame() >= 1.5
    assert detail.mean_tokens_per_frame() == pytest.approx(109.75)
    full = mp.Setting(window_s=64.0, max_frames=128)
    assert full.visual_tokens() == 32 * 81 + 96 * 36
    assert mp.Setting(window_s=64.0, max_frames=128, slowfast=False).visual_tokens() == 128 * 81


def test_plan_table_names_every_part():
    text = mp.plan("allenai/Molmo2-4B", mp.Setting(queries=8)).table()
    for part in ("weights", "KV cache", "vision feature cache", "activations", "per camera", "node peak", "147,456 B/token"):
        assert part in text


def test_refusal_is_empty_when_it_fits():
    assert mp.refusal("allenai/Molmo2-4B", mp.Setting(), free_bytes=70 * GIB, total_bytes=80 * GIB) == ""


def test_refusal_names_what_to_lower_and_the_peak():
    setting = mp.Setting(window_s=64.0, max_frames=128, queries=8, max_new_tokens=512)
    p = mp.plan("allenai/Molmo2-8B", setting)
    free = p.weights + 2 * GIB  # room for the weights but not for 128 frames x 8 queries
    message = mp.refusal("allenai/Molmo2-8B", setting, free_bytes=int(free + GIB * 1.2), total_bytes=24 * GIB)
    assert message.startswith(f"predicted GPU memory {p.peak / GIB:.2f} GiB")
    assert "max_frames 128 -> " in message and "window_s" in message
    lowered = int(message.split("max_frames 128 -> ")[1].split()[0])
    assert mp.refusal("allenai/Molmo2-8B", mp.Setting(window_s=64.0, max_frames=lowered, queries=8,
                                                     max_new_tokens=512),
                      free_bytes=int(free + GIB * 1.2), total_bytes=24 * GIB) == ""


def test_refusal_when_weights_alone_do_not_fit():
    message = mp.refusal("allenai/Molmo2-8B", mp.Setting(), free_bytes=12 * GIB, total_bytes=16 * GIB)
    assert "set quantization to int8" in message and "weights alone" in message
    message = mp.refusal("allenai/Molmo2-8B", mp.Setting(), free_bytes=5 * GIB, total_bytes=8 * GIB)
    assert "smaller model" in message


def test_cameras_share_the_weights_and_add_their_caches():
    """One node serves every camera with one model: weights count once; each camera adds its KV and feature
    caches, and the batched prefill grows with the cameras."""
    one = mp.plan("allenai/Molmo2-4B", mp.Setting(cameras=1))
    three = mp.plan("allenai/Molmo2-4B", mp.Setting(cameras=3))
    assert three.weights == one.weights
    assert three.peak - one.peak >= 2 * one.per_camera
    assert three.peak < 3 * one.peak


def test_bad_settings_and_models_are_refused():
    with pytest.raises(ValueError, match="quantization"):
        mp.Setting(quantization="int3")
    with pytest.raises(ValueError, match="dtype"):
        mp.Setting(dtype="int8")
    with pytest.raises(ValueError, match="no config"):
        mp.geometry("allenai/Molmo3-1B")


def test_node_parameters_map_to_a_setting():
    """The node's parameter defaults (core/settings.py) as the planner sees them; what configure would check."""
    from molmo2_ros.core.settings import SPECS, memory_setting

    values = {name: spec.default for name, spec in SPECS.items()}
    setting = memory_setting(values, queries=4)
    assert (setting.dtype, setting.quantization, setting.slowfast) == ("bfloat16", "none", True)
    assert (setting.slow_pooling, setting.fast_pooling, setting.key_every) == (3, 5, 4)
    assert setting.frames == 16 and setting.visual_tokens() == 756
    assert memory_setting(values, queries=0, cuda=False).dtype == "float32"
    assert mp.refusal("allenai/Molmo2-4B", setting, free_bytes=23 * GIB, total_bytes=24 * GIB) == ""
    assert "quantization" in mp.refusal("allenai/Molmo2-8B", setting, free_bytes=15 * GIB, total_bytes=16 * GIB)
