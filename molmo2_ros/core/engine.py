"""Molmo2 inference through transformers' native classes, with two exact reuses:

- per-frame vision features are computed once per (frame, pooling) and cached by stamp, so a sliding window
  only encodes the frames it has not seen;
- the video prefix (BOS + every frame + the start of the user turn) is prefilled once per clip and its KV cache
  is shared by every query on that clip; each query then only runs its own suffix and decoding.

Both give the same greedy tokens as the plain path (stock processor + `generate`), which tests check.
"""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .molmo2_inputs import Molmo2InputBuilder
from .prompts import build_prompt
from .sampling import subsample_clip
from .types import Clip, Generation, Inference, Query


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


@dataclass(frozen=True)
class EngineConfig:
    """model: Hub id or local folder; revision: pinned Hub revision (commit or tag); device: auto|cuda|cpu
    (cuda[:N] accepted); dtype: auto (bf16 on CUDA, fp32 on CPU)|bfloat16|float16|float32;
    attn_implementation: e.g. sdpa, eager, flash_attention_2 (empty = transformers' default);
    quantization: none|int8|int4: the text model's linear layers through bitsandbytes (LLM.int8 / NF4 with double
    quantization, computing in dtype); the vision encoder, adapter and lm_head stay in dtype;
    max_new_tokens: default generation limit; feature_cache_frames: frames whose vision features are kept
    (least recently used go first; 0 = twice the largest clip seen, i.e. what sliding windows reuse);
    reuse_prefix / cache_features: the two exact reuses (off = plain path, for comparison);
    batch_queries: decode all queries of a clip in one batch (same tokens; float rounding may differ);
    max_oom_retries: retries with half the frames after CUDA out-of-memory."""

    model: str
    revision: str = ""
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = ""
    quantization: str = "none"
    max_new_tokens: int = 256
    feature_cache_frames: int = 0
    reuse_prefix: bool = True
    cache_features: bool = True
    batch_queries: bool = True
    max_oom_retries: int = 2
    max_query_chars: int = 500


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; a CUDA request without CUDA is an error that says so."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{device}' requested but CUDA is not available to torch (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda}). Check the NVIDIA driver and that the GPU is visible "
            "(nvidia-smi, CUDA_VISIBLE_DEVICES), or set device to 'cpu' or 'auto'.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device '{device}': use auto, cuda, cuda:N or cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype '{dtype}': use auto, bfloat16, float16 or float32")
    return table[dtype]


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# Modules of `Molmo2ForConditionalGeneration` kept unquantized (transformers matches these from the start of a
# module name or as its suffix): the vision encoder and adapter (small, and the
# quantized Molmo2 variants published so far keep them in full precision too) and the output head.
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def quantization_config(name: str, dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `name` (none -> None); ModelLoadError when it cannot be used."""
    if name in ("", "none"):
        return None
    if name not in ("int8", "int4"):
        raise ModelLoadError(f"unknown quantization '{name}': use none, int8 or int4")
    try:
        import bitsandbytes  # noqa: F401 - transformers checks too, but its message does not name the pin
    except ImportError:
        raise ModelLoadError(f"quantization '{name}' needs bitsandbytes: pip install bitsandbytes==0.50.2 "
                             "(requirements/core.txt), or set quantization to none") from None
    from transformers import BitsAndBytesConfig

    if name == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES)


def load_model_and_processor(config: EngineConfig, device: torch.device, dtype: torch.dtype):
    """Load with the native Molmo2 classes (never `trust_remote_code`), from a folder or the Hub cache, straight
    onto `device` (no full copy in host memory first), quantized when `config.quantization` says so."""
    from transformers import AutoConfig, Molmo2ForConditionalGeneration, Molmo2Processor

    source = config.model
    looks_local = source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
    if looks_local:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model folder '{folder}' does not exist. Set the model parameter to a folder "
                                 "holding config.json and model weights, or to a Hub id like allenai/Molmo2-4B.")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"model folder '{folder}' has no config.json: it is not a saved Molmo2 model "
                                 "(save_pretrained output or a Hub snapshot).")
        source = str(folder)
    kwargs = dict(revision=config.revision or None, local_files_only=_offline(), trust_remote_code=False)
    quantization = quantization_config(config.quantization, dtype)
    try:
        model_config = AutoConfig.from_pretrained(source, **kwargs)
        if model_config.model_type != "molmo2":
            raise ModelLoadError(f"'{config.model}' is a '{model_config.model_type}' model, not Molmo2.")
        processor = Molmo2Processor.from_pretrained(source, **kwargs)
        model = Molmo2ForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation=config.attn_implementation or None,
            quantization_config=quantization, device_map={"": str(device)}, **kwargs)
    except ModelLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear error
        hint = ("HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache: download it once on "
                f"a connected machine (`hf download {config.model}`) and copy the cache (HF_HOME), or point the "
                "model parameter at a local folder." if _offline() and not looks_local else
                "Check the Hub id (e.g. allenai/Molmo2-4B, allenai/Molmo2-8B) and revision, network access, and "
                "that the folder holds a complete Molmo2 checkpoint (config.json, processor and weights).")
        raise ModelLoadError(f"cannot load model '{config.model}': {type(error).__name__}: {error}. {hint}") \
            from error
    return model.eval(), processor


class Molmo2Engine:
    """Runs queries on clips. Load with `load()`, free with `unload()`; `infer` never raises for model faults."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model = None
        self.processor = None
        self.builder: Molmo2InputBuilder | None = None
        self.device = torch.device("cpu")
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._largest_clip = 0
        self.templates = None

    @property
    def model_id(self) -> str:
        return self.config.model

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        self.device = resolve_device(self.config.device)
        dtype = resolve_dtype(self.config.dtype, self.device)
        self.model, self.processor = load_model_and_processor(self.config, self.device, dtype)
        self.builder = Molmo2InputBuilder(self.processor)

    def unload(self) -> None:
        """Drop the model and caches and return GPU memory to the driver."""
        self.model = self.processor = self.builder = None
        self._features.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def clear_cache(self) -> None:
        """Forget cached vision features and return their GPU memory (the model stays loaded)."""
        self._free_after_oom()

    def encode(self, clip: Clip) -> int:
        """Encode and cache the clip's vision features ahead of `infer` (which then reuses them, exactly);
        returns the number of frames encoded. Never raises: `infer` reports faults."""
        if self.model is None or not self.config.cache_features:
            return 0
        try:
            with torch.inference_mode():
                return self._clip_features(clip)[1]
        except Exception:  # noqa: BLE001 - infer() retries and reports the same fault
            self._free_after_oom()
            return 0

    def gpu_memory_mb(self) -> float:
        if self.device.type != "cuda":
            return 0.0
        return torch.cuda.memory_allocated(self.device) / 2**20

    # ---- inference ---------------------------------------------------------------------------------------
    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None) -> Inference:
        """Answer every query on the clip. After CUDA out-of-memory: free, retry with half the frames."""
        if self.model is None:
            return Inference(clip=clip, generations=[], error="model not loaded")
        retries = 0
        while True:
            try:
                return self._infer(clip, queries, max_new_tokens or self.config.max_new_tokens, retries)
            except Exception as error:  # noqa: BLE001 - model faults must not reach the caller
                if not is_out_of_memory(error):
                    return Inference(clip=clip, generations=[], oom_retries=retries,
                                     error=f"{type(error).__name__}: {error}")
                self._free_after_oom()
                if retries >= self.config.max_oom_retries or len(clip.frames) <= 1:
                    return Inference(clip=clip, generations=[], oom_retries=retries,
                                     error=f"CUDA out of memory with {len(clip.frames)} frames: {error}")
                retries += 1
                clip = subsample_clip(clip, max(1, len(clip.frames) // 2))

    def _free_after_oom(self) -> None:
        self._features.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _infer(self, clip: Clip, queries: list[Query], max_new_tokens: int, retries: int) -> Inference:
        started = time.perf_counter()
        prompts = [build_prompt(q, self.templates, self.config.max_query_chars) for q in queries]
        features, encoded = self._clip_features(clip)
        tokens = [self.builder.tokens(clip, p) for p in prompts]
        encoder_outputs = _encoder_outputs(features)
        if self.config.reuse_prefix:
            generations, prefill = self._generate_shared_prefix(queries, tokens, encoder_outputs, max_new_tokens,
                                                                started)
        else:
            generations, prefill = self._generate_plain(queries, tokens, encoder_outputs, max_new_tokens, started)
        return Inference(clip=clip, generations=generations, oom_retries=retries, vision_frames_encoded=encoded,
                         prefill_tokens=prefill)

    def _clip_features(self, clip: Clip) -> tuple[torch.Tensor, int]:
        """Pooled visual features of the clip's frames, [visual tokens, hidden]; encodes only uncached frames."""
        keys = [(clip.epoch, f.stamp_ns, f.pooling) for f in clip.frames]
        missing = [i for i, k in enumerate(keys) if k not in self._features] if self.config.cache_features \
            else list(range(len(keys)))
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            import numpy as np

            patches = self.builder.frame_patches(np.stack([clip.frames[i].frame.image for i in missing]))
            patches = patches.to(self.device)
            by_pooling: dict[tuple[int, int], list[int]] = {}
            for row, i in enumerate(missing):
                by_pooling.setdefault(clip.frames[i].pooling, []).append(row)
            for pooling, rows in by_pooling.items():
                fresh.update(zip((missing[r] for r in rows), self._encode(patches[rows], pooling)))
        parts = []
        for i, key in enumerate(keys):
            if i in fresh:
                parts.append(fresh[i])
                if self.config.cache_features:
                    self._features[key] = fresh[i]
            else:
                self._features.move_to_end(key)
                parts.append(self._features[key])
        self._largest_clip = max(self._largest_clip, len(keys))
        while len(self._features) > (self.config.feature_cache_frames or 2 * self._largest_clip):
            self._features.popitem(last=False)
        return torch.cat(parts), len(missing)

    def _encode(self, patches: torch.Tensor, pooling: tuple[int, int]) -> list[torch.Tensor]:
        """Vision features of frames that share one pooling: one tensor [tokens, hidden] per frame."""
        n, per_frame = patches.shape[0], patches.shape[1]
        table = self.builder.pooling_table(pooling).to(self.device)
        tables = [torch.where(table >= 0, table + i * per_frame, table) for i in range(n)]
        rows, cols = self.builder.pooling_grid(pooling)
        grids = torch.tensor([[n, rows, cols]], device=self.device)
        pooled = self.model.get_video_features(patches, torch.cat(tables), grids).pooler_output[0]
        return list(pooled.split(rows * cols))

    def _decode(self, output_ids: torch.Tensor) -> str:
        return self.processor.tokenizer.decode(output_ids, skip_special_tokens=True)

    def _generation_kwargs(self, max_new_tokens: int) -> dict:
        return dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                    pad_token_id=self.processor.tokenizer.pad_token_id)

    def _generate_plain(self, queries, tokens, encoder_outputs, max_new_tokens, started):
        """Reference path: each query runs its whole prompt (video included) through `generate`."""
        generations, prefill = [], 0
        shared = time.perf_counter() - started
        for query, tok in zip(queries, tokens):
            t0 = time.perf_counter()
            ids = tok.input_ids.to(self.device)
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      mm_token_type_ids=tok.mm_token_type_ids.to(self.device),
                                      mm_encoder_outputs=encoder_outputs, **self._generation_kwargs(max_new_tokens))
            new = out[0, ids.shape[1]:]
            prefill += ids.shape[1]
            generations.append(Generation(query, self._decode(new), int(new.numel()),
                                          shared + time.perf_counter() - t0))
        return generations, prefill

    def _generate_shared_prefix(self, queries, tokens, encoder_outputs, max_new_tokens, started):
        """Prefill the common prefix (the video) once; then decode every query's suffix from that cache: all
        queries in one batch (suffixes padded on their left, pads masked, positions from the mask, so each row
        sees exactly its own prompt), or one after another from a cropped cache when `batch_queries` is off."""
        from transformers import DynamicCache

        ids = [t.input_ids[0] for t in tokens]
        prefix = _common_prefix_length(ids)
        first = tokens[0]
        cache = DynamicCache(config=self.model.config)
        prefix_ids = first.input_ids[:, :prefix].to(self.device)
        self.model(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids),
                   mm_token_type_ids=first.mm_token_type_ids[:, :prefix].to(self.device),
                   mm_encoder_outputs=encoder_outputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        shared = time.perf_counter() - started
        prefill = prefix + sum(len(i) - prefix for i in ids)
        if self.config.batch_queries and len(queries) > 1:
            return self._decode_batch(queries, ids, prefix, cache, max_new_tokens, shared), prefill
        generations = []
        for query, tok in zip(queries, tokens):
            t0 = time.perf_counter()
            full = tok.input_ids.to(self.device)
            out = self.model.generate(input_ids=full, attention_mask=torch.ones_like(full), past_key_values=cache,
                                      **self._generation_kwargs(max_new_tokens))
            cache.crop(prefix - cache.get_seq_length())  # back to the shared prefix (crop takes a negative)
            new = out[0, full.shape[1]:]
            generations.append(Generation(query, self._decode(new), _answer_length(new, self._eos_ids()),
                                          shared + time.perf_counter() - t0))
        return generations, prefill

    def _decode_batch(self, queries, ids, prefix, cache, max_new_tokens, shared) -> list[Generation]:
        t0 = time.perf_counter()
        width = max(len(i) for i in ids) - prefix
        batch = torch.full((len(ids), prefix + width), self.processor.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(batch)
        batch[:, :prefix] = ids[0][:prefix]
        mask[:, :prefix] = 1
        for row, seq in enumerate(ids):
            suffix = seq[prefix:]
            batch[row, prefix + width - len(suffix):] = suffix
            mask[row, prefix + width - len(suffix):] = 1
        cache.batch_repeat_interleave(len(ids))
        batch, mask = batch.to(self.device), mask.to(self.device)
        out = self.model.generate(input_ids=batch, attention_mask=mask, past_key_values=cache,
                                  **self._generation_kwargs(max_new_tokens))
        elapsed = shared + time.perf_counter() - t0
        eos = self._eos_ids()
        return [Generation(q, self._decode(row[batch.shape[1]:]), _answer_length(row[batch.shape[1]:], eos), elapsed)
                for q, row in zip(queries, out)]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        return {int(e) for e in eos if e is not None} | {int(self.processor.tokenizer.pad_token_id)}

def _encoder_outputs(features: torch.Tensor) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"video": BaseModelOutputWithPooling(pooler_output=(features,))}


def _answer_length(new_ids: torch.Tensor, stop_ids: set[int]) -> int:
    """Generated tokens up to and including the first stop token (the rest of a batch row is padding)."""
    for i, token in enumerate(new_ids.tolist()):
        if token in stop_ids:
            return i + 1
    return int(new_ids.numel())


def _common_prefix_length(sequences: list[torch.Tensor]) -> int:
    """Length of the longest common prefix, leaving at least one token of every sequence to prefill."""
    limit = min(len(s) for s in sequences) - 1
    first = sequences[0][:limit]
    length = limit
    for seq in sequences[1:]:
        diff = (seq[:limit] != first).nonzero()
        if len(diff):
            length = min(length, int(diff[0]))
    return length

