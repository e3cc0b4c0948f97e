"""Molmo2 inference through transformers' native classes, with two exact reuses:

- per-frame vision features are computed once per (frame, pooling) and cached by stamp, so a sliding window
  only encodes the frames it has not seen;
- the video prefix (BOS + every frame + the start of the user turn) is prefilled once per clip and its KV cache
  is shared by every query on that clip; each query then only runs its own suffix and decoding.

Both give the same greedy tokens as the plain path (stock processor + `generate`), which tests check.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .engine_config import EngineConfig
from .engine_interface import Engine, EngineCapabilities, InferRequest, MemoryReport, StopFlag
from .molmo2_inputs import Molmo2InputBuilder
from .prompts import build_prompt, special_tokens
from .sampling import subsample_clip
from .types import Clip, Generation, Inference, Query


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to do."""


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


class StopOnFlag:
    """transformers stopping criterion: every row is done once `flag.is_set()` (checked after each decode step)."""

    def __init__(self, flag: StopFlag) -> None:
        self.flag = flag

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


class ChosenLogProb:
    """transformers logits processor that records, per decode step and row, the log-probability of the token greedy
    decoding picks (the row's maximum) in the distribution it is picked from; the scores pass unchanged. One float
    per row and step, instead of keeping every step's full-vocabulary scores (`output_scores`)."""

    def __init__(self) -> None:
        self._steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._steps.append(scores.max(-1).values.float() - torch.logsumexp(scores.float(), -1))
        return scores

    def row(self, index: int) -> list[float]:
        return torch.stack(self._steps, 1)[index].tolist() if self._steps else []


_COORDS = re.compile(r'coords="([^"]*)"')


def coordinate_confidence(tokenizer, ids: list[int], logprobs: list[float], text: str) -> float:
    """Mean log-probability of the generated tokens that write digits inside a `coords="..."` attribute (the
    times, ids and coordinates of points and tracks); NaN when the answer has none."""
    spans = [m.span(1) for m in _COORDS.finditer(text)]
    if not spans:
        return math.nan
    pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
    if "".join(pieces) != text:  # a character split over tokens: measure each token by prefix decoding
        ends = [len(tokenizer.decode(ids[:k + 1], skip_special_tokens=True)) for k in range(len(ids))]
    else:
        ends = list(itertools.accumulate(len(p) for p in pieces))
    chosen, start = [], 0
    for end, lp in zip(ends, logprobs):
        if any(a < end and start < b for a, b in spans) and any(c.isdigit() for c in text[start:end]):
            chosen.append(lp)
        start = end
    return sum(chosen) / len(chosen) if chosen else math.nan


