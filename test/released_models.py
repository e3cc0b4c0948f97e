"""Released Molmo2 configurations as random-weight models: real widths, real token ids, optionally fewer layers.

No weights or vocabulary files are public here, so the tokenizer is byte-level (no merges) padded to the real
vocabulary size, with every added token of the release at its real id (`test/fixtures/released/`); ordinary text
therefore tokenizes differently from the real tokenizer, but every special and vision token has its real id and
the embedding / lm_head have their real shapes. Processor settings are the released ones.

Used by the real-width tests, `bench/bench_realsize.py` and `bench/gpu_check.py` (which add test/ to sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

from molmo2_ros.core.memory_plan import RELEASED, RELEASED_DIR

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "released"
# Short names used by tests and benches -> Hub ids.
MODELS = {"molmo2-4b": "allenai/Molmo2-4B", "molmo2-8b": "allenai/Molmo2-8B", "molmo2-o-7b": "allenai/Molmo2-O-7B"}


def hub_config(name: str) -> dict:
    """The released config.json (package data) of `name` (short name or Hub id)."""
    hub_id = MODELS.get(name, name)
    return json.loads((RELEASED_DIR / RELEASED[hub_id]).read_text())


def _fixture(name: str, file: str):
    path = FIXTURES / _short(name) / file
    return path.read_text() if file.endswith(".jinja") else json.loads(path.read_text())


def _short(name: str) -> str:
    return next((k for k, v in MODELS.items() if name in (k, v)), name)


def model_config(name: str, text_layers: int | None = None, vit_layers: int | None = None,
                 init_std: float | None = None, attn_implementation: str | None = None):
    """`Molmo2Config` of the release, with `text_layers` / `vit_layers` (None = full depth) and, for random
    weights, `init_std` as the initializer range of every part."""
    from transformers import Molmo2Config

    config = Molmo2Config(**hub_config(name))
    if text_layers is not None:
        full_layers = config.text_config.num_hidden_layers
        config.text_config.num_hidden_layers = text_layers
        # Keep scaled and unscaled RoPE layers both present when the release mixes them (O-7B).
        kept = [i for i in config.text_config.rope_scaling_layers if i < text_layers]
        mixed = len(config.text_config.rope_scaling_layers) < full_layers
        config.text_config.rope_scaling_layers = kept or ([text_layers - 1] if mixed else list(range(text_layers)))
    if vit_layers is not None:
        # Keep the adapter reading two different layers (the release reads 24 and 18 of 25 built).
        config.vision_config.num_hidden_layers = vit_layers
        config.adapter_config.vision_feature_layer = [vit_layers - 1, max(0, vit_layers - 2)]
    if init_std is not None:
        for part in (config, config.text_config, config.vision_config, config.adapter_config):
            part.initializer_range = init_std
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return config


def build_tokenizer(name: str):
    """Byte-level tokenizer with the release's vocabulary size and added tokens at their real ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    s = _fixture(name, "tokenizer_settings.json")
    added = [tuple(t) for t in s["added_tokens"]]
    if s["extra_tokens"]:
        e = s["extra_tokens"]
        added += [(e["first_id"] + i, e["format"].format(i), e["special"]) for i in range(e["count"])]
    added.sort()
    by_id = {i: content for i, content, _ in added}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    size = max(by_id) + 1
    # Ids that are neither bytes nor added tokens hold fillers that no merge can produce: the vocabulary keeps its
    # real size, and an id the random model generates still decodes to some text.
    vocab = {}
    for i in range(size):
        vocab[by_id.get(i) or (alphabet[i] if i < len(alphabet) else f"[{i}]")] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken(c, special=sp, normalized=False) for _, c, sp in added])
    additional = [c for _, c, sp in added if sp and c not in (s["bos_token"], s["eos_token"], s["pad_token"])]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=s["bos_token"], eos_token=s["eos_token"], pad_token=s["pad_token"],
        additional_special_tokens=additional, model_max_length=s["model_max_length"],
        clean_up_tokenization_spaces=s["clean_up_tokenization_spaces"], chat_template=_fixture(name,
                                                                                               "chat_template.jinja"))
    wrong = [(i, c) for i, c, _ in added if tokenizer.convert_tokens_to_ids(c) != i]
    if wrong:
        raise RuntimeError(f"added tokens not at their real ids: {wrong[:5]}")
    return tokenizer


def build_processor(name: str, tokenizer=None):
    """`Molmo2Processor` with the release's image, video and processor settings."""
    from transformers import Molmo2ImageProcessor, Molmo2Processor, Molmo2VideoProcessor

    image = _fixture(name, "preprocessor_config.json")
    video = _fixture(name, "video_preprocessor_config.json")
    proc = _fixture(name, "processor_config.json")
    image_kwargs = {k: image[k] for k in ("do_convert_rgb", "image_mean", "image_std", "max_crops", "overlap_margins",
                                         "patch_size", "pooling_size", "resample", "size")}
    video_kwargs = {k: video[k] for k in ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize", "rescale_factor",
                                         "image_mean", "image_std", "resample", "size", "patch_size", "pooling_size",
                                         "do_sample_frames", "frame_sample_mode", "num_frames", "max_fps",
                                         "sampling_fps")}
    return Molmo2Processor(
        image_processor=Molmo2ImageProcessor(do_rescale=True, do_normalize=True, **image_kwargs),
        video_processor=Molmo2VideoProcessor(**video_kwargs),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(name),
        chat_template=_fixture(name, "chat_template.jinja"),
        **{k: v for k, v in proc.items() if k != "processor_class"},
    )


