"""Train a tiny Molmo2 (the real transformers classes, processor and output grammar) on the synthetic world.

Single-frame pointing: "Point to the {colour} {shape}." -> `<points coords="0.0 1 XXX YYY">{label}</points>`
(the leftmost visible instance when there are several; `There are none.` when there is none).

Plain end-to-end training learns the grammar but never reads the image (issue 7). Three training-only signals
break that plateau; none of them is part of the saved checkpoint:
1. an auxiliary head on the adapter's pooled visual tokens (81 per frame): which label has its centre in this
   token's cell, and the hundreds/tens digits of that centre's x and y (what the answer must spell);
2. attention supervision: at every position that predicts a coordinate digit, one head in each of the last two
   LM layers is trained to attend to the visual token whose cell holds the target's centre;
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


class SceneSampler:
    """Random single frames of the synthetic world (same renderer, colours, shapes and occluder)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self._backgrounds: dict[tuple[int, int], list[np.ndarray]] = {}

    def background(self, w: int, h: int) -> np.ndarray:
        pool = self._backgrounds.setdefault((w, h), [])
        if len(pool) < 8:
            pool.append(_background(w, h, int(self.rng.integers(1 << 30))))
            return pool[-1]
        return pool[int(self.rng.integers(len(pool)))]

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
            if vocabulary == "scenario":
                colour, kind = SCENARIO_LABELS[int(rng.integers(3))]
            else:
                colour, kind = COLOURS[int(rng.integers(3))], KINDS[int(rng.integers(3))]
            obj = _Object(f"o{i}", f"{colour} {kind}", kind, colour, size, lambda t: (0.0, 0.0))
            objs.append(obj)
            pos[obj.id] = (x, y)
        img = render_frame(self.background(w, h), objs, pos)
        visible = [(o.label, *pos[o.id]) for o in objs if _visible(*pos[o.id], w, h)]
        present = sorted({v[0] for v in visible})
        if present and rng.random() >= p_none:
            label = present[int(rng.integers(len(present)))]
        else:
            absent = [lab for lab in LABELS if lab not in present]
            label = absent[int(rng.integers(len(absent)))]
        targets = sorted([(x, y) for lab, x, y in visible if lab == label])
        return {"image": img, "label": label, "targets": targets, "visible": visible, "w": w, "h": h}


def coord(v: float, size: int) -> int:
    return min(max(int(round(v / size * 1000)), 0), 1000)


def answer_text(scene: dict) -> str:
    if not scene["targets"]:
        return NONE_ANSWER
    x, y = scene["targets"][0]  # the leftmost instance
    return f'<points coords="0.0 1 {coord(x, scene["w"]):03d} {coord(y, scene["h"]):03d}">{scene["label"]}</points>'


