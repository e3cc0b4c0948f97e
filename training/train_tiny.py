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
from dataclasses import asdict, dataclass, field
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
from molmo2_ros.core.tiny_model import TinySpec, build_config, build_processor  # noqa: E402
from molmo2_ros.core.types import Clip, ClipFrame, Frame  # noqa: E402
from molmo2_ros.offline.scenario import OCCLUDER, _background, _Object, render_frame  # noqa: E402

COLOURS = ("red", "blue", "green")
KINDS = ("ball", "square", "triangle")
LABELS = [f"{c} {k}" for c in COLOURS for k in KINDS]
SIZES = [(320, 240), (640, 480), (480, 360), (400, 300), (320, 320), (640, 360)]
NONE_ANSWER = "There are none."
SCENARIO_LABELS = [("red", "ball"), ("blue", "square"), ("green", "triangle")]

SPEC = TinySpec(vit_hidden=64, vit_layers=2, vit_heads=4, vit_intermediate=128, adapter_intermediate=256,
                text_hidden=128, text_layers=3, text_heads=4, text_kv_heads=2, text_head_dim=32,
                text_intermediate=384, init_std=0.02, seed=0)


# ---- data ---------------------------------------------------------------------------------------------------
def _visible(x: float, y: float, w: int, h: int) -> bool:
    ox0, oy0, ox1, oy1 = OCCLUDER
    return 0 <= x < w and 0 <= y < h and not (ox0 * w <= x <= ox1 * w and oy0 * h <= y <= oy1 * h)


def coord(v: float, size: int) -> int:
    return min(max(int(round(v / size * 1000)), 0), 1000)