def build_model(name: str, text_layers: int | None = 2, vit_layers: int | None = 2, dtype=None, seed: int = 0,
                init_std: float = 0.02, device: str = "cpu", attn_implementation: str = "sdpa"):
    """Random-weight `Molmo2ForConditionalGeneration` of the release at real width (depth reduced unless None),
    built directly in `dtype` (default bfloat16: half the host memory while building) on `device`."""
    import torch
    from transformers import GenerationConfig, Molmo2ForConditionalGeneration

    config = model_config(name, text_layers, vit_layers, init_std, attn_implementation)
    gen = _fixture(name, "generation_config.json")
    torch.manual_seed(seed)
    with torch.device(device):
        model = Molmo2ForConditionalGeneration._from_config(config, dtype=dtype or torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=gen["bos_token_id"], eos_token_id=gen["eos_token_id"],
                                               pad_token_id=gen["pad_token_id"])
    return model.eval()


def save_model(name: str, out_dir: str | Path, **build_kwargs) -> Path:
    """Build (see `build_model`) and save model + processor to `out_dir` for loading through the engine's loader;
    the model is freed before returning."""
    import gc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(name, **build_kwargs)
    model.save_pretrained(out)
    del model
    gc.collect()
    build_processor(name).save_pretrained(out)
    return out


def reference_answer(engine, clip, query, max_new_tokens: int) -> str:
    """The answer without the engine's reuses: the stock processor + `generate` on the whole clip when every frame
    has the released pooling, else the whole clip's mixed-pooling inputs (`Molmo2InputBuilder`) + `generate`."""
    import numpy as np
    import torch

    from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder, chat_text, video_metadata
    from molmo2_ros.core.prompts import build_prompt

    proc, model = engine.processor, engine.model
    images = np.stack([f.frame.image for f in clip.frames])
    prompt = build_prompt(query)
    if {f.pooling for f in clip.frames} == {tuple(proc.video_processor.pooling_size)}:
        inputs = proc(text=chat_text(proc, prompt), videos=[images],
                      video_metadata=[video_metadata(clip.relative_times(), clip.width, clip.height)],
                      do_sample_frames=False, return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
        length = inputs["input_ids"].shape[1]
    else:
        builder = Molmo2InputBuilder(proc)
        tokens = builder.tokens(clip, prompt)
        vision = builder.clip_vision_inputs(clip, builder.frame_patches(images))
        inputs = dict(input_ids=tokens.input_ids, attention_mask=torch.ones_like(tokens.input_ids),
                      mm_token_type_ids=tokens.mm_token_type_ids, **vision)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
        length = tokens.input_ids.shape[1]
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=proc.tokenizer.pad_token_id)
    return proc.tokenizer.decode(out[0, length:], skip_special_tokens=True)


def video_features(features):
    """`mm_encoder_outputs` for `generate`/`forward` from pooled video features [tokens, hidden]."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"video": BaseModelOutputWithPooling(pooler_output=(features,))}


def measure_memory(folder: str | Path, window_s: float, queries: int, max_new_tokens: int) -> dict:
    """RSS of a fresh process (no earlier model in its allocator) that loads `folder` in float32 on the CPU and
    answers `queries` queries on one uniform window: {'base', 'after_load', 'load_peak', 'peak'} in bytes, peaks
    sampled every 10 ms; `peak` is while answering. (Loading a bfloat16 checkpoint as float32 briefly holds both:
    `load_peak` is about twice the weights; a GPU load keeps the stored dtype and is not measured here.)"""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from released_models import _memory_probe; "
            "_memory_probe(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))")
    run = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(folder),
                          str(window_s), str(queries), str(max_new_tokens)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"memory probe failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _memory_probe(folder: str, window_s: float, queries: int, max_new_tokens: int) -> None:
    import threading

    import numpy as np
    import psutil
    import torch

    from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.sampling import SlowFastConfig
    from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind

    torch.set_num_threads(1)
    rng = np.random.RandomState(0)
    buf = ClipBuffer(BufferConfig(window_s=window_s, stride_s=1.0), SlowFastConfig(enabled=False))
    clip = [c for i in range(int(window_s * 2) + 3)
            if (c := buf.push(Frame(i * NS_PER_S // 2, rng.randint(0, 255, (240, 320, 3), np.uint8), "cam")))][-1]
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    engine = Molmo2Engine(EngineConfig(model=folder, device="cpu", dtype="float32", max_new_tokens=max_new_tokens))
    engine.load()
    after_load = proc.memory_info().rss
    load_peak, peak[0] = peak[0], after_load
    pool = [Query(f"q{i}", TaskKind.POINT, f"object {i}") for i in range(queries)]
    result = engine.infer(clip, pool)
    stop.set()
    sampler.join()
    if result.error:
        raise RuntimeError(result.error)
    print(json.dumps({"base": base, "after_load": after_load, "load_peak": load_peak, "peak": peak[0],
                      "frames": len(clip.frames)}))
