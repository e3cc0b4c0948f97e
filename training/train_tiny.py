"""Train a tiny Molmo2 (the real transformers classes, processor and output grammar) on the synthetic world.

Two tasks, the output grammar of Molmo2:
- single-frame pointing: "Point to the {colour} {shape}." -> `<points coords="0.0 1 XXX YYY">{label}</points>`
  (the leftmost visible instance when there are several; `There are none.` when there is none);
- tracking over a clip of 2-8 frames at 2 fps (`--p-track`, the product's SlowFast poolings):
  "Track the {colour} {shape}." -> `<tracks coords="0.0 1 XXX YYY 2 XXX YYY;0.5 1 XXX YYY;...">{label}</tracks>`
  (every visible instance, ids by first appearance, frames without one left out).

Plain end-to-end training learns the grammar but never reads the image (issue 7). Three training-only signals
break that plateau; none of them is part of the saved checkpoint:
1. an auxiliary head on the adapter's pooled visual tokens (81 per frame): which label has its centre in this
   token's cell, and the hundreds/tens digits of that centre's x and y (what the answer must spell);
2. attention supervision: at every position that predicts a coordinate digit, one head in each of the last two
   LM layers is trained to attend to the visual token whose cell holds the target's centre (in its frame);
3. a larger loss weight on the coordinate digits.
Plus an init that makes position easy to read: 2-D sin/cos ViT position embeddings, adapter weights at
1/sqrt(fan_in), a zero `<im_patch>` embedding (the visual token is then the adapter output alone).

The saved folder is a plain Molmo2 checkpoint (save_pretrained of model + processor).

Usage (resumable; `--resume` continues from OUT/ckpt.pt). The shipped model's exact phases are in
training/README.md; e.g. phase 1:
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python training/train_tiny.py --out training/runs/v1 --steps 4000 \
        --stop-at 2000 --eval-every 250
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder  # noqa: E402
from molmo2_ros.core.sampling import tokens_per_frame  # noqa: E402
from scripts.tiny_model import TinySpec, build_config, build_processor  # noqa: E402
from molmo2_ros.offline.data.scenario import OCCLUDER, SceneObject, render_frame, textured_background  # noqa: E402
from video_tasks import PLAN_WEIGHTS, TASKS, VideoTaskSampler  # noqa: E402
from samples import (COLOURS, EVENT_FLAGS, FRAME_DT, KINDS, LABELS, NONE_ANSWER, STAMP0, Sample,  # noqa: E402,F401
                     cell_of, coord)

SIZES = [(320, 240), (640, 480), (480, 360), (400, 300), (320, 320), (640, 360)]
SCENARIO_LABELS = [("red", "ball"), ("blue", "square"), ("green", "triangle")]

SPEC = TinySpec(vit_hidden=64, vit_layers=2, vit_heads=4, vit_intermediate=128, adapter_intermediate=256,
                text_hidden=128, text_layers=3, text_heads=4, text_kv_heads=2, text_head_dim=32,
                text_intermediate=384, init_std=0.02, seed=0)


# ---- data ---------------------------------------------------------------------------------------------------
def is_visible(x: float, y: float, w: int, h: int) -> bool:
    ox0, oy0, ox1, oy1 = OCCLUDER
    return 0 <= x < w and 0 <= y < h and not (ox0 * w <= x <= ox1 * w and oy0 * h <= y <= oy1 * h)


def point_sample(scene: dict, pool: int = 3) -> Sample:
    """Single-frame pointing at the leftmost instance of the asked label."""
    digits = []
    if scene["targets"]:
        x, y = scene["targets"][0]
        xy = f'{coord(x, scene["w"]):03d} {coord(y, scene["h"]):03d}'
        answer = f'<points coords="0.0 1 {xy}">{scene["label"]}</points>'
        start = answer.index('coords="') + len('coords="0.0 1 ')
        cell = cell_of(x, y, scene["w"], scene["h"], pool)
        digits = [(start + k, 0, cell) for k in (0, 1, 2, 4, 5, 6)]
    else:
        answer = NONE_ANSWER
    return Sample([scene["image"]], [pool], f"Point to the {scene['label']}.", answer, digits, [scene["visible"]],
                  scene["w"], scene["h"], scene["label"], [scene["targets"]])


def track_answer(label: str, per_frame: list[dict[int, tuple[float, float]]], pools: list[int], w: int, h: int
                 ) -> tuple[str, list[tuple[int, int, int]]]:
    """`<tracks coords="t id x y ...;...">label</tracks>` over the frames where an instance is visible (ids by
    first appearance, then by x), or `There are none.`; plus the digit targets."""
    order: list[int] = []
    for frame in per_frame:
        order += sorted((k for k in frame if k not in order), key=lambda k: frame[k][0])
    if not order:
        return NONE_ANSWER, []
    ids = {k: i + 1 for i, k in enumerate(order)}
    prefix = '<tracks coords="'
    coords, digits = "", []
    for f, frame in enumerate(per_frame):
        if not frame:
            continue
        group = ("" if not coords else ";") + f"{f * FRAME_DT:.1f}"
        for k in sorted(frame, key=ids.get):
            x, y = frame[k]
            group += f" {ids[k]} "
            at = len(prefix) + len(coords) + len(group)
            group += f"{coord(x, w):03d} {coord(y, h):03d}"
            cell = cell_of(x, y, w, h, pools[f])
            digits += [(at + d, f, cell) for d in (0, 1, 2, 4, 5, 6)]
        coords += group
    return f'{prefix}{coords}">{label}</tracks>', digits


class SceneSampler:
    """Random single frames and moving clips of the synthetic world (same renderer, colours, shapes, occluder)."""

    def __init__(self, seed: int, absent_from_vocabulary: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.absent_from_vocabulary = absent_from_vocabulary
        self._backgrounds: dict[tuple[int, int], list[np.ndarray]] = {}

    def background(self, w: int, h: int) -> np.ndarray:
        pool = self._backgrounds.setdefault((w, h), [])
        if len(pool) < 8:
            pool.append(textured_background(w, h, int(self.rng.integers(1 << 30))))
            return pool[-1]
        return pool[int(self.rng.integers(len(pool)))]

    def _label(self, vocabulary: str) -> tuple[str, str]:
        if vocabulary == "scenario":
            return SCENARIO_LABELS[int(self.rng.integers(3))]
        return COLOURS[int(self.rng.integers(3))], KINDS[int(self.rng.integers(3))]

    def _ask(self, present: list[str], p_none: float, vocabulary: str) -> str:
        """A present label, or with probability p_none an absent one (from the batch's vocabulary when
        `absent_from_vocabulary`, so that "none" is not a shortcut for labels outside the scenario's)."""
        if present and self.rng.random() >= p_none:
            return present[int(self.rng.integers(len(present)))]
        pool = LABELS
        if self.absent_from_vocabulary and vocabulary == "scenario":
            scenario = [f"{c} {k}" for c, k in SCENARIO_LABELS]
            if any(lab not in present for lab in scenario):
                pool = scenario
        absent = [lab for lab in pool if lab not in present]
        return absent[int(self.rng.integers(len(absent)))]

    def scene(self, w: int, h: int, max_objects: int, p_none: float, vocabulary: str = "all") -> dict:
        """vocabulary "all": any of the 9 colour x shape labels; "scenario": only the default scenario's
        red ball / blue square / green triangle (several instances of one label are common)."""
        rng = self.rng
        n = int(rng.integers(1, max_objects + 1))
        objs, pos = [], {}
        px = min(w, h)
        for i in range(n):
            size = float(rng.uniform(0.04, 0.065))
            for _ in range(50):
                x, y = float(rng.uniform(0.02, 0.98) * w), float(rng.uniform(0.02, 0.98) * h)
                if all(math.dist((x, y), p) > (size + o.size) * px * 1.1 for o, p in zip(objs, pos.values())):
                    break
            colour, kind = self._label(vocabulary)
            obj = SceneObject(f"o{i}", f"{colour} {kind}", kind, colour, size, lambda t: (0.0, 0.0))
            objs.append(obj)
            pos[obj.id] = (x, y)
        img = render_frame(self.background(w, h), objs, pos)
        visible = [(o.label, *pos[o.id]) for o in objs if is_visible(*pos[o.id], w, h)]
        label = self._ask(sorted({v[0] for v in visible}), p_none, vocabulary)
        targets = sorted([(x, y) for lab, x, y in visible if lab == label])
        return {"image": img, "label": label, "targets": targets, "visible": visible, "w": w, "h": h}

    def track_clip(self, w: int, h: int, n_frames: int, max_objects: int, p_none: float, vocabulary: str,
                   slowfast: bool) -> Sample:
        """Objects moving in straight lines (speeds like the default scenario's, up to 0.15 image/s), some
        falling (0.7 image heights in 1.5 s, from rest), entering, leaving and passing behind the occluder."""
        rng = self.rng
        n = int(rng.integers(1, max_objects + 1))
        objs, paths = [], {}
        span = (n_frames - 1) * FRAME_DT
        for i in range(n):
            size = float(rng.uniform(0.04, 0.065))
            x0, y0 = float(rng.uniform(-0.05, 1.05)), float(rng.uniform(0.02, 0.98))
            speed, angle = float(rng.uniform(0.0, 0.15)), float(rng.uniform(0, 2 * math.pi))
            vx, vy = speed * math.cos(angle), speed * math.sin(angle)
            fall_at = float(rng.uniform(-1.0, span)) if rng.random() < 0.2 else None
            colour, kind = self._label(vocabulary)
            objs.append(SceneObject(f"o{i}", f"{colour} {kind}", kind, colour, size, lambda t: (0.0, 0.0)))
            paths[f"o{i}"] = (x0, y0, vx, vy, fall_at)

        def at(key: str, t: float) -> tuple[float, float]:
            x0, y0, vx, vy, fall_at = paths[key]
            y = y0 + vy * t
            if fall_at is not None and t > fall_at:
                y += 0.7 * min((t - fall_at) / 1.5, 1.0) ** 2
            return (x0 + vx * t) * w, y * h

        background = self.background(w, h)
        offset = int(rng.integers(4))
        pools = [2 if slowfast and (offset + f) % 4 == 0 else 3 for f in range(n_frames)]
        frames, visible = [], []
        for f in range(n_frames):
            pos = {o.id: at(o.id, f * FRAME_DT) for o in objs}
            frames.append(render_frame(background, objs, pos))
            visible.append([(o.label, *pos[o.id], o.id) for o in objs if is_visible(*pos[o.id], w, h)])
        label = self._ask(sorted({v[0] for frame in visible for v in frame}), p_none, vocabulary)
        per_frame = [{v[3]: (v[1], v[2]) for v in frame if v[0] == label} for frame in visible]
        answer, digits = track_answer(label, per_frame, pools, w, h)
        return Sample(frames, pools, f"Track the {label}.", answer, digits,
                      [[v[:3] for v in frame] for frame in visible], w, h, label,
                      [list(frame.values()) for frame in per_frame])


class Batcher:
    """Turns samples into model inputs, labels, loss weights and auxiliary targets."""

    def __init__(self, processor, builder: Molmo2InputBuilder) -> None:
        self.processor = processor
        self.builder = builder
        tok = processor.tokenizer
        self.tok = tok
        self.eos = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad = tok.pad_token_id
        self.patch_id = tok.convert_tokens_to_ids("<im_patch>")
        self._prompt_cache: dict[tuple, tuple[list[int], list[int]]] = {}

    def prompt(self, sample: Sample) -> tuple[list[int], list[int]]:
        """Prompt token ids and types; they depend on the prompt, the poolings and the frame times only."""
        key = (sample.prompt, tuple(sample.pools))
        if key not in self._prompt_cache:
            t = self.builder.tokens(sample.clip(), sample.prompt)
            self._prompt_cache[key] = (t.input_ids[0].tolist(), t.mm_token_type_ids[0].tolist())
        return self._prompt_cache[key]

    def __call__(self, samples: list[Sample], digit_weight: float, key_weight: float = 1.0) -> dict:
        """All samples of a batch have frames of one size. Pool 3: 81 tokens per frame; pool 2: 196; pool 5: 36
        (SlowFast plans). Samples that share their `frames` list (several questions about one clip) share one
        vision pass: `patches`/`tables` and the auxiliary targets cover each distinct clip once, and
        `vis_index` picks, in batch row order, the visual tokens each row's prompt holds.
        Time-key characters get `key_weight` and the same attention supervision as digits."""
        rows, types, labels, weights, attn_pos, attn_tgt, tables = [], [], [], [], [], [], []
        present_rows, digit_rows, flag_rows, flag_mask, vis_index, images = [], [], [], [], [], []
        clips: dict[int, tuple[int, int]] = {}  # id(frames) -> (first visual token, tokens)
        groups: dict[int, list] = {}  # id(frames) -> [rows, common prompt prefix]
        frame_no = tokens = 0
        width = max(p * p for s in samples for p in s.pools)
        for b, s in enumerate(samples):
            ids, tt = self.prompt(s)
            ans = self.tok(s.answer, add_special_tokens=False)["input_ids"] + [self.eos]
            w = [0.0] * len(ids) + [1.0] * len(ans)
            patch_pos = [i for i, t in enumerate(ids) if t == self.patch_id]
            starts = np.cumsum([0] + [tokens_per_frame((p, p)) for p in s.pools])
            # byte-level tokenizer without merges: one token per character (ASCII)
            for char, f, cell in s.digits:
                p = len(ids) + char
                w[p] = digit_weight * (0.5 if s.answer[char + 1:char + 2] in (" ", '"', ";") else 1.0)
                attn_pos.append((b, p - 1))  # the position whose logits predict this digit
                attn_tgt.append(patch_pos[starts[f] + cell])
            for char, f, cell in s.keys:
                p = len(ids) + char
                w[p] = key_weight
                attn_pos.append((b, p - 1))
                attn_tgt.append(patch_pos[starts[f] + cell])
            rows.append(ids + ans)
            types.append(tt + [0] * len(ans))
            labels.append([-100] * len(ids) + ans)
            weights.append(w)
            if id(s.frames) in clips:
                first, n = clips[id(s.frames)]
                vis_index.append(torch.arange(first, first + n))
                group = groups[id(s.frames)]
                group[0].append(b)
                group[1] = _common_prefix(group[1], ids)
                continue
            clips[id(s.frames)] = (tokens, int(starts[-1]))
            groups[id(s.frames)] = [[b], ids[:-1]]  # rows, their common prompt prefix (>= 1 token left each)
            vis_index.append(torch.arange(tokens, tokens + int(starts[-1])))
            tokens += int(starts[-1])
            images += s.frames
            for f, pool in enumerate(s.pools):  # targets of the clip's tokens: once per clip
                grid = -(-27 // pool)
                flags = torch.zeros((grid * grid, len(EVENT_FLAGS)))
                for x, y, values in (s.flags[f] if s.flags else []):
                    c = cell_of(x, y, s.w, s.h, pool)
                    flags[c] = torch.maximum(flags[c], torch.tensor(values, dtype=torch.float32))
                flag_rows.append(flags)
                flag_mask.append(torch.full((grid * grid,), float(bool(s.flags))))
                grid = -(-27 // pool)
                pres = torch.zeros((grid * grid, len(LABELS)))
                dig = torch.full((grid * grid, 4), -100, dtype=torch.long)
                for lab, x, y in s.visible[f]:
                    c = cell_of(x, y, s.w, s.h, pool)
                    pres[c, LABELS.index(lab)] = 1.0
                    cx, cy = coord(x, s.w), coord(y, s.h)
                    dig[c] = torch.tensor([min(cx // 100, 9), cx // 10 % 10, min(cy // 100, 9), cy // 10 % 10])
                present_rows.append(pres)
                digit_rows.append(dig)
                table = self.builder.pooling_table((pool, pool))
                table = torch.where(table >= 0, table + frame_no * 27 * 27, table)  # 729 patches/frame
                tables.append(F.pad(table, (0, width - table.shape[1]), value=-1))
                frame_no += 1
        L = max(len(r) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, L), self.pad, dtype=torch.long)
        mm = torch.zeros((B, L), dtype=torch.long)
        att = torch.zeros((B, L), dtype=torch.long)
        lab_t = torch.full((B, L), -100, dtype=torch.long)
        w_t = torch.zeros((B, L))
        for b in range(B):
            n = len(rows[b])
            input_ids[b, :n] = torch.tensor(rows[b])
            mm[b, :n] = torch.tensor(types[b])
            att[b, :n] = 1
            lab_t[b, :n] = torch.tensor(labels[b])
            w_t[b, :n] = torch.tensor(weights[b])
        table = torch.cat(tables)
        return dict(input_ids=input_ids, mm_token_type_ids=mm, attention_mask=att, labels=lab_t, weights=w_t,
                    patches=frame_patches(np.stack(images)), present=torch.cat(present_rows),
                    digits=torch.cat(digit_rows), flags=torch.cat(flag_rows), flag_mask=torch.cat(flag_mask),
                    patch_id=self.patch_id, vis_index=torch.cat(vis_index),
                    groups=[(rows_, len(prefix)) for rows_, prefix in groups.values()],
                    clip_tokens=[n for _, n in clips.values()],
                    attn_pos=torch.tensor(attn_pos, dtype=torch.long).reshape(-1, 2),
                    attn_tgt=torch.tensor(attn_tgt, dtype=torch.long), tables=table,
                    grids=torch.tensor([[1, table.shape[0], 1]]))


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def frame_patches(images: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 RGB -> [N, 729, 588] pixel patches: the operations of Molmo2's video processor
    (bilinear resize to 378x378 in float without antialiasing, round, clamp, scale to [-1, 1], 14 px patches),
    written out because the processor takes ~45 ms per frame here and this ~10 ms; equal to it within 2e-7
    (test_training_data)."""
    from transformers.models.molmo2.video_processing_molmo2 import batch_pixels_to_patches

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    x = F.interpolate(x, size=(378, 378), mode="bilinear", align_corners=False, antialias=False)
    x = (x.round().clamp(0, 255) * (1 / 255.0) - 0.5) / 0.5
    return batch_pixels_to_patches(x.permute(0, 2, 3, 1), 14)


# ---- model --------------------------------------------------------------------------------------------------
def sincos_2d(n: int, dim: int, amplitude: float = 1.0) -> torch.Tensor:
    """[n*n, dim] 2-D sin/cos code of a row-major n x n grid (half the channels for x, half for y)."""
    quarter = dim // 4
    freqs = torch.exp(torch.linspace(math.log(0.5), math.log(0.5 * n), quarter)) * (math.pi / n)
    idx = torch.arange(n, dtype=torch.float32)
    ang = idx[:, None] * freqs[None, :]
    code = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)  # [n, dim/2]
    ys, xs = torch.meshgrid(idx.long(), idx.long(), indexing="ij")
    out = torch.cat([code[xs.reshape(-1)], code[ys.reshape(-1)]], dim=1)
    return amplitude * out


def onehot_2d(n: int, dim: int, amplitude: float = 1.0) -> torch.Tensor:
    """[n*n, dim] position code: one-hot column in channels 0..n-1, one-hot row in channels n..2n-1, zeros
    elsewhere. Every digit of a coordinate is then a linear (lookup) function of the code."""
    out = torch.zeros(n * n, dim)
    for r in range(n):
        for c in range(n):
            out[r * n + c, c] = amplitude
            out[r * n + c, n + r] = amplitude
    return out


def build_model(processor, pos_code: str = "sincos", pos_amplitude: float = 1.0):
    from transformers import GenerationConfig, Molmo2ForConditionalGeneration

    config = build_config(SPEC, processor.tokenizer)
    # the LM's attention is SDPA plus the probe of its supervised heads (AttentionProbe); SDPA for the ViT and
    # the adapter
    AttentionProbe.register()
    config._attn_implementation = AttentionProbe.NAME
    config.text_config._attn_implementation = AttentionProbe.NAME
    config.vision_config._attn_implementation = "sdpa"
    config.adapter_config._attn_implementation = "sdpa"
    torch.manual_seed(SPEC.seed)
    model = Molmo2ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=False, max_new_tokens=64)
    vt = model.model.vision_tower
    with torch.no_grad():
        code = onehot_2d if pos_code == "onehot" else sincos_2d
        vt.positional_embedding.copy_(code(27, SPEC.vit_hidden, pos_amplitude))
        for mod in list(vt.modules()) + list(model.model.multi_modal_projector.modules()):
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=1.0 / math.sqrt(mod.in_features))
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        patch_id = processor.tokenizer.convert_tokens_to_ids("<im_patch>")
        model.model.language_model.embed_tokens.weight[patch_id].zero_()
    return model


class AuxHead(nn.Module):
    """Training-only head on pooled visual tokens: label presence (9) and centre digits (4 x 10)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.present = nn.Linear(dim, len(LABELS))
        self.digits = nn.Linear(dim, 40)

    def forward(self, feats: torch.Tensor):
        return self.present(feats), self.digits(feats).reshape(*feats.shape[:-1], 4, 10)


class FlagHead(nn.Module):
    """Training-only head on the LM's hidden states at the visual tokens (after `FLAG_LAYER` layers, where the
    visual tokens of all frames have attended to each other): is the object whose centre lies in this token
    falling, touching, leaving, seen for the first time in the clip (EVENT_FLAGS). Only frames side by side tell
    these apart, so this teaches the LM to compare frames where the answer will look."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, len(EVENT_FLAGS))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


FLAG_LAYER = 2  # hidden_states[2]: the input of the last LM layer


class AttentionProbe:
    """The LM's attention function: PyTorch SDPA, plus, while `request` is set, the log-probability that each
    supervised (layer, head) puts on a target key at requested query positions. That is the attention
    supervision without eager attention, which keeps every layer's [batch, heads, L, L] probabilities (30 % of
    a step's CPU time and most of its memory here). Equal to eager attention's weights (test_training_data)."""

    NAME = "molmo2_ros_probe_sdpa"
    current: "AttentionProbe | None" = None

    def __init__(self, heads: list[tuple[int, int]]) -> None:
        self.heads = heads
        self.request: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rows, positions, targets
        self.logp: list[torch.Tensor] = []

    @classmethod
    def register(cls) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(cls.NAME, cls._forward)
        AttentionMaskInterface.register(cls.NAME, sdpa_mask)

    @staticmethod
    def _forward(module, query, key, value, attention_mask, **kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        probe = AttentionProbe.current
        if probe is not None and probe.request is not None:
            for layer, head in probe.heads:
                if module.layer_idx == layer:
                    probe.logp.append(probe._target_logp(module, query, key, attention_mask, head,
                                                         kwargs.get("scaling") or module.scaling))
        return out

    def _target_logp(self, module, query, key, mask, head: int, scaling: float) -> torch.Tensor:
        rows, pos, tgt = self.request
        kv = head // module.num_key_value_groups
        parts = []
        for b in torch.unique(rows).tolist():
            sel = (rows == b).nonzero().squeeze(1)
            logits = (query[b, head, pos[sel]] @ key[b, kv].transpose(0, 1)).float() * scaling  # [n, L]
            if mask is None:  # plain causal (queries are the last query.shape[2] positions)
                past = key.shape[2] - query.shape[2]
                allowed = torch.arange(key.shape[2])[None, :] <= past + pos[sel][:, None]
            else:
                allowed = mask[b, 0, pos[sel]]
            if allowed.dtype == torch.bool:
                logits = logits.masked_fill(~allowed, float("-inf"))
            else:
                logits = logits + allowed
            parts.append(F.log_softmax(logits, dim=-1).gather(1, tgt[sel][:, None]).squeeze(1))
        return torch.cat(parts)


def forward_losses(model, aux: AuxHead, batch: dict, probe: AttentionProbe, w_aux: float,
                   w_attn: float, flag_head: FlagHead | None = None, w_flags: float = 0.0) -> dict:
    """All training losses of a batch. The LM runs once per distinct clip on the rows' common prefix (BOS, the
    video, the start of the user turn: ~90 % of a prompt), then on the rows' own suffixes (question and answer)
    from that prefix's KV cache, repeated per row: the same losses as running every row in full (float rounding
    aside), at a third of the LM cost with three questions per clip."""
    from transformers import DynamicCache
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    feats = model.get_video_features(batch["patches"], batch["tables"], batch["grids"]).pooler_output[0]
    pres_logits, dig_logits = aux(feats)  # [visual tokens of the batch's distinct clips, ...]
    use_flags = flag_head is not None and w_flags > 0 and bool(batch["flag_mask"].any())
    ids, labels_all, weights_all = batch["input_ids"], batch["labels"], batch["weights"]
    pos_all, tgt_all = batch["attn_pos"], batch["attn_tgt"]
    ce_parts, w_parts, lab_parts, hidden = [], [], [], []
    logp: list[list[torch.Tensor]] = [[] for _ in probe.heads]
    first = 0
    for (rows, prefix), n_tok in zip(batch["groups"], batch["clip_tokens"]):
        rows_t = torch.tensor(rows)
        clip_feats = feats[first:first + n_tok]
        first += n_tok
        cache = DynamicCache(config=model.config)
        head = ids[rows[0], :prefix][None]
        out = model(input_ids=head, attention_mask=torch.ones_like(head),
                    mm_token_type_ids=batch["mm_token_type_ids"][rows[0], :prefix][None],
                    mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(clip_feats,))},
                    past_key_values=cache, use_cache=True, output_hidden_states=use_flags, logits_to_keep=1)
        if use_flags:
            hidden.append(out.hidden_states[FLAG_LAYER][0][head[0] == batch["patch_id"]])
        cache.batch_repeat_interleave(len(rows))
        length = int(batch["attention_mask"][rows_t].sum(1).max())
        tail = ids[rows_t, prefix:length]
        mask = torch.cat([torch.ones(len(rows), prefix, dtype=torch.long),
                          batch["attention_mask"][rows_t, prefix:length]], dim=1)
        sel = torch.isin(pos_all[:, 0], rows_t) if w_attn > 0 else torch.zeros(len(pos_all), dtype=torch.bool)
        if sel.any():  # row index within the group, query position within the suffix
            local = {r: i for i, r in enumerate(rows)}
            probe.request = (torch.tensor([local[int(r)] for r in pos_all[sel, 0]]), pos_all[sel, 1] - prefix,
                             tgt_all[sel])
        probe.logp = []
        AttentionProbe.current = probe
        try:
            out = model(input_ids=tail, attention_mask=mask, mm_token_type_ids=torch.zeros_like(tail),
                        past_key_values=cache, use_cache=True)
        finally:
            AttentionProbe.current, probe.request = None, None
        for i, lp in enumerate(probe.logp):  # one per supervised head, in layer order
            logp[i].append(lp)
        # position prefix + j predicts token prefix + j + 1; prompt tokens are labelled -100
        logits = out.logits[:, :-1].float()
        labels = labels_all[rows_t, prefix + 1:length]
        ce_parts.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                        ignore_index=-100, reduction="none"))
        w_parts.append(weights_all[rows_t, prefix + 1:length].reshape(-1))
        lab_parts.append(labels.reshape(-1))
    ce, weights, labels = torch.cat(ce_parts), torch.cat(w_parts), torch.cat(lab_parts)
    lm = (ce * weights).sum() / weights.sum()
    digit_mask = weights > 1.0
    digit_ce = (ce * digit_mask).sum() / digit_mask.sum().clamp(min=1)
    text_mask = (labels != -100) & ~digit_mask
    text_ce = (ce * text_mask).sum() / text_mask.sum().clamp(min=1)
    l_pres = F.binary_cross_entropy_with_logits(pres_logits, batch["present"])
    dmask = batch["digits"] != -100
    l_dig = F.cross_entropy(dig_logits[dmask], batch["digits"][dmask]) if dmask.any() else feats.sum() * 0
    l_attn = torch.stack([-torch.cat(lp).mean() for lp in logp]).mean() if logp[0] else torch.zeros(())
    l_flags = torch.zeros(())
    if use_flags:
        # visual tokens of the distinct clips in batch order = the order of the batch's flag rows
        per = F.binary_cross_entropy_with_logits(flag_head(torch.cat(hidden)), batch["flags"], reduction="none")
        # positives are rare (a few tokens per clip): weight them up so the head cannot ignore them
        per = per * (1 + 20 * batch["flags"]) * batch["flag_mask"][:, None]
        l_flags = per.sum() / batch["flag_mask"].sum().clamp(min=1) / batch["flags"].shape[1]
    total = lm + w_aux * (l_pres * 10 + l_dig) + w_attn * l_attn + w_flags * l_flags
    return dict(total=total, lm=lm.detach(), digit_ce=digit_ce.detach(), text_ce=text_ce.detach(),
                aux_present=l_pres.detach(), aux_digits=l_dig.detach(), attn=l_attn.detach(),
                flags=l_flags.detach())


# ---- evaluation ---------------------------------------------------------------------------------------------
def make_eval_set(n: int, seed: int, max_objects: int) -> list[Sample]:
    sampler = SceneSampler(seed)
    sizes = [(320, 240), (640, 480)]
    out = []
    while len(out) < n:
        s = sampler.scene(*sizes[len(out) % 2], max_objects=max_objects, p_none=0.0)
        if s["targets"]:
            out.append(point_sample(s))
    return out


def make_track_eval_set(n: int, seed: int) -> list[Sample]:
    """8-frame clips at 2 fps with SlowFast poolings, 1-3 objects, asked about a label that is visible."""
    sampler = SceneSampler(seed)
    out = []
    while len(out) < n:
        s = sampler.track_clip(320, 240, 8, 3, 0.0, "all", slowfast=True)
        if s.digits:
            out.append(s)
    return out


def make_video_eval_set(n: int, seed: int) -> list[Sample]:
    """8-frame clips of random worlds under the node's default plan (3x3 key frames every 4th, 5x5 otherwise),
    the four tasks in turn, 320x240 and 640x480."""
    sampler = VideoTaskSampler(seed)
    return [sampler.sample(*((320, 240), (640, 480))[i % 2], 8, TASKS[i % len(TASKS)], "key3_fast5", 0.2)
            for i in range(n)]


@torch.no_grad()
def evaluate_video(model, processor, builder, samples: list[Sample], radius_frac: float = 0.05) -> dict:
    """Greedy answers of the video eval set: hit rate (points within radius_frac of the diagonal of an answer
    point of the truth on the same frame), recall of the truth's points, "none" when the truth is empty, exact
    counts, and the hit rate of event answers alone."""
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.parsing import parse_answer
    from molmo2_ros.core.types import Query, TaskKind

    was_training = model.training
    model.eval()
    engine = Molmo2Engine(EngineConfig(model="in-memory", reuse_prefix=False, cache_features=False,
                                       max_new_tokens=400))
    engine.model, engine.processor, engine.builder = model, processor, builder
    hits = preds = covered = total = none_ok = none_n = count_ok = count_n = ev_hits = ev_preds = 0
    for s in samples:
        task = {"Point to the": TaskKind.POINT, "How many": TaskKind.COUNT, "Track the": TaskKind.TRACK,
                "Point to any": TaskKind.EVENT}[next(k for k in ("Point to the", "How many", "Track the",
                                                                   "Point to any") if s.prompt.startswith(k))]
        # the prompt is rebuilt by the engine from the query text; pass the sample's own text
        text = s.prompt.split('"')[1] if task == TaskKind.COUNT else s.label
        res = engine.infer(s.clip(), [Query("q", task, text)])
        parsed = parse_answer(res.generations[0].text if res.generations else "")
        radius = radius_frac * math.hypot(s.w, s.h)
        truth_n = sum(len(t) for t in s.targets)
        if truth_n == 0:
            none_n += 1
            none_ok += not parsed.points and (parsed.count or 0) == 0
        if task == TaskKind.COUNT:
            count_n += 1
            got = parsed.count if parsed.count is not None else len(parsed.points)
            count_ok += got == truth_n
            continue
        by_frame: dict[int, list[tuple[float, float]]] = {}
        for p in parsed.points:
            f = int(round(p.key / FRAME_DT))
            xy = (p.x / 1000 * s.w, p.y / 1000 * s.h)
            ok = 0 <= f < len(s.frames) and any(math.dist(xy, t) <= radius for t in s.targets[f])
            hits += ok
            preds += 1
            if task == TaskKind.EVENT:
                ev_hits += ok
                ev_preds += 1
            by_frame.setdefault(f, []).append(xy)
        for f, frame in enumerate(s.targets):
            for t in frame:
                total += 1
                covered += any(math.dist(q, t) <= radius for q in by_frame.get(f, []))
    model.train(was_training)
    return {"hit_rate": hits / max(preds, 1), "recall": covered / max(total, 1),
            "none_correct": none_ok / max(none_n, 1), "count_exact": count_ok / max(count_n, 1),
            "event_hit_rate": ev_hits / max(ev_preds, 1)}


@torch.no_grad()
def evaluate(model, processor, builder, samples: list[Sample], radius_frac: float = 0.05) -> dict:
    """Greedy decoding through the product's Molmo2Engine path (plain path, no caches); a point hits when it lies
    within radius_frac of the diagonal of an asked instance visible in the frame its time names."""
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.parsing import parse_answer
    from molmo2_ros.core.types import Query, TaskKind

    was_training = model.training
    model.eval()
    engine = Molmo2Engine(EngineConfig(model="in-memory", reuse_prefix=False, cache_features=False,
                                       max_new_tokens=160))
    engine.model, engine.processor, engine.builder = model, processor, builder
    hits = preds = fails = answered = 0
    for s in samples:
        task = TaskKind.TRACK if s.prompt.startswith("Track") else TaskKind.POINT
        res = engine.infer(s.clip(), [Query("q", task, s.label)])
        parsed = parse_answer(res.generations[0].text if res.generations else "")
        if parsed.kind not in ("points", "tracks") or not parsed.points:
            fails += parsed.kind not in ("points", "tracks", "none")
            continue
        answered += 1
        radius = radius_frac * math.hypot(s.w, s.h)
        for p in parsed.points:
            preds += 1
            f = int(round(p.key / FRAME_DT))
            x, y = p.x / 1000 * s.w, p.y / 1000 * s.h
            hits += 0 <= f < len(s.frames) and any(math.dist((x, y), t) <= radius for t in s.targets[f])
    model.train(was_training)
    return {"hit_rate": hits / max(preds, 1), "answered": answered / len(samples),
            "parse_fail": fails / len(samples), "points": preds}


# ---- training -----------------------------------------------------------------------------------------------
def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    u = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(u, 1.0))))


def curriculum(step: int, phase2_start: int | None = None) -> dict:
    """Objects per frame grow with training; from `phase2_start` on, half of the batches use only the
    default scenario's vocabulary (red ball, blue square, green triangle)."""
    if phase2_start is not None and step >= phase2_start:
        return {"max_objects": 6, "p_none": 0.1, "scenario_frac": 0.5}
    if step < 400:
        return {"max_objects": 2, "p_none": 0.05, "scenario_frac": 0.0}
    if step < 1200:
        return {"max_objects": 4, "p_none": 0.1, "scenario_frac": 0.0}
    return {"max_objects": 6, "p_none": 0.1, "scenario_frac": 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="training/runs/tiny")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--digit-weight", type=float, default=3.0)
    ap.add_argument("--w-aux", type=float, default=1.0)
    ap.add_argument("--w-attn", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=60)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--keep-every", type=int, default=0, help="also keep ckpt_STEP.pt every this many steps")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--p-none", type=float, default=None,
                    help="override the curriculum's share of questions about an absent label (phase 3)")
    ap.add_argument("--p-slow", type=float, default=0.0,
                    help="share of batches with 2x2 pooling (196 tokens: the product's SlowFast key frames)")
    ap.add_argument("--stop-at", type=int, default=0, help="stop (after checkpointing) at this step")
    ap.add_argument("--phase2-start", type=int, default=None,
                    help="step from which half of the batches use only the scenario vocabulary")
    ap.add_argument("--p-track", type=float, default=0.0,
                    help="share of batches that are tracking clips (2-8 frames at 2 fps, SlowFast poolings)")
    ap.add_argument("--track-batch", type=int, default=4, help="clips per tracking batch")
    ap.add_argument("--track-eval-n", type=int, default=20, help="8-frame clips in the tracking evaluation")
    ap.add_argument("--absent-from-vocabulary", action="store_true",
                    help="in scenario-vocabulary batches, ask about absent labels of that vocabulary only")
    ap.add_argument("--phase-start", type=int, default=0,
                    help="step at which the learning-rate schedule (warmup + cosine to --steps) restarts")
    ap.add_argument("--pos-code", choices=("onehot", "sincos"), default="sincos")
    ap.add_argument("--pos-amplitude", type=float, default=1.0)
    ap.add_argument("--init-from", default="",
                    help="start from the weights of an exported checkpoint (fresh heads, optimiser and schedule)")
    ap.add_argument("--p-video", type=float, default=0.0,
                    help="share of batches from random worlds: point/count/track/event over 1-12 frame clips")
    ap.add_argument("--video-clips", type=int, default=2, help="clips per video batch")
    ap.add_argument("--questions", type=int, default=3,
                    help="questions per clip of a video batch (distinct tasks while there are enough; each draws "
                         "its own label); the clip and the prompt prefix are computed once")
    ap.add_argument("--freeze-vit", action="store_true", help="do not train the ViT (the adapter still trains)")
    ap.add_argument("--task-weights", default="point=0.3,count=0.2,track=0.25,event=0.25",
                    help="task mix of the video batches")
    ap.add_argument("--p-eight", type=float, default=0.5,
                    help="share of video batches with 8-frame clips (the demo's window); else 1-12 frames")
    ap.add_argument("--p-none-video", type=float, default=0.2, help="questions about a label not in sight")
    ap.add_argument("--key-weight", type=float, default=2.0, help="loss weight of time-key characters")
    ap.add_argument("--w-flags", type=float, default=1.0, help="weight of the LM visual-token event head")
    ap.add_argument("--video-eval-n", type=int, default=24, help="8-frame clips in the video evaluation")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", default="", help="also save the plain Molmo2 checkpoint here at the end")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor()
    builder = Molmo2InputBuilder(processor)
    batcher = Batcher(processor, builder)
    model = build_model(processor, args.pos_code, args.pos_amplitude)
    model.train()
    aux = AuxHead(SPEC.text_hidden)
    flag_head = FlagHead(SPEC.text_hidden)
    if args.init_from and not (args.resume and (out / "ckpt.pt").is_file()):
        from transformers import Molmo2ForConditionalGeneration

        model.load_state_dict(Molmo2ForConditionalGeneration.from_pretrained(args.init_from).state_dict())
        print(f"initialised from {args.init_from}", flush=True)
    if args.freeze_vit:
        model.model.vision_tower.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters()) + \
        list(flag_head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    L = SPEC.text_layers
    probe = AttentionProbe([(L - 2, 0), (L - 1, 0)])
    step = 0
    sampler = SceneSampler(args.seed, args.absent_from_vocabulary)
    video = VideoTaskSampler(args.seed + 1)
    tasks, task_p = zip(*[(k, float(v)) for k, v in (kv.split("=") for kv in args.task_weights.split(","))])
    task_p = np.array(task_p) / sum(task_p)
    plans, plan_p = zip(*PLAN_WEIGHTS.items())
    ckpt = out / "ckpt.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux.load_state_dict(state["aux"])
        if "flag_head" in state:
            flag_head.load_state_dict(state["flag_head"])
            video.rng = state["video_rng"]
        try:
            opt.load_state_dict(state["opt"])
        except ValueError:  # a run from before the flag head: its parameter groups differ; fresh moments
            print("optimizer state not compatible (new heads): starting fresh moments", flush=True)
        sampler.rng = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    else:
        torch.manual_seed(args.seed)
    eval_points = make_eval_set(args.eval_n, seed=10_000 + args.seed, max_objects=4)
    eval_tracks = make_track_eval_set(args.track_eval_n, seed=20_000 + args.seed) if args.p_track else []
    eval_video = make_video_eval_set(args.video_eval_n, seed=30_000 + args.seed) if args.p_video else []
    log_path = out / "loss_curve.csv"
    fields = ["step", "elapsed_s", "lr", "total", "lm", "digit_ce", "text_ce", "aux_present", "aux_digits", "attn",
              "eval_hit_rate", "eval_answered", "eval_parse_fail", "eval_track_hit_rate", "eval_track_answered",
              "flags", "eval_video_hit_rate", "eval_video_recall", "eval_video_none_correct",
              "eval_video_count_exact", "eval_video_event_hit_rate"]
    header = ",".join(fields) + "\r\n"
    if not log_path.exists() or not args.resume:
        log_path.write_text(header)
    elif not log_path.read_text().startswith(header):  # a run started before tracking: widen the header
        text = log_path.read_text()
        log_path.write_text(header + text.split("\n", 1)[1])
    (out / "args.json").write_text(json.dumps({**vars(args), "spec": asdict(SPEC)}, indent=1))
    elapsed0 = state["elapsed"] if args.resume and ckpt.is_file() else 0.0
    t0 = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    while step < args.steps:
        if args.stop_at and step >= args.stop_at:
            break
        cur = curriculum(step, args.phase2_start)
        if args.p_none is not None:
            cur["p_none"] = args.p_none
        w, h = SIZES[int(sampler.rng.integers(len(SIZES)))]
        vocabulary = "scenario" if cur["scenario_frac"] and sampler.rng.random() < cur["scenario_frac"] else "all"
        if args.p_video and (args.p_video >= 1 or video.rng.random() < args.p_video):
            w, h = SIZES[int(video.rng.integers(len(SIZES)))]
            n_frames = 8 if video.rng.random() < args.p_eight else int(video.rng.integers(1, 13))
            samples = [s for _ in range(args.video_clips) for s in video.samples(
                w, h, n_frames, [str(t) for t in video.rng.choice(tasks, size=args.questions,
                                                                  replace=args.questions > len(tasks), p=task_p)],
                str(video.rng.choice(plans, p=plan_p)), args.p_none_video)]
        elif args.p_track and sampler.rng.random() < args.p_track:
            n_frames = 8 if sampler.rng.random() < 0.6 else int(sampler.rng.integers(2, 8))
            samples = [sampler.track_clip(w, h, n_frames, 3, cur["p_none"], vocabulary,
                                          slowfast=sampler.rng.random() < 0.7) for _ in range(args.track_batch)]
        else:
            scenes = [sampler.scene(w, h, cur["max_objects"], cur["p_none"], vocabulary) for _ in range(args.batch)]
            pool = 2 if args.p_slow and sampler.rng.random() < args.p_slow else 3
            samples = [point_sample(sc, pool) for sc in scenes]
        batch = batcher(samples, args.digit_weight, args.key_weight)
        lr = lr_at(step - args.phase_start, args.steps - args.phase_start, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = forward_losses(model, aux, batch, probe, args.w_aux, args.w_attn, flag_head, args.w_flags)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        n_acc += 1
        row = None
        if step % 25 == 0:
            row = {k: round(v / n_acc, 5) for k, v in acc.items()}
            acc, n_acc = {}, 0
        ev = {}
        if (step % args.eval_every == 0 or step == args.steps) and eval_video:
            ev = {f"video_{k}": v for k, v in evaluate_video(model, processor, builder, eval_video).items()}
        elif step % args.eval_every == 0 or step == args.steps:
            ev = evaluate(model, processor, builder, eval_points)
            if eval_tracks:
                tr = evaluate(model, processor, builder, eval_tracks)
                ev.update(track_hit_rate=tr["hit_rate"], track_answered=tr["answered"])
        if row is not None or ev:
            elapsed = elapsed0 + time.time() - t0
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "lr": round(lr, 6), **(row or {}),
                   **{f"eval_{k}": v for k, v in ev.items() if k != "points"}}
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow([rec.get(k, "") for k in fields])
            print(json.dumps(rec), flush=True)
        if step % args.ckpt_every == 0 or step == args.steps or step == args.stop_at:
            elapsed = elapsed0 + time.time() - t0
            tmp = out / "ckpt.pt.tmp"
            torch.save({"model": model.state_dict(), "aux": aux.state_dict(), "opt": opt.state_dict(),
                        "rng": sampler.rng, "torch_rng": torch.get_rng_state(), "step": step,
                        "elapsed": elapsed, "flag_head": flag_head.state_dict(), "video_rng": video.rng}, tmp)
            os.replace(tmp, ckpt)
            if args.keep_every and step % args.keep_every == 0:  # history for held-out evaluation
                import shutil

                shutil.copyfile(ckpt, out / f"ckpt_{step:06d}.pt")
    if args.export:
        export(model, processor, Path(args.export))
    return 0


def export(model, processor, folder: Path) -> None:
    """Save a plain Molmo2 checkpoint (no auxiliary head), fp32 safetensors, plus the processor."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config._attn_implementation = "sdpa"
    model.config.text_config._attn_implementation = "sdpa"
    model.eval().save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    print(f"saved {folder}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
