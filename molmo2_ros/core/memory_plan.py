"""GPU memory planner for a Molmo2 node: what a setting needs before the model is loaded (pure Python, no torch).

The plan adds up, per node (one node per camera, each with its own model, as the node runs today):
- weights: parameter count from the model's config (exact for the released configs, see test) times the bytes per
  parameter of the dtype, or of the quantized format for the text model's linear layers;
- KV cache: 2 (K, V) x layers x KV heads x head_dim x dtype bytes per token, for the prompt of every standing query
  plus its answer; batched decoding copies the shared video prefix once per query (`batch_repeat_interleave`);
- cached vision features: the engine keeps pooled features (visual tokens x text hidden size) of up to two full
  clips (its default `feature_cache_frames` = 0 keeps twice the largest clip);
- activation peak: the largest transient of one window, either the vision encoder on the frames not seen before
  (transformers 5.23 keeps every ViT hidden state of all frames it encodes at once) or the prefill of the video
  prefix (MLP intermediate, attention scores with eager attention, logits of the decode step);
- a fixed CUDA context + allocator reserve (`CUDA_RESERVE_BYTES`), only on CUDA.

Numbers are estimates of memory the process holds; `bench/gpu_check.py` measures them on a GPU and
`make bench-realsize` checks the CPU share (weights, caches, activations) against RSS (within 20 %).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

GIB = 2 ** 30
MIB = 2 ** 20
RELEASED_DIR = Path(__file__).resolve().parent / "released"
# Hub ids of the released models -> the config file shipped in molmo2_ros/core/released/ (see SOURCES.md there).
RELEASED = {
    "allenai/Molmo2-4B": "molmo2-4b.json",
    "allenai/Molmo2-8B": "molmo2-8b.json",
    "allenai/Molmo2-O-7B": "molmo2-o-7b.json",
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANTIZATIONS = ("none", "int8", "int4")
# Bytes per weight of the quantized text linear layers, scales included: bitsandbytes LLM.int8 keeps one fp32
# scale per output row (negligible here, added per row below); NF4 packs two weights per byte plus one absmax per
# 64-weight block (double quantization: ~1 byte per block).
QUANT_BYTES_PER_WEIGHT = {"int8": 1.0, "int4": 0.5 + 1.0 / 64}
# The CUDA context (cuBLAS/cuDNN workspaces, kernels) and allocator rounding: measured by bench/gpu_check.py;
# 1 GiB is a conservative start (typical CUDA 12/13 context 0.3-0.6 GiB + caching-allocator slack).
CUDA_RESERVE_BYTES = 1 * GIB
# LLM tokens besides the visual ones, per frame: the timestamp "12.5 " (about 4 tokens with the real tokenizer),
# <im_start>, <im_end> and the separating space; and the chat template + a typical query around the video.
TEXT_TOKENS_PER_FRAME = 7
PROMPT_TOKENS = 32


@dataclass(frozen=True)
class ModelGeometry:
    """The sizes the planner needs, read from a Molmo2 `config.json` (Hub or native transformers layout)."""

    name: str
    text_layers: int
    text_hidden: int
    text_heads: int
    text_kv_heads: int
    head_dim: int
    text_intermediate: int
    vocab: int
    additional_vocab: int
    qk_norm_per_head: bool
    vit_layers: int
    vit_hidden: int
    vit_intermediate: int
    vit_attention_width: int
    patch_pixels: int
    patches_per_frame: int
    patches_per_side: int
    feature_layers: int
    adapter_attention_width: int
    adapter_intermediate: int
    max_position_embeddings: int

    @classmethod
    def from_config(cls, config: dict, name: str = "") -> "ModelGeometry":
        text = config["text_config"]
        vit = config.get("vision_config") or config["vit_config"]
        adapter = config["adapter_config"]
        declared = vit["num_hidden_layers"]
        layers = adapter.get("vision_feature_layer", adapter.get("vit_layers", [-1]))
        # transformers builds the ViT only up to the deepest layer the adapter reads (the released configs declare
        # 27 layers, the weights stop at 24): count what is built.
        built = max(layer % declared for layer in layers) + 1 if "vit_config" in config else declared
        size = vit.get("image_size") or vit.get("image_default_input_size") or [378, 378]
        patch = vit.get("patch_size") or vit.get("image_patch_size") or 14
        heads = text["num_attention_heads"]
        head_dim = text.get("head_dim") or text["hidden_size"] // heads
        return cls(
            name=name, text_layers=text["num_hidden_layers"], text_hidden=text["hidden_size"], text_heads=heads,
            text_kv_heads=text.get("num_key_value_heads") or heads, head_dim=head_dim,
            text_intermediate=text["intermediate_size"], vocab=text["vocab_size"],
            additional_vocab=text.get("additional_vocab_size", 0),
            qk_norm_per_head=text.get("qk_norm_type", "qwen3") == "qwen3", vit_layers=built,
            vit_hidden=vit["hidden_size"], vit_intermediate=vit["intermediate_size"],
            vit_attention_width=vit["num_attention_heads"] * vit.get("head_dim", vit["hidden_size"] //
                                                                     vit["num_attention_heads"]),
            patch_pixels=patch * patch * 3, patches_per_frame=(size[0] // patch) * (size[1] // patch),
            patches_per_side=size[0] // patch, feature_layers=len(layers),
            adapter_attention_width=adapter["num_attention_heads"] * adapter.get("head_dim", 72),
            adapter_intermediate=adapter["intermediate_size"],
            max_position_embeddings=text.get("max_position_embeddings", 0),
        )

    # ---- parameters --------------------------------------------------------------------------------------
    def vision_parameters(self) -> int:
        h, w = self.vit_hidden, self.vit_attention_width
        layer = 3 * (h * w + w) + (w * h + h) + 4 * h + (h * self.vit_intermediate + self.vit_intermediate) \
            + (self.vit_intermediate * h + h)
        return self.patches_per_frame * h + self.patch_pixels * h + h + self.vit_layers * layer

    def adapter_parameters(self) -> int:
        a, d = self.adapter_attention_width, self.vit_hidden * self.feature_layers
        attention = 3 * (d * a + a) + (a * self.vit_hidden + self.vit_hidden)
        return attention + 2 * self.vit_hidden * self.adapter_intermediate + self.adapter_intermediate * self.text_hidden

    def text_linear_parameters(self) -> int:
        """Weights of the decoder layers' linear projections (what int8/int4 quantize)."""
        h, q, kv = self.text_hidden, self.text_heads * self.head_dim, self.text_kv_heads * self.head_dim
        return self.text_layers * (h * q + 2 * h * kv + q * h + 3 * h * self.text_intermediate)

    def text_linear_rows(self) -> int:
        """Output rows of those projections (int8 keeps one fp32 scale per row)."""
        q, kv = self.text_heads * self.head_dim, self.text_kv_heads * self.head_dim
        return self.text_layers * (q + 2 * kv + self.text_hidden + 2 * self.text_intermediate + self.text_hidden)

    def text_other_parameters(self) -> int:
        """Embeddings (base + additional rows), untied lm_head, RMS norms."""
        h = self.text_hidden
        qk = 2 * self.head_dim if self.qk_norm_per_head else (self.text_heads + self.text_kv_heads) * self.head_dim
        return (self.vocab + self.additional_vocab) * h + self.vocab * h + h + self.text_layers * (2 * h + qk)

    def parameters(self) -> int:
        return (self.vision_parameters() + self.adapter_parameters() + self.text_linear_parameters()
                + self.text_other_parameters())

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.text_layers * self.text_kv_heads * self.head_dim * dtype_bytes

    def reduced(self, text_layers: int, vit_layers: int) -> "ModelGeometry":
        """The same widths with fewer layers (the CPU test models)."""
        return replace(self, text_layers=text_layers, vit_layers=vit_layers, name=f"{self.name} ({text_layers}+"
                       f"{vit_layers} layers)")