class Molmo2Engine(Engine):
    """Runs queries on clips with transformers. Load with `load()`, free with `unload()`; `infer` and
    `infer_batch` never raise for model faults.

    `infer_batch` answers clips of several streams (cameras) in one model call: one prefill batch over their
    video prefixes and one decode batch over all their queries, with each stream's vision features cached
    separately; the greedy tokens equal those of one call per clip (tests check it)."""

    capabilities = EngineCapabilities(batch_clips=True, prefetch=True, stop_within_token=True, local_memory=True)

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model = None
        self.processor = None
        self.builder: Molmo2InputBuilder | None = None
        self.device = torch.device("cpu")
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        # Features evicted from `_features`, kept on in host memory up to config.feature_cache_mb (LRU): the
        # accelerator holds only what sliding windows reuse; a rewind question copies older ones back (exact).
        self._spilled: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._spilled_bytes = 0
        self._largest_clip: dict[str, int] = {}
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
        self._clear_spilled()
        self._largest_clip.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def clear_cache(self) -> None:
        """Forget cached vision features (the host-memory ones too) and return their GPU memory (the model stays
        loaded)."""
        self._clear_spilled()
        self._free_cached()

    def encode(self, clip: Clip) -> int:
        """Encode and cache the clip's vision features ahead of `infer` (which then reuses them, exactly);
        returns the number of frames encoded. Never raises: `infer` reports faults."""
        if self.model is None or not self.config.cache_features:
            return 0
        try:
            with torch.inference_mode():
                return self._clip_features(clip)[1]
        except Exception:  # noqa: BLE001 - infer() retries and reports the same fault
            self._free_cached()
            return 0

    def check_memory(self, setting) -> str:
        """Refuse a setting that cannot fit the CUDA device (core/memory_plan.py), before loading anything. A model
        whose configuration is not known without downloading it cannot be planned: a CUDA out-of-memory error then
        names the device (the note says so)."""
        from . import memory_plan

        device = resolve_device(self.config.device)
        if device.type != "cuda":
            return ""
        try:
            message = memory_plan.refusal(self.config.model, setting, *torch.cuda.mem_get_info(device))
        except ValueError as error:
            return f"memory plan skipped: {error}"
        if message:
            raise ValueError(f"the setting does not fit {device}: {message}")
        return ""

    def memory_report(self) -> MemoryReport:
        cached = {"cached_frames": len(self._features) + len(self._spilled),
                  "host_cache_mb": self._spilled_bytes / 2**20}
        if self.device.type != "cuda":
            return MemoryReport(device=str(self.device), **cached)
        return MemoryReport(device=str(self.device), allocated_mb=torch.cuda.memory_allocated(self.device) / 2**20,
                            reserved_mb=torch.cuda.memory_reserved(self.device) / 2**20, **cached)

    # ---- inference ---------------------------------------------------------------------------------------
    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: StopFlag | None = None) -> Inference:
        """Answer every query on the clip. After CUDA out-of-memory: free, retry with half the frames."""
        return self.infer_batch([InferRequest(clip, tuple(queries), max_new_tokens)], stop)[0]

    def infer_batch(self, requests: list[InferRequest], stop: StopFlag | None = None) -> list[Inference]:
        """Answer several clips in one model call; after out-of-memory (or with `batch_queries` off) one clip at
        a time, each with its own out-of-memory retries."""
        if self.model is None:
            return [Inference(clip=r.clip, generations=[], error="model not loaded") for r in requests]
        if len(requests) > 1 and self.config.batch_queries:
            try:
                return self._run(requests, stop)
            except Exception as error:  # noqa: BLE001 - model faults must not reach the caller
                if not is_out_of_memory(error):
                    message = f"{type(error).__name__}: {error}"
                    return [Inference(clip=r.clip, generations=[], error=message) for r in requests]
                self._free_cached()
        return [self._infer_with_retries(r, stop) for r in requests]

    def _infer_with_retries(self, request: InferRequest, stop: StopFlag | None) -> Inference:
        retries = 0
        while True:
            try:
                inference = self._run([request], stop)[0]
                inference.oom_retries = retries
                return inference
            except Exception as error:  # noqa: BLE001 - model faults must not reach the caller
                clip = request.clip
                if not is_out_of_memory(error):
                    return Inference(clip=clip, generations=[], oom_retries=retries,
                                     error=f"{type(error).__name__}: {error}")
                self._free_cached()
                if retries >= self.config.max_oom_retries or len(clip.frames) <= 1:
                    return Inference(clip=clip, generations=[], oom_retries=retries,
                                     error=f"CUDA out of memory with {len(clip.frames)} frames: {error}")
                retries += 1
                request = replace(request, clip=subsample_clip(clip, max(1, len(clip.frames) // 2)))

    def _free_cached(self) -> None:
        self._features.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def _run(self, requests: list[InferRequest], stop: StopFlag | None) -> list[Inference]:
        """One model call for all requests (may raise; callers turn faults into error Inferences)."""
        started = time.perf_counter()
        stop = stop or _NEVER
        clips = [r.clip for r in requests]
        special = special_tokens(self.processor.tokenizer)
        features, encoded, tokens = [], [], []
        for r in requests:
            if stop.is_set():
                return _stopped(clips)
            f, n = self._clip_features(r.clip)
            features.append(f)
            encoded.append(n)
            tokens.append([self.builder.tokens(r.clip, build_prompt(q, self.templates, self.config.max_query_chars, special))
                           for q in r.queries])
        if stop.is_set():
            return _stopped(clips)
        limits = [r.max_new_tokens or self.config.max_new_tokens for r in requests]
        if self.config.reuse_prefix:
            texts, prefill, shared, decode_s = self._generate_shared_prefix(tokens, features, limits, stop, started)
        else:
            texts, prefill, shared, decode_s = self._generate_plain(tokens, features, limits, stop, started)
        if stop.is_set():
            return _stopped(clips)
        return [Inference(clip=r.clip, vision_frames_encoded=n, prefill_tokens=p,
                          generations=[Generation(q, text, length, shared + d, confidence)
                                       for q, (text, length, confidence), d in zip(r.queries, row_texts, row_s)])
                for r, n, p, row_texts, row_s in zip(requests, encoded, prefill, texts, decode_s)]

    def _clip_features(self, clip: Clip) -> tuple[torch.Tensor, int]:
        """Pooled visual features of the clip's frames, [visual tokens, hidden]; encodes only uncached frames.
        Cached by (stream, epoch, stamp, pooling): each camera keeps its own features. A frame read back from the
        history (a JPEG copy, maybe scaled down: Frame.source_size is set) takes the features of its live original
        when they are cached; its own are cached under a key of their own, so a live window never gets features of
        a stored copy."""
        keys = [(clip.stream, clip.epoch, f.stamp_ns, f.pooling) for f in clip.frames]
        store_keys = [k + _copy_key(f.frame) for k, f in zip(keys, clip.frames)]
        cached: dict[int, torch.Tensor] = {}
        if self.config.cache_features:
            for i, (key, own) in enumerate(zip(keys, store_keys)):
                hit = self._cached(key)
                if hit is None and own != key:
                    hit = self._cached(own)
                if hit is not None:
                    cached[i] = hit
        missing = [i for i in range(len(keys)) if i not in cached]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            patches = self.builder.frame_patches(np.stack([clip.frames[i].frame.image for i in missing]))
            fresh = dict(zip(missing, self._encode(patches.to(self.device),
                                                   [clip.frames[i].pooling for i in missing])))
        parts = []
        for i, key in enumerate(store_keys):
            if i in fresh:
                parts.append(fresh[i])
                if self.config.cache_features:
                    self._features[key] = fresh[i]
            else:
                parts.append(cached[i])
        self._largest_clip[clip.stream] = max(self._largest_clip.get(clip.stream, 0), len(keys))
        limit = self.config.feature_cache_frames or 2 * sum(self._largest_clip.values())
        while len(self._features) > limit:
            self._spill(*self._features.popitem(last=False))
        return torch.cat(parts), len(missing)

    def _cached(self, key: tuple) -> torch.Tensor | None:
        """The cached features of `key` (most recently used now), copied back from host memory when they were
        spilled there; None when not cached."""
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        spilled = self._spilled.pop(key, None)
        if spilled is None:
            return None
        self._spilled_bytes -= _nbytes(spilled)
        features = spilled.to(self.device)
        self._features[key] = features
        return features

    def _spill(self, key: tuple, features: torch.Tensor) -> None:
        """Keep features evicted from the accelerator's cache in host memory, up to config.feature_cache_mb."""
        budget = self.config.feature_cache_mb * 2**20
        if _nbytes(features) > budget:
            return
        self._spilled[key] = features.to("cpu")
        self._spilled_bytes += _nbytes(features)
        while self._spilled_bytes > budget:
            self._spilled_bytes -= _nbytes(self._spilled.popitem(last=False)[1])

    def _clear_spilled(self) -> None:
        self._spilled.clear()
        self._spilled_bytes = 0

    def _encode(self, patches: torch.Tensor, poolings: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Vision features of frames, all in one ViT call whatever their poolings (as the reference encodes a
        whole clip: bfloat16 GEMMs are not batch-invariant, so encoding the key frames apart changed features by
        one ulp): one tensor [tokens, hidden] per frame."""
        vision = self.builder.vision_inputs(patches, poolings)
        pooled = self.model.get_video_features(patches, vision["video_token_pooling"].to(self.device),
                                               vision["video_grids"].to(self.device)).pooler_output[0]
        return list(pooled.split([rows * cols for rows, cols in map(self.builder.pooling_grid, poolings)]))

    def _generation_kwargs(self, max_new_tokens: int, stop: StopFlag, recorder: ChosenLogProb) -> dict:
        return dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                    pad_token_id=self.processor.tokenizer.pad_token_id, stopping_criteria=[StopOnFlag(stop)],
                    logits_processor=[recorder])

    def _answer(self, new_ids: torch.Tensor, limit: int, logprobs: list[float]) -> tuple[str, int, float]:
        """(text, generated tokens up to and including the first stop token, coordinate confidence) of one row,
        cut at its own limit."""
        new_ids = new_ids[:limit]
        length = _answer_length(new_ids, self._eos_ids())
        tokenizer = self.processor.tokenizer
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        return text, length, coordinate_confidence(tokenizer, new_ids[:length].tolist(), logprobs[:length], text)

    def _generate_plain(self, tokens, features, limits, stop, started):
        """Reference path: each query runs its whole prompt (video included) through `generate`."""
        texts, prefill, decode_s = [], [], []
        shared = time.perf_counter() - started
        for row_tokens, feats, limit in zip(tokens, features, limits):
            row_texts, row_s, n = [], [], 0
            for tok in row_tokens:
                t0 = time.perf_counter()
                ids = tok.input_ids.to(self.device)
                recorder = ChosenLogProb()
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          mm_token_type_ids=tok.mm_token_type_ids.to(self.device),
                                          mm_encoder_outputs=_encoder_outputs([feats]),
                                          **self._generation_kwargs(limit, stop, recorder))
                row_texts.append(self._answer(out[0, ids.shape[1]:], limit, recorder.row(0)))
                row_s.append(time.perf_counter() - t0)
                n += ids.shape[1]
            texts.append(row_texts)
            decode_s.append(row_s)
            prefill.append(n)
        return texts, prefill, shared, decode_s

    def _generate_shared_prefix(self, tokens, features, limits, stop, started):
        """Prefill each clip's common prefix (its video) once, all clips in one batch (right-padded); then decode
        every query of every clip from that cache in one batch (suffixes padded on their left, pads masked,
        positions from the mask, so each row sees exactly its own prompt), or, with `batch_queries` off, one query
        after another from a cropped cache."""
        ids = [[t.input_ids[0] for t in row] for row in tokens]
        prefixes = [_common_prefix_length(row) for row in ids]
        width = max(prefixes)
        pad = self.processor.tokenizer.pad_token_id
        batch = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        types = torch.zeros_like(batch)
        for i, (row, n) in enumerate(zip(tokens, prefixes)):
            batch[i, :n] = row[0].input_ids[0, :n]
            types[i, :n] = row[0].mm_token_type_ids[0, :n]
            mask[i, :n] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self.model(input_ids=batch.to(self.device), attention_mask=mask.to(self.device),
                   position_ids=positions.to(self.device), mm_token_type_ids=types.to(self.device),
                   mm_encoder_outputs=_encoder_outputs(features), past_key_values=cache, use_cache=True,
                   logits_to_keep=1)
        shared = time.perf_counter() - started
        prefill = [n + sum(len(seq) - n for seq in row) for row, n in zip(ids, prefixes)]
        if stop.is_set():
            return [], prefill, shared, []
        if not self.config.batch_queries and len(ids) == 1:
            texts, decode_s = self._decode_one_by_one(tokens[0], prefixes[0], cache, limits[0], stop)
            return [texts], prefill, shared, [decode_s]
        texts, decode_s = self._decode_batch(ids, prefixes, width, mask, cache, limits, stop)
        return texts, prefill, shared, decode_s

    def _decode_one_by_one(self, tokens, prefix, cache, limit, stop):
        texts, decode_s = [], []
        for tok in tokens:
            t0 = time.perf_counter()
            full = tok.input_ids.to(self.device)
            recorder = ChosenLogProb()
            out = self.model.generate(input_ids=full, attention_mask=torch.ones_like(full), past_key_values=cache,
                                      **self._generation_kwargs(limit, stop, recorder))
            cache.crop(prefix - cache.get_seq_length())  # back to the shared prefix (crop takes a negative)
            texts.append(self._answer(out[0, full.shape[1]:], limit, recorder.row(0)))
            decode_s.append(time.perf_counter() - t0)
        return texts, decode_s

    def _decode_batch(self, ids, prefixes, width, prefix_mask, cache, limits, stop):
        t0 = time.perf_counter()
        rows = [(i, seq) for i, row in enumerate(ids) for seq in row]
        suffix_width = max(len(seq) - prefixes[i] for i, seq in rows)
        pad = self.processor.tokenizer.pad_token_id
        batch = torch.full((len(rows), width + suffix_width), pad, dtype=torch.long)
        mask = torch.zeros_like(batch)
        for r, (i, seq) in enumerate(rows):
            n = prefixes[i]
            suffix = seq[n:]
            batch[r, :n] = seq[:n]
            mask[r, :width] = prefix_mask[i]
            batch[r, width + suffix_width - len(suffix):] = suffix
            mask[r, width + suffix_width - len(suffix):] = 1
        cache.batch_select_indices(torch.tensor([i for i, _ in rows], device=self.device))
        recorder = ChosenLogProb()
        out = self.model.generate(input_ids=batch.to(self.device), attention_mask=mask.to(self.device),
                                  past_key_values=cache, **self._generation_kwargs(max(limits), stop, recorder))
        elapsed = time.perf_counter() - t0
        answers = [self._answer(row[batch.shape[1]:], limits[i], recorder.row(r))
                   for r, ((i, _), row) in enumerate(zip(rows, out))]
        texts: list[list[tuple[str, int, float]]] = [[] for _ in ids]
        for (i, _), answer in zip(rows, answers):
            texts[i].append(answer)
        return texts, [[elapsed] * len(row) for row in texts]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        return {int(e) for e in eos if e is not None} | {int(self.processor.tokenizer.pad_token_id)}


class _Never:
    @staticmethod
    def is_set() -> bool:
        return False


_NEVER = _Never()


def _stopped(clips: list[Clip]) -> list[Inference]:
    return [Inference(clip=c, generations=[], error="stopped", stopped=True) for c in clips]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _copy_key(frame) -> tuple:
    """() for a live frame; ("stored", height, width) for a copy read back from the history (`source_size` set)."""
    if frame.source_size is None:
        return ()
    return ("stored", *frame.image.shape[:2])


def _encoder_outputs(features: list[torch.Tensor]) -> dict:
    """Visual features of the clips of one batch, in row order (the model fills <im_patch> rows in that order)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return {"video": BaseModelOutputWithPooling(pooler_output=(torch.cat(features),))}


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