def cell_of(x: float, y: float, w: int, h: int, pool: int = 3) -> int:
    """Row-major index of the pooled visual token whose patches hold pixel (x, y) (27x27 patches, pool x pool)."""
    grid = -(-27 // pool)
    col = min(int(x / w * 27), 26) // pool
    row = min(int(y / h * 27), 26) // pool
    return row * grid + col


FRAME_DT = 0.5  # 2 fps, the product's sampling rate
STAMP0 = 1_700_000_000_000_000_000


@dataclass
class Sample:
    """One training example: a clip (1..8 frames of one size), its prompt, the answer and where its coordinate
    digits point (character offset in the answer, frame index, pooled-token cell in that frame)."""

    frames: list[np.ndarray]
    pools: list[int]
    prompt: str
    answer: str
    digits: list[tuple[int, int, int]]
    visible: list[list[tuple[str, float, float]]]  # per frame: (label, x, y) of every visible object
    w: int
    h: int
    label: str = ""
    targets: list[list[tuple[float, float]]] = field(default_factory=list)  # per frame: the asked instances

    def clip(self) -> Clip:
        return Clip(index=0, frames=tuple(
            ClipFrame(Frame(STAMP0 + int(round(i * FRAME_DT * 1e9)), img), i, (p, p), p == 2)
            for i, (img, p) in enumerate(zip(self.frames, self.pools))))


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
            pool.append(_background(w, h, int(self.rng.integers(1 << 30))))
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
            obj = _Object(f"o{i}", f"{colour} {kind}", kind, colour, size, lambda t: (0.0, 0.0))
            objs.append(obj)
            pos[obj.id] = (x, y)
        img = render_frame(self.background(w, h), objs, pos)
        visible = [(o.label, *pos[o.id]) for o in objs if _visible(*pos[o.id], w, h)]
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
            objs.append(_Object(f"o{i}", f"{colour} {kind}", kind, colour, size, lambda t: (0.0, 0.0)))
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
            visible.append([(o.label, *pos[o.id], o.id) for o in objs if _visible(*pos[o.id], w, h)])
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

    def __call__(self, samples: list[Sample], digit_weight: float) -> dict:
        """All samples of a batch have frames of one size. Pool 3: 81 tokens per frame; pool 2: 196 (SlowFast
        key frames). The visual tokens of all frames of all samples are one sequence, in row order."""
        rows, types, labels, weights, attn_pos, attn_tgt, tables = [], [], [], [], [], [], []
        present_rows, digit_rows = [], []
        frame_no = 0
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
            rows.append(ids + ans)
            types.append(tt + [0] * len(ans))
            labels.append([-100] * len(ids) + ans)
            weights.append(w)
            for f, pool in enumerate(s.pools):
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
                tables.append(F.pad(table, (0, 9 - table.shape[1]), value=-1))
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
        patches = self.builder.frame_patches(np.stack([img for s in samples for img in s.frames]))
        table = torch.cat(tables)
        return dict(input_ids=input_ids, mm_token_type_ids=mm, attention_mask=att, labels=lab_t, weights=w_t,
                    patches=patches, present=torch.cat(present_rows), digits=torch.cat(digit_rows),
                    attn_pos=torch.tensor(attn_pos, dtype=torch.long).reshape(-1, 2),
                    attn_tgt=torch.tensor(attn_tgt, dtype=torch.long), tables=table,
                    grids=torch.tensor([[1, table.shape[0], 1]]))


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
    # eager attention in the LM (its attention weights are supervised); SDPA for the ViT and the adapter
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
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


def forward_losses(model, aux: AuxHead, batch: dict, supervise_heads: list[tuple[int, int]], w_aux: float,
                   w_attn: float) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    feats = model.get_video_features(batch["patches"], batch["tables"], batch["grids"]).pooler_output[0]
    pres_logits, dig_logits = aux(feats)  # [all visual tokens of the batch, ...]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                mm_token_type_ids=batch["mm_token_type_ids"],
                mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=(feats,))},
                output_attentions=w_attn > 0, use_cache=False)
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    weights = batch["weights"][:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                         reduction="none").reshape(labels.shape)
    lm = (ce * weights).sum() / weights.sum()
    digit_mask = weights > 1.0
    digit_ce = (ce * digit_mask).sum() / digit_mask.sum().clamp(min=1)
    text_mask = (labels != -100) & ~digit_mask
    text_ce = (ce * text_mask).sum() / text_mask.sum().clamp(min=1)
    l_pres = F.binary_cross_entropy_with_logits(pres_logits, batch["present"])
    dmask = batch["digits"] != -100
    l_dig = F.cross_entropy(dig_logits[dmask], batch["digits"][dmask]) if dmask.any() else feats.sum() * 0
    l_attn = torch.zeros(())
    if w_attn > 0 and len(batch["attn_pos"]):
        bi, pi = batch["attn_pos"][:, 0], batch["attn_pos"][:, 1]
        terms = []
        for layer, head in supervise_heads:
            a = out.attentions[layer][bi, head, pi, batch["attn_tgt"]]
            terms.append(-torch.log(a + 1e-6).mean())
        l_attn = torch.stack(terms).mean()
    total = lm + w_aux * (l_pres * 10 + l_dig) + w_attn * l_attn
    return dict(total=total, lm=lm.detach(), digit_ce=digit_ce.detach(), text_ce=text_ce.detach(),
                aux_present=l_pres.detach(), aux_digits=l_dig.detach(), attn=l_attn.detach())


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
    params = list(model.parameters()) + list(aux.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    L = SPEC.text_layers
    supervise = [(L - 2, 0), (L - 1, 0)]
    step = 0
    sampler = SceneSampler(args.seed, args.absent_from_vocabulary)
    ckpt = out / "ckpt.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        aux.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"])
        sampler.rng = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    else:
        torch.manual_seed(args.seed)
    eval_points = make_eval_set(args.eval_n, seed=10_000 + args.seed, max_objects=4)
    eval_tracks = make_track_eval_set(args.track_eval_n, seed=20_000 + args.seed) if args.p_track else []
    log_path = out / "loss_curve.csv"
    fields = ["step", "elapsed_s", "lr", "total", "lm", "digit_ce", "text_ce", "aux_present", "aux_digits", "attn",
              "eval_hit_rate", "eval_answered", "eval_parse_fail", "eval_track_hit_rate", "eval_track_answered"]
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
        if args.p_track and sampler.rng.random() < args.p_track:
            n_frames = 8 if sampler.rng.random() < 0.6 else int(sampler.rng.integers(2, 8))
            samples = [sampler.track_clip(w, h, n_frames, 3, cur["p_none"], vocabulary,
                                          slowfast=sampler.rng.random() < 0.7) for _ in range(args.track_batch)]
        else:
            scenes = [sampler.scene(w, h, cur["max_objects"], cur["p_none"], vocabulary) for _ in range(args.batch)]
            pool = 2 if args.p_slow and sampler.rng.random() < args.p_slow else 3
            samples = [point_sample(sc, pool) for sc in scenes]
        batch = batcher(samples, args.digit_weight)
        lr = lr_at(step - args.phase_start, args.steps - args.phase_start, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        losses = forward_losses(model, aux, batch, supervise, args.w_aux, args.w_attn)
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
        if step % args.eval_every == 0 or step == args.steps:
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
                        "elapsed": elapsed}, tmp)
            os.replace(tmp, ckpt)
    if args.export:
        export(model, processor, Path(args.export))
    return 0


def export(model, processor, folder: Path) -> None:
    """Save a plain Molmo2 checkpoint (no auxiliary head), fp32 safetensors, plus the processor."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config._attn_implementation = "sdpa"
    model.eval().save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    print(f"saved {folder}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