def load_config(model: str | dict) -> tuple[dict, str]:
    """(config dict, name) for a released Hub id, a model folder or config.json path, or a dict."""
    if isinstance(model, dict):
        return model, str(model.get("_name_or_path", "config"))
    if model in RELEASED:
        return json.loads((RELEASED_DIR / RELEASED[model]).read_text()), model
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"no config for '{model}': use one of {', '.join(RELEASED)} or a model folder / config.json")
    return json.loads(path.read_text()), model


def geometry(model: str | dict) -> ModelGeometry:
    config, name = load_config(model)
    return ModelGeometry.from_config(config, name)


@dataclass(frozen=True)
class Setting:
    """What the node would run: clip sampling, SlowFast plan, queries, generation, dtype and quantization."""

    dtype: str = "bfloat16"
    quantization: str = "none"
    window_s: float = 8.0
    sample_fps: float = 2.0
    max_frames: int = 128
    cameras: int = 1
    queries: int = 4
    max_new_tokens: int = 256
    slow_pooling: int = 3
    fast_pooling: int = 5
    key_every: int = 4
    slowfast: bool = True
    attn_implementation: str = "sdpa"
    feature_cache_frames: int = 0
    cuda: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got '{self.dtype}'")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got '{self.quantization}'")
        if min(self.max_frames, self.cameras, self.queries, self.max_new_tokens, self.key_every) < 1 \
                or self.window_s <= 0 or self.sample_fps <= 0:
            raise ValueError("window_s, sample_fps, max_frames, cameras, queries, max_new_tokens must be positive")

    @property
    def frames(self) -> int:
        """Frames per full clip, as `ClipBuffer` makes them (frames within the window, at most max_frames)."""
        return max(1, min(self.max_frames, math.ceil(self.window_s * self.sample_fps - 1e-9)))

    def visual_tokens(self, patches_per_side: int = 27) -> int:
        """Visual tokens of a full clip; with SlowFast the worst alignment (the most key frames)."""
        def per_frame(p: int) -> int:
            return math.ceil(patches_per_side / p) ** 2
        if not self.slowfast:
            return self.frames * per_frame(3)  # the released uniform 3x3 (SlowFastConfig disabled)
        keys = math.ceil(self.frames / self.key_every)
        return keys * per_frame(self.slow_pooling) + (self.frames - keys) * per_frame(self.fast_pooling)


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted memory of one node serving `setting.cameras` cameras with one model, bytes. kv_cache,
    feature_cache and prefill_activations are per camera: the runtime decodes all cameras' queries in one batch
    and prefills their clips in one batch, and keeps each camera's vision features; weights, the vision encoder's
    activations (one clip at a time) and the reserve are the node's once."""

    model: str
    setting: Setting
    parameters: int
    weights: int
    kv_per_token: int
    prompt_tokens: int
    kv_cache: int
    feature_bytes_per_frame: float
    feature_cache: int
    vision_activations: int
    prefill_activations: int
    reserve: int
    notes: list[str] = field(default_factory=list)

    @property
    def activations(self) -> int:
        return max(self.vision_activations, self.prefill_activations)

    @property
    def per_camera(self) -> int:
        """What each camera adds: its KV cache and feature cache (the prefill batch grows by one clip too)."""
        return self.kv_cache + self.feature_cache

    @property
    def peak(self) -> int:
        cameras = self.setting.cameras
        return (self.weights + self.reserve + cameras * self.per_camera
                + max(self.vision_activations, cameras * self.prefill_activations))

    def table(self) -> str:
        s = self.setting
        rows = [
            ("model", self.model),
            ("setting", f"{s.dtype}, quantization {s.quantization}, {s.frames} frames ({s.window_s:g} s at "
                        f"{s.sample_fps:g} fps, max {s.max_frames}), SlowFast "
                        + (f"{s.slow_pooling}x{s.slow_pooling} keys every {s.key_every} + {s.fast_pooling}x"
                           f"{s.fast_pooling}" if s.slowfast else "off (uniform 3x3)")
                        + f", {s.queries} queries, {s.max_new_tokens} new tokens, {s.cameras} camera(s)"),
            ("parameters", f"{self.parameters:,}"),
            ("weights", _gib(self.weights)),
            ("KV cache", f"{_gib(self.kv_cache)} ({self.kv_per_token:,} B/token x {self.prompt_tokens:,} prompt "
                         f"+ {s.max_new_tokens} new tokens x {s.queries} queries)"),
            ("vision feature cache", f"{_gib(self.feature_cache)} ({self.feature_bytes_per_frame / MIB:.2f} MiB "
                                     "per frame, two clips)"),
            ("activations (peak)", f"{_gib(self.activations)} (vision encoder {_gib(self.vision_activations)}, "
                                   f"prefill {_gib(self.prefill_activations)})"),
            ("CUDA context + allocator", _gib(self.reserve)),
            ("per camera (KV + features)", _gib(self.per_camera)),
            (f"node peak ({s.cameras} camera(s), one model)", _gib(self.peak)),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def as_dict(self) -> dict:
        return {"model": self.model, "parameters": self.parameters, "weights": self.weights,
                "kv_per_token": self.kv_per_token, "prompt_tokens": self.prompt_tokens, "kv_cache": self.kv_cache,
                "feature_cache": self.feature_cache, "vision_activations": self.vision_activations,
                "prefill_activations": self.prefill_activations, "reserve": self.reserve,
                "per_camera": self.per_camera, "peak": self.peak}


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def plan(model: str | dict | ModelGeometry, setting: Setting = Setting()) -> MemoryPlan:
    """Memory a node needs for `setting` with `model` (Hub id of a released model, folder, config dict)."""
    geo = model if isinstance(model, ModelGeometry) else geometry(model)
    s = setting
    dtype_bytes = DTYPE_BYTES[s.dtype]
    notes = []
    params = geo.parameters()
    if s.quantization == "none":
        weights = params * dtype_bytes
    else:
        quantized = geo.text_linear_parameters()
        weights = (params - quantized) * dtype_bytes + math.ceil(quantized * QUANT_BYTES_PER_WEIGHT[s.quantization])
        if s.quantization == "int8":
            weights += geo.text_linear_rows() * 4
        notes.append("quantized: the text model's linear layers; vision encoder, adapter, embeddings and lm_head "
                     f"stay in {s.dtype}")
    frames, visual = s.frames, s.visual_tokens(geo.patches_per_side)
    prefix = visual + frames * TEXT_TOKENS_PER_FRAME + PROMPT_TOKENS
    kv_token = geo.kv_bytes_per_token(dtype_bytes)
    # Batched decoding repeats the prefix for every query; one query keeps one copy.
    kv_cache = kv_token * s.queries * (prefix + s.max_new_tokens)
    per_frame_tokens = visual / frames
    feature_frame = per_frame_tokens * geo.text_hidden * dtype_bytes
    cache_frames = s.feature_cache_frames or 2 * frames
    feature_cache = math.ceil(feature_frame * cache_frames)
    # Vision: every ViT hidden state of the frames encoded together (the first window: all of them), the
    # concatenated feature layers, the MLP intermediate of one layer, the pooling gather (tokens x pool x 2304).
    patches = geo.patches_per_frame * frames
    pool = max(s.slow_pooling, s.fast_pooling) ** 2 if s.slowfast else 9
    vision = dtype_bytes * (patches * geo.vit_hidden * (geo.vit_layers + 1 + geo.feature_layers)
                            + patches * geo.vit_intermediate + visual * pool * geo.vit_hidden * geo.feature_layers)
    if s.attn_implementation == "eager":
        vision += frames * 16 * geo.patches_per_frame ** 2 * 4  # fp32 scores, one layer, all frames at once
    # Prefill of the prefix: residual + normed input + q/k/v/o + MLP gate/up/act of one layer, plus the
    # input embeddings; eager attention materialises heads x L x L scores (fp32 softmax); the decode step keeps
    # fp32 logits of every query's row.
    h = geo.text_hidden
    prefill = dtype_bytes * prefix * (4 * h + 2 * geo.text_heads * geo.head_dim + 2 * geo.text_kv_heads *
                                      geo.head_dim + 3 * geo.text_intermediate)
    if s.attn_implementation == "eager":
        prefill += geo.text_heads * prefix * prefix * 4 * 2
    prefill += s.queries * geo.vocab * 4 * 2
    if prefix + s.max_new_tokens > geo.max_position_embeddings > 0:
        notes.append(f"prompt {prefix} + {s.max_new_tokens} tokens exceed the model's context "
                     f"{geo.max_position_embeddings}")
    return MemoryPlan(model=geo.name, setting=s, parameters=params, weights=weights, kv_per_token=kv_token,
                      prompt_tokens=prefix, kv_cache=kv_cache, feature_bytes_per_frame=feature_frame,
                      feature_cache=feature_cache, vision_activations=vision, prefill_activations=prefill,
                      reserve=CUDA_RESERVE_BYTES if s.cuda else 0, notes=notes)


def refusal(model: str | dict | ModelGeometry, setting: Setting, free_bytes: int, total_bytes: int,
            margin_frac: float = 0.05) -> str:
    """'' when the setting fits the device's free memory (less a safety margin of `margin_frac` of the total);
    otherwise one message with the predicted peak, what dominates it and what to lower (values that would fit)."""
    p = plan(model, setting)
    budget = free_bytes - margin_frac * total_bytes
    if p.peak <= budget:
        return ""
    s = setting
    head = (f"predicted GPU memory {_gib(p.peak)} for {p.model} does not fit the {_gib(free_bytes)} free of "
            f"{_gib(total_bytes)} (weights {_gib(p.weights)}, KV cache {_gib(p.kv_cache * s.cameras)}, "
            f"vision features {_gib(p.feature_cache * s.cameras)}, activations "
            f"{_gib(max(p.vision_activations, s.cameras * p.prefill_activations))})")
    fixed = plan(model, replace(s, max_frames=1, queries=1, max_new_tokens=1, feature_cache_frames=1))
    if fixed.peak > budget:
        options = [q for q in ("int8", "int4") if QUANTIZATIONS.index(q) > QUANTIZATIONS.index(s.quantization)
                   and plan(model, replace(s, quantization=q, max_frames=1, queries=1, max_new_tokens=1,
                                           feature_cache_frames=1)).peak <= budget]
        remedy = (f"set quantization to {options[0]}" if options else "use a smaller model (allenai/Molmo2-4B) or "
                  "a GPU with more memory") + " (the weights alone do not fit)"
        return f"{head}: {remedy}"
    remedies = []
    for name, values in (("max_frames", range(s.frames - 1, 0, -1)), ("queries", range(s.queries - 1, 0, -1)),
                         ("max_new_tokens", (v for v in (128, 64, 32) if v < s.max_new_tokens))):
        for value in values:
            trial = replace(s, **{name: value})
            if plan(model, trial).peak <= budget:
                hint = f"{name} {getattr(s, name) if name != 'max_frames' else s.frames} -> {value}"
                if name == "max_frames":
                    hint += f" (or window_s {s.window_s:g} -> {value / s.sample_fps:g})"
                remedies.append(hint)
                break
    if s.quantization != "int4":
        q = "int8" if s.quantization == "none" else "int4"
        if plan(model, replace(s, quantization=q)).peak <= budget:
            remedies.append(f"quantization {s.quantization} -> {q}")
    remedy = "; or ".join(remedies) if remedies else "lower max_frames, queries and max_new_tokens together"
    return f"{head}: lower {remedy}"