def cell_of(x: float, y: float, w: int, h: int, pool: int = 3) -> int:
    """Row-major index of the pooled visual token whose patches hold pixel (x, y) (27x27 patches, pool x pool)."""
    grid = -(-27 // pool)
    col = min(int(x / w * 27), 26) // pool
    row = min(int(y / h * 27), 26) // pool
    return row * grid + col


def one_frame_clip(image: np.ndarray, stamp_ns: int = 1_700_000_000_000_000_000, pooling=(3, 3)) -> Clip:
    return Clip(index=0, frames=(ClipFrame(Frame(stamp_ns, image), 0, pooling),))


class Batcher:
    """Turns scenes into model inputs, labels, loss weights and auxiliary targets."""

    def __init__(self, processor, builder: Molmo2InputBuilder) -> None:
        self.processor = processor
        self.builder = builder
        tok = processor.tokenizer
        self.tok = tok
        self.eos = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad = tok.pad_token_id
        self.patch_id = tok.convert_tokens_to_ids("<im_patch>")
        self._prompt_cache: dict[str, tuple[list[int], list[int]]] = {}

    def prompt(self, label: str, image: np.ndarray, pool: int) -> tuple[list[int], list[int]]:
        if (label, pool) not in self._prompt_cache:
            t = self.builder.tokens(one_frame_clip(image, pooling=(pool, pool)), f"Point to the {label}.")
            self._prompt_cache[label, pool] = (t.input_ids[0].tolist(), t.mm_token_type_ids[0].tolist())
        return self._prompt_cache[label, pool]

    def __call__(self, scenes: list[dict], digit_weight: float, pool: int = 3) -> dict:
        """pool 3: 81 tokens per frame (video frames); pool 2: 196 (SlowFast key frames in the product)."""
        grid = -(-27 // pool)
        rows, types, labels, weights, attn_pos, attn_cell = [], [], [], [], [], []
        for b, s in enumerate(scenes):
            ids, tt = self.prompt(s["label"], s["image"], pool)
            ans_text = answer_text(s)
            ans = self.tok(ans_text, add_special_tokens=False)["input_ids"] + [self.eos]
            full = ids + ans
            lab = [-100] * len(ids) + ans
            w = [0.0] * len(ids) + [1.0] * len(ans)
            if s["targets"]:
                # character offsets of the six coordinate digits: after 'coords="0.0 1 '
                start = ans_text.index('coords="') + len('coords="0.0 1 ')
                digit_chars = [start, start + 1, start + 2, start + 4, start + 5, start + 6]
                # byte-level tokenizer without merges: one token per character (ASCII)
                cell = cell_of(*s["targets"][0], s["w"], s["h"], pool)
                for k, c in enumerate(digit_chars):
                    p = len(ids) + c
                    w[p] = digit_weight * (0.5 if k % 3 == 2 else 1.0)
                    attn_pos.append((b, p - 1))  # the position whose logits predict this digit
                    attn_cell.append(cell)
            rows.append(full)
            types.append(tt + [0] * len(ans))
            labels.append(lab)
            weights.append(w)
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
        # visual token positions (first <im_patch> of each row)
        first_patch = [rows[b].index(self.patch_id) for b in range(B)]
        # auxiliary targets per pooled token
        present = torch.zeros((B, grid * grid, len(LABELS)))
        digits = torch.full((B, grid * grid, 4), -100, dtype=torch.long)
        for b, s in enumerate(scenes):
            for lab, x, y in s["visible"]:
                c = cell_of(x, y, s["w"], s["h"], pool)
                present[b, c, LABELS.index(lab)] = 1.0
                cx, cy = coord(x, s["w"]), coord(y, s["h"])
                digits[b, c] = torch.tensor([min(cx // 100, 9), cx // 10 % 10, min(cy // 100, 9), cy // 10 % 10])
        patches = self.builder.frame_patches(np.stack([s["image"] for s in scenes]))
        return dict(input_ids=input_ids, mm_token_type_ids=mm, attention_mask=att, labels=lab_t, weights=w_t,
                    patches=patches, present=present, digits=digits, first_patch=torch.tensor(first_patch),
                    attn_pos=torch.tensor(attn_pos, dtype=torch.long).reshape(-1, 2),
                    attn_cell=torch.tensor(attn_cell, dtype=torch.long), pool=pool,
                    pool_table=self.builder.pooling_table((pool, pool)))


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

    B = batch["input_ids"].shape[0]
    patches = batch["patches"]
    per_frame = patches.shape[1]
    base = batch["pool_table"]
    grid = -(-27 // batch["pool"])
    tables = torch.cat([torch.where(base >= 0, base + i * per_frame, base) for i in range(B)])
    grids = torch.tensor([[B, grid, grid]])
    feats = model.get_video_features(patches, tables, grids).pooler_output[0]  # [B*grid*grid, D]
    pres_logits, dig_logits = aux(feats.reshape(B, grid * grid, -1))
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
        tgt = batch["first_patch"][bi] + batch["attn_cell"]
        terms = []
        for layer, head in supervise_heads:
            a = out.attentions[layer][bi, head, pi, tgt]
            terms.append(-torch.log(a + 1e-6).mean())
        l_attn = torch.stack(terms).mean()
    total = lm + w_aux * (l_pres * 10 + l_dig) + w_attn * l_attn
    return dict(total=total, lm=lm.detach(), digit_ce=digit_ce.detach(), text_ce=text_ce.detach(),
                aux_present=l_pres.detach(), aux_digits=l_dig.detach(), attn=l_attn.detach())


# ---- evaluation ---------------------------------------------------------------------------------------------
def make_eval_set(n: int, seed: int, max_objects: int) -> list[dict]:
    sampler = SceneSampler(seed)
    sizes = [(320, 240), (640, 480)]
    out = []
    while len(out) < n:
        s = sampler.scene(*sizes[len(out) % 2], max_objects=max_objects, p_none=0.0)
        if s["targets"]:
            out.append(s)
    return out


@torch.no_grad()
def evaluate_pointing(model, processor, builder, scenes: list[dict], radius_frac: float = 0.05) -> dict:
    """Greedy decoding through the product's Molmo2Engine path (plain path, no caches)."""
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.parsing import parse_answer
    from molmo2_ros.core.types import Query, TaskKind

    was_training = model.training
    model.eval()
    engine = Molmo2Engine(EngineConfig(model="in-memory", reuse_prefix=False, cache_features=False,
                                       max_new_tokens=40))
    engine.model, engine.processor, engine.builder = model, processor, builder
    hits = preds = fails = answered = 0
    for s in scenes:
        res = engine.infer(one_frame_clip(s["image"]), [Query("p", TaskKind.POINT, s["label"])])
        text = res.generations[0].text if res.generations else ""
        parsed = parse_answer(text)
        if parsed.kind != "points" or not parsed.points:
            fails += parsed.kind not in ("points", "none")
            continue
        answered += 1
        radius = radius_frac * math.hypot(s["w"], s["h"])
        for p in parsed.points:
            preds += 1
            x, y = p.x / 1000 * s["w"], p.y / 1000 * s["h"]
            hits += any(math.dist((x, y), t) <= radius for t in s["targets"])
    model.train(was_training)
    return {"hit_rate": hits / max(preds, 1), "answered": answered / len(scenes), "parse_fail": fails / len(scenes),
            "points": preds}


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
    sampler = SceneSampler(args.seed)
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
    eval_scenes = make_eval_set(args.eval_n, seed=10_000 + args.seed, max_objects=4)
    log_path = out / "loss_curve.csv"
    fields = ["step", "elapsed_s", "lr", "total", "lm", "digit_ce", "text_ce", "aux_present", "aux_digits", "attn",
              "eval_hit_rate", "eval_answered", "eval_parse_fail"]
    if not log_path.exists() or not args.resume:
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(fields)
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
        scenes = [sampler.scene(w, h, cur["max_objects"], cur["p_none"], vocabulary) for _ in range(args.batch)]
        pool = 2 if args.p_slow and sampler.rng.random() < args.p_slow else 3
        batch = batcher(scenes, args.digit_weight, pool)
        lr = lr_at(step, args.steps, args.lr, args.warmup)
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
            ev = evaluate_pointing(model, processor, builder, eval_scenes)
        if row is not None or ev:
            elapsed = elapsed0 + time.time() - t0
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "lr": round(lr, 6), **(row or {}),
                   "eval_hit_rate": ev.get("hit_rate", ""), "eval_answered": ev.get("answered", ""),
                   "eval_parse_fail": ev.get("parse_fail", "")}
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
