"""Model inputs for one clip, built from per-frame pieces so that they can be cached and mixed (SlowFast).

With one pooling for every frame the result is bit-identical to what the stock `Molmo2Processor` returns for
the same frames and timestamps (`video_metadata(...)`, `do_sample_frames=False`); tests check that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .types import Clip


def video_metadata(relative_times: list[float], width: int, height: int):
    """VideoMetadata that makes the processor print exactly these frame times (fps=1, indices = seconds)."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=len(relative_times), fps=1.0, frames_indices=list(relative_times),
                         width=width, height=height, duration=(relative_times[-1] if relative_times else 0.0) + 1.0)


def chat_text(processor, prompt: str) -> str:
    """The model's chat template around one video and one user prompt, ending with the assistant turn."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class ClipTokens:
    """Token ids and modality types for one prompt about one clip."""

    input_ids: torch.Tensor          # [1, L]
    mm_token_type_ids: torch.Tensor  # [1, L]


class Molmo2InputBuilder:
    """Builds pixel patches, pooling tables and prompt tokens the way `Molmo2Processor` does."""

    def __init__(self, processor) -> None:
        from transformers.models.molmo2.video_processing_molmo2 import arange_for_pooling

        self.processor = processor
        vp = processor.video_processor
        self.patch_size = int(vp.patch_size)
        self.crop_size = int(vp.size["height"])
        self.patches_per_side = self.crop_size // self.patch_size
        self._arange_for_pooling = arange_for_pooling
        self._grid = torch.arange(self.patches_per_side ** 2, dtype=torch.int32).reshape(
            self.patches_per_side, self.patches_per_side)
        self._tables: dict[tuple[int, int], torch.Tensor] = {}

    # ---- vision side -------------------------------------------------------------------------------------
    def frame_patches(self, images: np.ndarray) -> torch.Tensor:
        """[N, H, W, 3] uint8 RGB -> [N, patches, pixels_per_patch] float, as the video processor makes them."""
        out = self.processor.video_processor(videos=[images], do_sample_frames=False, return_tensors="pt")
        return out["pixel_values_videos"]

    def pooling_table(self, pooling: tuple[int, int]) -> torch.Tensor:
        """[tokens, ph*pw] patch indices pooled by each visual token of one frame (-1 = padding)."""
        if pooling not in self._tables:
            table, _, _ = self._arange_for_pooling(self._grid, pooling[0], pooling[1])
            self._tables[pooling] = table.to(torch.int64)
        return self._tables[pooling]

    def pooling_grid(self, pooling: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) of visual tokens of one frame at this pooling."""
        n = self.patches_per_side
        return -(-n // pooling[0]), -(-n // pooling[1])

    def clip_vision_inputs(self, clip: Clip, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Whole-clip vision inputs (pixel_values_videos, video_token_pooling, video_grids) for `patches`
        [T, P, D] of the clip's frames."""
        return self.vision_inputs(patches, [f.pooling for f in clip.frames])

    def vision_inputs(self, patches: torch.Tensor, poolings: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """Vision inputs for `patches` [T, P, D] of T frames pooled as `poolings` (one per frame), for one ViT call.
        Mixed poolings are padded to one width and declared as one grid row."""
        per_frame = patches.shape[1]
        width = max(p[0] * p[1] for p in poolings)
        rows = []
        for i, pooling in enumerate(poolings):
            table = self.pooling_table(pooling)
            table = torch.where(table >= 0, table + i * per_frame, table)
            if table.shape[1] < width:
                table = torch.nn.functional.pad(table, (0, width - table.shape[1]), value=-1)
            rows.append(table)
        if len(set(poolings)) == 1:
            r, c = self.pooling_grid(poolings[0])
            grids = torch.tensor([[len(poolings), r, c]], dtype=torch.int64)
        else:
            total = sum(t.shape[0] for t in rows)
            grids = torch.tensor([[1, total, 1]], dtype=torch.int64)
        return {"pixel_values_videos": patches, "video_token_pooling": torch.cat(rows), "video_grids": grids}

    # ---- text side ---------------------------------------------------------------------------------------
    def video_string(self, clip: Clip) -> str:
        """Frame times and visual placeholder tokens, as `Molmo2Processor.get_video_string` writes them."""
        proc = self.processor
        start = "<frame_start>" if proc.use_frame_special_tokens else "<im_start>"
        end = "<frame_end>" if proc.use_frame_special_tokens else "<im_end>"
        parts = []
        for i, (frame, t) in enumerate(zip(clip.frames, clip.relative_times())):
            rows, cols = self.pooling_grid(frame.pooling)
            row = "<im_patch>" * cols + ("<im_col>" if proc.video_use_col_tokens else "")
            parts.append((" " if i else "") + f"{t:.1f} " + start + row * rows + end)
        return "".join(parts)

    def tokens(self, clip: Clip, prompt: str) -> ClipTokens:
        """Token ids of the full prompt (BOS + chat template with the clip's video string)."""
        proc = self.processor
        text = chat_text(proc, prompt)
        bos = proc.tokenizer.bos_token or proc.tokenizer.eos_token
        if not text.startswith(bos):
            text = bos + text
        text = text.replace(proc.video_token, self.video_string(clip), 1)
        ids = proc.tokenizer(text, return_tensors="pt")["input_ids"]
        types = torch.tensor(proc.create_mm_token_type_ids(ids), dtype=torch.int64)
        return ClipTokens(input_ids=ids, mm_token_type_ids=types)
