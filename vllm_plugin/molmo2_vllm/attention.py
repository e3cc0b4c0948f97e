"""The reference's attention among visual tokens on vLLM's CPU attention backend.

transformers' Molmo2 gives every token whose `mm_token_type_ids` is 1 (its processor's `image_token_ids`) one
block id, so a visual token attends to every earlier token and to every visual token of the prompt, later ones
included (one bidirectional block across frames; text between frames, such as timestamps, stays causal).
vLLM's CPU kernel takes only causal or non-causal attention per request, so visual tokens attend causally there.

`VisualBlockCPUAttention` keeps the kernel for everything (it also writes the KV cache) and then recomputes the rows
of visual query tokens with the reference's mask, `key <= query or (visual(query) and visual(key))`, from the paged
KV cache. This is written here, not taken from a library, because it has to read vLLM's CPU cache layout (its
`vec`/`vec16` kernels, fp32 and bf16 without AMX): keys transposed per block (`[head_dim, block_size]`), values
plain (`[block_size, head_dim]`). The first prefill checks that layout against the step's own keys and turns the
fix off, with an error in the log, where it differs (another kernel, a later vLLM).

Correct as long as all visual tokens of a request are in one scheduler step (`--disable-chunked-mm-input`, which
the project's server command sets: a video is one multimodal item) and a cached prefix never ends inside a block
whose visual tokens could differ (the prefix cache's block hashes include the multimodal item, so a prompt with one
video or image is safe). Cost: one extra attention per layer over the visual queries of a prefill step.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from vllm.transformers_utils.processor import cached_processor_from_config
from vllm.v1.attention.backend import AttentionType
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

log = logging.getLogger(f"vllm.{__name__}")  # under vLLM's logger: its handlers, its format
VISUAL_BLOCK_ENV = "MOLMO2_VLLM_VISUAL_BLOCK"  # "0": leave vLLM's causal CPU attention (faster, not the reference)


def install_visual_block(model: torch.nn.Module, vllm_config) -> StepVisualTokens | None:
    """Give the model's CPU attention layers the reference's visual block. Returns the record of the step's visual
    tokens the model must keep up to date, or None where nothing was installed."""
    layers = [m.impl for m in model.modules() if isinstance(getattr(m, "impl", None), CPUAttentionBackendImpl)]
    if not layers:
        return None
    if os.environ.get(VISUAL_BLOCK_ENV, "1") == "0":
        log.info("molmo2_vllm: %s=0: visual tokens attend causally (vLLM's CPU backend as it is)", VISUAL_BLOCK_ENV)
        return None
    # the processor vLLM's Molmo2 already uses (transformers' Molmo2Processor): its image_token_ids are the tokens
    # it marks with mm_token_type_ids 1, so the block here and the reference's are the same set by construction
    visual_ids = getattr(cached_processor_from_config(vllm_config.model_config), "image_token_ids", None)
    if not visual_ids:
        log.error("molmo2_vllm: the model's processor has no image_token_ids; visual tokens attend causally")
        return None
    step = StepVisualTokens([int(i) for i in visual_ids])
    installed = sum(VisualBlockCPUAttention.install(impl, step) for impl in layers)
    log.info("molmo2_vllm: reference visual attention block on %d of %d CPU attention layers", installed,
             len(layers))
    return step if installed else None


class StepVisualTokens:
    """Which tokens of the current model step are visual (set by the model when it embeds the step's ids)."""

    def __init__(self, visual_ids: list[int]) -> None:
        self.visual_ids = torch.tensor(sorted(set(visual_ids)), dtype=torch.long)
        self.mask: torch.Tensor | None = None

    def record(self, input_ids: torch.Tensor) -> None:
        self.mask = torch.isin(input_ids, self.visual_ids.to(input_ids.device))


class VisualBlockCPUAttention(CPUAttentionBackendImpl):
    """CPU attention whose visual query tokens also see the later visual tokens of their prompt."""

    step: StepVisualTokens
    layout_checked: bool
    enabled: bool

    @classmethod
    def install(cls, impl: CPUAttentionBackendImpl, step: StepVisualTokens) -> bool:
        """Turn one layer's CPU impl into this class; False (impl untouched) where the fix does not apply."""
        unsupported = (impl.attn_type != AttentionType.DECODER or impl.alibi_slopes is not None
                       or impl.logits_soft_cap or impl.sinks is not None or impl.kv_cache_dtype != "auto"
                       or impl.sliding_window != -1)
        if unsupported:
            return False
        impl.__class__ = cls
        impl.step, impl.layout_checked, impl.enabled = step, False, True
        return True

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None):
        out = super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                              output_block_scale)
        mask = self.step.mask
        if attn_metadata is None or not self.enabled or mask is None or not bool(mask.any()):
            return out
        self._visual_rows(query, key, kv_cache, attn_metadata, output.view(output.shape[0], self.num_heads, -1),
                          mask)
        return out

    def _visual_rows(self, query: torch.Tensor, key: torch.Tensor, kv_cache: torch.Tensor, meta,
                     output: torch.Tensor, mask: torch.Tensor) -> None:
        num_blocks, kv_heads, block_size, _ = kv_cache.shape
        head_dim = query.shape[-1]
        halves = kv_cache.view(num_blocks, kv_heads, 2, block_size * head_dim)
        keys = halves[:, :, 0].unflatten(-1, (head_dim, block_size))
        values = halves[:, :, 1].unflatten(-1, (block_size, head_dim))
        starts = meta.query_start_loc.tolist()
        seq_lens = meta.seq_lens.tolist()
        for r in range(len(starts) - 1):
            qs, qe = starts[r], starts[r + 1]
            if qe - qs <= 1 or qe > mask.shape[0]:
                continue
            visual = mask[qs:qe]
            if not bool(visual.any()):
                continue
            length = seq_lens[r]
            context = length - (qe - qs)
            blocks = meta.block_table[r, :(length + block_size - 1) // block_size]
            k = keys[blocks].permute(1, 0, 3, 2).reshape(kv_heads, -1, head_dim)[:, :length]
            v = values[blocks].permute(1, 0, 2, 3).reshape(kv_heads, -1, head_dim)[:, :length]
            if not self.layout_checked:
                self.layout_checked = True
                if not torch.equal(k[:, context:], key[qs:qe].transpose(0, 1).to(k.dtype)):
                    self.enabled = False
                    log.error("molmo2_vllm: vLLM's CPU KV cache layout is not the one this plugin reads; visual "
                              "tokens attend causally (as vLLM's CPU backend does without the plugin)")
                    return
            rows = visual.nonzero().squeeze(1)
            positions = torch.arange(length)
            allowed = positions[None, :] <= (context + rows)[:, None]
            allowed[:, context:] |= visual[None, :]
            repeat = self.num_heads // kv_heads
            q = query[qs + rows].transpose(0, 1).float()
            # 4-D inputs: torch's CPU flash kernel (3-D ones take the math path, ~6x slower at 40 frames)
            attended = F.scaled_dot_product_attention(
                q[None], k.repeat_interleave(repeat, 0).float()[None], v.repeat_interleave(repeat, 0).float()[None],
                attn_mask=allowed[None, None], scale=self.scale)[0]
            output[qs + rows] = attended.transpose(0, 1).to(output.dtype)
