"""vLLM's Molmo2 with the reference's input embedding, as subclasses of vLLM's own classes (no fork).

Fixed here (each reproduced against transformers, see README "Serving on vLLM"):
1. Visual features are ADDED to the `<im_patch>` embedding, as transformers (`inputs_embeds[mask] + features`)
   and Ai2's code do; vLLM replaces the embedding by the feature.
2. Frame delimiters: the prompt holds `<im_start>`/`<im_end>` around each frame when the processor's
   `use_frame_special_tokens` is false (the released setting); vLLM embedded `<frame_start>`/`<frame_end>` there
   whatever the prompt said.
3. Several images in one request: transformers' native image processor returns pooling indices counted over all
   images of the request, and vLLM adds each image's patch offset again (IndexError in the vision backbone, the
   engine dies). Each image's indices are made relative to its own patches, which is also what vLLM's per-item
   multimodal cache needs.
Also: `image_col_id`/`image_low_res_id`, which the native config lacks, are looked up in the tokenizer.
4. Attention among visual tokens on vLLM's CPU backend (attention.py): the reference makes all visual tokens of a
   prompt one bidirectional block; the CPU kernel is causal, so its visual query rows are recomputed with the
   reference's mask.
Not changed here: vLLM's GPU backends, which make one bidirectional block per run of `<im_patch>` embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from vllm.model_executor.models.molmo2 import (
    Molmo2DummyInputsBuilder,
    Molmo2ForConditionalGeneration,
    Molmo2MultiModalProcessor,
    Molmo2ProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.platforms import current_platform

from .config import add_remote_code_names


class Molmo2ReferenceProcessor(Molmo2MultiModalProcessor):
    """vLLM's Molmo2 processor with the reference's frame delimiters and per-image pooling indices."""

    def _fill_config(self) -> None:
        """Token ids and names the native config lacks (idempotent)."""
        config = self.info.get_hf_config()
        add_remote_code_names(config)
        if getattr(config, "image_col_id", None) is None or getattr(config, "image_low_res_id", None) is None:
            vocab = self.info.get_tokenizer().get_vocab()
            config.image_col_id = vocab["<im_col>"]
            config.image_low_res_id = vocab["<im_low>"]

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        self._fill_config()
        return super()._apply_hf_processor_main(mm_items, hf_kwargs)

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        self._fill_config()
        return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)

    def _postprocess_hf_mm_data(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object],
                                processed_data):
        processed = super()._postprocess_hf_mm_data(hf_data, hf_kwargs, processed_data)
        config = self.info.get_hf_config()
        if "video_tokens" in processed and not self.info.get_hf_processor(**hf_kwargs).use_frame_special_tokens:
            tokens = processed["video_tokens"].clone()
            tokens[tokens == config.frame_start_token_id] = config.image_start_token_id
            tokens[tokens == config.frame_end_token_id] = config.image_end_token_id
            processed["video_tokens"] = tokens
        if "image_token_pooling" in processed and len(processed.get("image_num_pooled_patches", ())) > 1:
            processed["image_token_pooling"] = _per_image_indices(
                processed["image_token_pooling"], processed["image_num_pooled_patches"],
                processed["image_num_patches"])
        return processed


def _per_image_indices(pooling: torch.Tensor, rows_per_image: torch.Tensor,
                       patches_per_image: torch.Tensor) -> torch.Tensor:
    """Pooling indices of each image relative to its own patches (-1 padding kept). Indices already relative
    (older processors) are left alone: only an image whose smallest index reaches past the patches of the
    images before it is shifted."""
    out = pooling.clone()
    row, offset = 0, 0
    for rows, patches in zip(rows_per_image.tolist(), patches_per_image.tolist()):
        block = out[row:row + rows]
        valid = block >= 0
        if offset and valid.any() and int(block[valid].min()) >= offset:
            block[valid] -= offset
        row, offset = row + rows, offset + patches
    return out


@MULTIMODAL_REGISTRY.register_processor(Molmo2ReferenceProcessor, info=Molmo2ProcessingInfo,
                                        dummy_inputs=Molmo2DummyInputsBuilder)
class Molmo2ReferenceForConditionalGeneration(Molmo2ForConditionalGeneration):
    """vLLM's Molmo2 whose visual tokens are `embedding(<im_patch>) + feature` and, on the CPU backend, one
    bidirectional attention block, as in the reference."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        add_remote_code_names(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._visual_step = None
        if current_platform.is_cpu():
            from .attention import install_visual_block  # imports vLLM's CPU attention backend: CPU builds only

            self._visual_step = install_visual_block(self, vllm_config)

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, *, is_multimodal=None):
        if self._visual_step is not None:
            self._visual_step.record(input_ids)
        return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)

    def _process_image_input(self, image_input) -> tuple[torch.Tensor, ...]:
        return self._add_patch_embedding(super()._process_image_input(image_input), image_input["image_tokens"],
                                         image_input["num_image_tokens"])

    def _process_video_input(self, video_input) -> tuple[torch.Tensor, ...]:
        return self._add_patch_embedding(super()._process_video_input(video_input), video_input["video_tokens"],
                                         video_input["num_video_tokens"])

    def _add_patch_embedding(self, embeddings: tuple[torch.Tensor, ...], tokens: torch.Tensor,
                             lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """vLLM's embeddings hold the bare feature at `<im_patch>` positions; add the token's own embedding
        (feature + embedding equals the reference's embedding + feature exactly: IEEE addition commutes)."""
        patch = self.get_language_model().embed_input_ids(
            torch.tensor([self.img_patch_id], device=tokens.device))[0]
        out = []
        for emb, tok in zip(embeddings, tokens.split(lengths.tolist())):
            emb = emb.clone()
            emb[tok == self.img_patch_id] += patch.to(emb.dtype)
            out.append(emb)
        return tuple(out)
