"""Naive (seed recipe) vs Molmo2Engine on the same sliding-window clips and standing queries.

Scenario: 30 s of synthetic 10 Hz camera frames (320x240, moving shapes, deterministic), a ClipBuffer with an
8 s window and a 1 s stride (2 fps sampling -> up to 16 frames per clip), 4 standing queries (point, count,
track, question), greedy decoding of N new tokens, on a random-weight Molmo2 of bench size (BENCH_SPEC).

- naive: for every clip and every query, the stock `Molmo2Processor` over all the clip's frames, then
  `model.generate` (the whole video is re-encoded and re-prefilled for every query of every clip);
- engine: `Molmo2Engine.infer(clip, queries)` (per-frame vision-feature cache + shared video-prefix KV cache).

Both run interleaved clip by clip on the same model weights, after one warm-up of each path. The comparison
uses uniform 3x3 pooling (SlowFast off) so that both paths see identical inputs; a second ClipBuffer with the
SlowFast defaults over the same frames reports its visual-token count per clip.

Exactness: greedy outputs are compared per (clip, query), as texts and as token ids; on a few clips the
first-token logits of the plain full forward (stock processor inputs) are compared with those of the engine's
way (cached per-frame features, prefix forward into a DynamicCache, then the query's suffix forward).

Run: `python -m bench.bench_engine` (or `python bench/bench_engine.py`); writes bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/bench_engine.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.molmo2_inputs import chat_text, video_metadata
from molmo2_ros.core.prompts import build_prompt
from molmo2_ros.core.sampling import SlowFastConfig
from scripts.tiny_model import BENCH_SPEC, TinySpec, build_tiny_model
from molmo2_ros.core.types import NS_PER_S, Clip, Frame, Query, TaskKind

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"

# The model benchmarked. BENCH_SPEC (~12 M params) makes model compute dominate Python overhead on a 2-core CPU
# while the whole run stays at a few minutes; change it here to try other sizes.
SPEC: TinySpec = BENCH_SPEC

QUERIES = [
    Query(id="point_ball", task=TaskKind.POINT, text="the red ball"),
    Query(id="count_boxes", task=TaskKind.COUNT, text="blue boxes"),
    Query(id="track_ball", task=TaskKind.TRACK, text="red ball"),
    Query(id="ask_motion", task=TaskKind.QUESTION, text="Which object moves fastest?"),
]

TARGETS = {  # metric -> minimum naive/engine ratio
    "vision_frames_ratio": 7.0,
    "prefill_tokens_ratio": 3.0,
    "wall_ratio": 3.0,
}

START_NS = 1_700_000_000 * NS_PER_S  # absolute camera stamps, as a ROS driver would give


# ---- synthetic camera ------------------------------------------------------------------------------------
class Scene:
    """Moving coloured shapes over a fixed textured background; frame(t) is a pure function of t and the seed."""

    def __init__(self, width: int = 320, height: int = 240, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([40 + 80 * xx / width, 60 + 60 * yy / height, 90 + 40 * (xx + yy) / (width + height)], -1)
        base += rng.normal(0, 12, size=base.shape)
        self.background = np.clip(base, 0, 255).astype(np.uint8)
        self.yy, self.xx = yy, xx
        self.shapes = []
        specs = [("circle", (220, 30, 30), 18), ("rect", (30, 60, 220), 22), ("rect", (30, 60, 220), 16),
                 ("circle", (240, 220, 40), 12), ("rect", (40, 200, 60), 28)]
        for kind, color, size in specs:
            pos = rng.uniform([size, size], [width - size, height - size])
            vel = rng.uniform(-60, 60, size=2)  # px/s
            self.shapes.append((kind, np.array(color, np.uint8), size, pos, vel))

    @staticmethod
    def _bounce(u: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        span = hi - lo
        m = np.mod(u - lo, 2 * span)
        return lo + np.where(m <= span, m, 2 * span - m)

    def frame(self, t: float) -> np.ndarray:
        img = self.background.copy()
        for kind, color, size, pos, vel in self.shapes:
            lo = np.array([size, size], np.float64)
            hi = np.array([self.width - size, self.height - size], np.float64)
            cx, cy = self._bounce(pos + vel * t, lo, hi)
            if kind == "circle":
                mask = (self.xx - cx) ** 2 + (self.yy - cy) ** 2 <= size ** 2
            else:
                mask = (np.abs(self.xx - cx) <= size) & (np.abs(self.yy - cy) <= size * 0.7)
            img[mask] = color
        return img


def make_clips(duration_s: float, camera_hz: float, window_s: float, stride_s: float, seed: int):
    """Feed the same frames to a uniform (SlowFast off) and a SlowFast-default ClipBuffer; return both clip lists."""
    scene = Scene(seed=seed)
    config = BufferConfig(window_s=window_s, stride_s=stride_s)
    uniform = ClipBuffer(config, SlowFastConfig(enabled=False))
    slowfast = ClipBuffer(config, SlowFastConfig())
    clips_u, clips_sf = [], []
    period_ns = round(NS_PER_S / camera_hz)
    for i in range(round(duration_s * camera_hz)):
        stamp = START_NS + i * period_ns
        frame = Frame(stamp, scene.frame(i / camera_hz), frame_id="camera")
        for buffer, out in ((uniform, clips_u), (slowfast, clips_sf)):
            clip = buffer.push(frame)
            if clip is not None:
                out.append(clip)
    return clips_u, clips_sf, dict(uniform.counters)


# ---- model -----------------------------------------------------------------------------------------------
def model_folder(spec: TinySpec, root: Path) -> Path:
    """A saved bench model for `spec`, built once and reused while the spec is unchanged."""
    folder = root / f"model_h{spec.text_hidden}_l{spec.text_layers}_v{spec.vit_hidden}_s{spec.seed}"
    marker = folder / "molmo2_ros_tiny.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == dataclasses.asdict(spec)
            and (folder / "config.json").is_file()):
        build_tiny_model(folder, spec)
    return folder


def count_params(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if "vision" in n or "adapter" in n)
    return {"total": total, "vision_and_adapter": vision, "language": total - vision}


# ---- the two paths ---------------------------------------------------------------------------------------
def naive_inputs(processor, clip: Clip, prompt: str):
    frames = np.stack([f.frame.image for f in clip.frames])
    return processor(text=chat_text(processor, prompt), videos=[frames],
                     video_metadata=[video_metadata(clip.relative_times(), clip.width, clip.height)],
                     do_sample_frames=False, return_tensors="pt")


@torch.inference_mode()
def naive_generate(model, processor, clip: Clip, prompt: str, max_new_tokens: int):
    """The seed recipe: stock processor over all frames + generate. Returns (text, new ids, prompt length)."""
    inputs = naive_inputs(processor, clip, prompt).to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    length = inputs["input_ids"].shape[1]
    new = out[0, length:]
    return processor.tokenizer.decode(new, skip_special_tokens=True), new.tolist(), length


class RecordingEngine(Molmo2Engine):
    """Molmo2Engine that also records the generated token ids (the public API returns texts only)."""

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        self.last_ids: list[list[int]] = []

    def _answer(self, new_ids: torch.Tensor, limit: int, logprobs: list[float]) -> tuple[str, int, float]:
        self.last_ids.append(new_ids[:limit].tolist())
        return super()._answer(new_ids, limit, logprobs)

    def infer(self, clip, queries, max_new_tokens=None, stop=None):
        self.last_ids = []
        return super().infer(clip, queries, max_new_tokens, stop)


# ---- first-token logits: full forward vs engine-style prefix cache -----------------------------------------
@torch.inference_mode()
def logit_check(engine: Molmo2Engine, clip: Clip, queries: list[Query]) -> dict:
    """Max |logit diff| of the first generated token: plain full forward of the stock processor's inputs vs the
    engine's way (cached per-frame features, prefix forward into a DynamicCache, suffix forward per query)."""
    from transformers import DynamicCache
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model, processor, builder = engine.model, engine.processor, engine.builder
    prompts = [build_prompt(q) for q in queries]
    features, _ = engine._clip_features(clip)  # what infer() uses (cache hits after the timed run)
    encoder_outputs = {"video": BaseModelOutputWithPooling(pooler_output=(features,))}
    tokens = [builder.tokens(clip, p) for p in prompts]
    ids = [t.input_ids[0] for t in tokens]
    prefix = min(len(s) for s in ids) - 1
    for seq in ids[1:]:
        diff = (seq[:prefix] != ids[0][:prefix]).nonzero()
        if len(diff):
            prefix = min(prefix, int(diff[0]))
    cache = DynamicCache(config=model.config)
    first = tokens[0]
    model(input_ids=first.input_ids[:, :prefix], attention_mask=torch.ones_like(first.input_ids[:, :prefix]),
          mm_token_type_ids=first.mm_token_type_ids[:, :prefix], mm_encoder_outputs=encoder_outputs,
          past_key_values=cache, use_cache=True, logits_to_keep=1)
    worst, scale, argmax_equal, ids_equal = 0.0, 0.0, True, True
    for prompt, tok in zip(prompts, tokens):
        inputs = naive_inputs(processor, clip, prompt)
        ids_equal &= torch.equal(inputs["input_ids"], tok.input_ids) and \
            torch.equal(inputs["mm_token_type_ids"].to(torch.int64), tok.mm_token_type_ids)
        full = model(**inputs, logits_to_keep=1).logits[0, -1].float()
        suffix = tok.input_ids[:, prefix:]
        cached = model(input_ids=suffix, attention_mask=torch.ones_like(tok.input_ids), past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[0, -1].float()
        cache.crop(prefix - cache.get_seq_length())  # crop takes a negative count
        worst = max(worst, float((full - cached).abs().max()))
        scale = max(scale, float(full.abs().max()))
        argmax_equal &= int(full.argmax()) == int(cached.argmax())
    return {"max_abs_logit_diff": worst, "max_abs_logit": scale, "argmax_equal": argmax_equal,
            "input_ids_identical": ids_equal, "prefix_tokens": prefix}


# ---- other load on the host ------------------------------------------------------------------------------
class ForeignLoad:
    """CPU time used by *other* processes between two calls (Linux /proc, jiffies), as a share of all cores.

    Wall times on a small shared CPU swing by 10x when another process competes for the cores (OpenMP threads
    then wait on each other), so every timed clip is flagged when others used more than `CONTENDED` of the CPU."""

    CONTENDED = 0.10

    def __init__(self) -> None:
        self.available = Path("/proc/stat").is_file() and Path("/proc/self/stat").is_file()
        self._last = self._read()

    def _read(self) -> tuple[int, int]:
        if not self.available:
            return 0, 0
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
        busy = total - fields[3] - fields[4]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        self._total = total
        return busy, int(own[11]) + int(own[12])  # utime + stime of this process (all threads)

    def share(self) -> float:
        """Share of the host's CPU capacity used by other processes since the previous call."""
        if not self.available:
            return 0.0
        total_before = self._total
        busy0, own0 = self._last
        self._last = self._read()
        busy1, own1 = self._last
        capacity = self._total - total_before
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / capacity if capacity > 0 else 0.0


# ---- report ----------------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is 0 (e.g. no uncontended clip was timed)."""
    return float(a) / float(b) if b else None


def verdicts(r: dict) -> dict[str, dict]:
    """Each target with its value and verdict: the minimum ratios (TARGETS) and identical outputs."""
    targets = {key: {"value": r[key], "target": f">= {minimum}", "pass": r[key] is not None and r[key] >= minimum}
               for key, minimum in TARGETS.items()}
    targets["outputs_identical"] = {"value": f"{r['outputs_matching']}/{r['outputs_compared']}", "target": "all",
                                    "pass": r["outputs_identical"]}
    return targets


def print_table(r: dict) -> None:
    rows = [
        ("vision frames encoded", r["vision_frames_naive"], r["vision_frames_engine"], "vision_frames_ratio"),
        ("prefill tokens", r["prefill_tokens_naive"], r["prefill_tokens_engine"], "prefill_tokens_ratio"),
        ("wall s (timed loop)", r["wall_s_naive"], r["wall_s_engine"], "wall_ratio"),
        ("wall s, uncontended clips", r["wall_s_naive_uncontended"], r["wall_s_engine_uncontended"], None),
        ("cpu s (timed loop)", r["cpu_s_naive"], r["cpu_s_engine"], None),
        ("per-clip latency p50 s", r["clip_latency_p50_s_naive"], r["clip_latency_p50_s_engine"], None),
        ("per-clip latency max s", r["clip_latency_max_s_naive"], r["clip_latency_max_s_engine"], None),
    ]
    print()
    print(f"{'metric':<26} | {'naive':>10} | {'engine':>10} | {'ratio':>7} | {'target':>7} | verdict")
    print("-" * 84)
    for name, a, b, key in rows:
        fa = f"{a:10.2f}" if isinstance(a, float) else f"{a:10d}"
        fb = f"{b:10.2f}" if isinstance(b, float) else f"{b:10d}"
        rt = ratio(a, b)
        shown = f"{rt:6.2f}x" if rt is not None else f"{'n/a':>7}"
        if key:
            verdict = "PASS" if r["targets"][key]["pass"] else "MISS"
            if key == "wall_ratio" and r["contended_windows"]:
                verdict += f" ({len(r['contended_windows'])}/{r['windows']} clips under other load)"
            print(f"{name:<26} | {fa} | {fb} | {shown} | >={TARGETS[key]:4.1f}x | {verdict}")
        else:
            print(f"{name:<26} | {fa} | {fb} | {shown} | {'':>7} | info")
    same = r["outputs_identical"]
    print(f"{'outputs identical (text)':<26} | {'':>10} | {'':>10} | {'':>7} | {'all':>7} | "
          f"{'PASS' if same else 'MISS'} ({r['outputs_matching']}/{r['outputs_compared']})")
    print(f"{'token ids identical':<26} | {'':>10} | {'':>10} | {'':>7} | {'all':>7} | "
          f"{'PASS' if r['token_ids_identical'] else 'MISS'}")
    print(f"{'max |logit diff| 1st tok':<26} | {'':>10} | {r['max_abs_logit_diff']:10.2e} | {'':>7} | "
          f"{'':>7} | info (max |logit| {r['max_abs_logit']:.1f}, argmax equal: {r['logit_argmax_equal']})")
    print()
    print(f"visual tokens per full clip: uniform 3x3 {r['visual_tokens_per_clip_uniform']:.1f}, "
          f"SlowFast defaults {r['visual_tokens_per_clip_slowfast']:.1f} "
          f"({r['visual_tokens_per_clip_slowfast'] / r['visual_tokens_per_clip_uniform']:.2f}x)")
    print(f"clips {r['windows']} ({r['full_windows']} full, {r['frames_per_full_clip']} frames), queries "
          f"{len(r['queries'])}, max_new_tokens {r['max_new_tokens']}, distinct outputs "
          f"{r['distinct_outputs']}/{r['outputs_compared']}")
    print(f"clips timed while other processes used > {ForeignLoad.CONTENDED:.0%} of the CPU: "
          f"{len(r['contended_windows'])} of {r['windows']}"
          + (" (wall of those is inflated for both paths; see the uncontended row)" if r["contended_windows"] else ""))
    print(f"model {r['model_params']['total'] / 1e6:.1f} M params, torch threads {r['torch_threads']}, "
          f"peak RSS {r['peak_rss_mb']:.0f} MB, total run {r['total_s']:.1f} s, load average (1 min) before/after "
          f"{r['loadavg_1m_before_after'][0]:.2f}/{r['loadavg_1m_before_after'][1]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--camera-hz", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=8.0)
    parser.add_argument("--stride-s", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--logit-windows", type=int, default=3, help="clips used for the logit comparison")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "engine.json")
    parser.add_argument("--model-root", type=Path, default=OUT_DIR, help="where the bench model is cached")
    args = parser.parse_args(argv)

    run_start = time.perf_counter()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    folder = model_folder(SPEC, args.model_root)
    engine = RecordingEngine(EngineConfig(model=str(folder), device="cpu", max_new_tokens=args.max_new_tokens))
    engine.load()
    model, processor = engine.model, engine.processor  # the naive path uses the very same weights
    n = args.max_new_tokens

    clips, clips_sf, counters = make_clips(args.duration_s, args.camera_hz, args.window_s, args.stride_s, args.seed)
    frames_full = max(len(c.frames) for c in clips)
    full_u = [c for c in clips if len(c.frames) == frames_full]
    full_sf = [c for c in clips_sf if len(c.frames) == frames_full]
    prompts = [build_prompt(q) for q in QUERIES]

    # Warm-up, once per path, on a full clip under another epoch so that no feature is cached for the timed run.
    warm = dataclasses.replace(full_u[0], epoch=full_u[0].epoch + 10_000)
    for p in prompts:
        naive_generate(model, processor, warm, p, n)
    warm_inf = engine.infer(warm, QUERIES)
    assert not warm_inf.error, warm_inf.error

    totals = dict(vision_frames_naive=0, vision_frames_engine=0, prefill_tokens_naive=0, prefill_tokens_engine=0)
    wall_naive, wall_engine, lat_naive, lat_engine = 0.0, 0.0, [], []
    cpu_naive = cpu_engine = 0.0  # process CPU seconds: less sensitive than wall time to other load on the host
    load_before = os.getloadavg()
    foreign = ForeignLoad()
    clean_naive = clean_engine = 0.0
    contended_clips, per_clip = [], []
    compared = matching = ids_matching = 0
    mismatches, distinct = [], set()
    for clip in clips:  # interleaved clip by clip: same load on the machine for both paths
        foreign.share()
        c0, t0 = time.process_time(), time.perf_counter()
        naive = [naive_generate(model, processor, clip, p, n) for p in prompts]
        c1, t1 = time.process_time(), time.perf_counter()
        other_naive = foreign.share()
        inference = engine.infer(clip, QUERIES)
        c2, t2 = time.process_time(), time.perf_counter()
        other_engine = foreign.share()
        contended = max(other_naive, other_engine) > ForeignLoad.CONTENDED
        per_clip.append({"clip": clip.index, "frames": len(clip.frames), "wall_s_naive": round(t1 - t0, 4),
                         "wall_s_engine": round(t2 - t1, 4), "other_cpu_share": round(max(other_naive, other_engine), 3),
                         "vision_frames_engine": inference.vision_frames_encoded,
                         "prefill_tokens_engine": inference.prefill_tokens})
        if contended:
            contended_clips.append({"clip": clip.index, "other_cpu_share_naive": round(other_naive, 3),
                                    "other_cpu_share_engine": round(other_engine, 3)})
        else:
            clean_naive += t1 - t0
            clean_engine += t2 - t1
        cpu_naive += c1 - c0
        cpu_engine += c2 - c1
        if inference.error:
            raise RuntimeError(f"engine failed on clip {clip.index}: {inference.error}")
        wall_naive += t1 - t0
        wall_engine += t2 - t1
        lat_naive.append(t1 - t0)
        lat_engine.append(t2 - t1)
        totals["vision_frames_naive"] += len(clip.frames) * len(prompts)
        totals["prefill_tokens_naive"] += sum(length for _, _, length in naive)
        totals["vision_frames_engine"] += inference.vision_frames_encoded
        totals["prefill_tokens_engine"] += inference.prefill_tokens
        for q, (text, ids, _), gen, eng_ids in zip(QUERIES, naive, inference.generations, engine.last_ids):
            compared += 1
            matching += text == gen.text
            ids_matching += ids == eng_ids
            distinct.add(tuple(ids))
            if ids != eng_ids or text != gen.text:
                mismatches.append({"clip": clip.index, "query": q.id, "naive": ids, "engine": eng_ids})
        print(f"clip {clip.index:3d}: {len(clip.frames):2d} frames, naive {t1 - t0:6.2f} s, engine {t2 - t1:6.2f} s "
              f"(encoded {inference.vision_frames_encoded}, prefill {inference.prefill_tokens})"
              + (f"  [other processes used {other_naive:.0%}/{other_engine:.0%} of the CPU]" if contended else ""),
              flush=True)

    # First-token logits on a few full clips spread over the run.
    picks = sorted({full_u[round(i)].index for i in np.linspace(0, len(full_u) - 1, max(1, args.logit_windows))})
    checks = [logit_check(engine, next(c for c in full_u if c.index == i), QUERIES) for i in picks]

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {
        **totals,
        "wall_s_naive": wall_naive,
        "wall_s_engine": wall_engine,
        "wall_s_naive_uncontended": clean_naive,
        "wall_s_engine_uncontended": clean_engine,
        "wall_ratio_uncontended": ratio(clean_naive, clean_engine),
        "uncontended_windows": len(clips) - len(contended_clips),
        "contended_windows": contended_clips,
        "cpu_s_naive": cpu_naive,
        "cpu_s_engine": cpu_engine,
        "cpu_ratio": ratio(cpu_naive, cpu_engine),
        "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
        "vision_frames_ratio": ratio(totals["vision_frames_naive"], totals["vision_frames_engine"]),
        "prefill_tokens_ratio": ratio(totals["prefill_tokens_naive"], totals["prefill_tokens_engine"]),
        "wall_ratio": ratio(wall_naive, wall_engine),
        "clip_latency_p50_s_naive": statistics.median(lat_naive),
        "clip_latency_p50_s_engine": statistics.median(lat_engine),
        "clip_latency_max_s_naive": max(lat_naive),
        "clip_latency_max_s_engine": max(lat_engine),
        "outputs_identical": matching == compared,
        "token_ids_identical": ids_matching == compared,
        "outputs_compared": compared,
        "outputs_matching": matching,
        "distinct_outputs": len(distinct),
        "mismatches": mismatches[:10],
        "per_clip": per_clip,
        "max_abs_logit_diff": max(c["max_abs_logit_diff"] for c in checks),
        "max_abs_logit": max(c["max_abs_logit"] for c in checks),
        "logit_argmax_equal": all(c["argmax_equal"] for c in checks),
        "logit_check_clips": picks,
        "logit_checks": checks,
        "visual_tokens_per_clip_uniform": float(np.mean([c.num_visual_tokens for c in full_u])),
        "visual_tokens_per_clip_slowfast": float(np.mean([c.num_visual_tokens for c in full_sf])),
        "peak_rss_mb": peak_rss_mb,
        "windows": len(clips),
        "full_windows": len(full_u),
        "frames_per_full_clip": frames_full,
        "queries": [dataclasses.asdict(q) | {"task": q.task.value, "prompt": p} for q, p in zip(QUERIES, prompts)],
        "max_new_tokens": n,
        "model_params": count_params(model),
        "model_spec": dataclasses.asdict(SPEC),
        "torch_threads": torch.get_num_threads(),
        "scenario": {"duration_s": args.duration_s, "camera_hz": args.camera_hz, "window_s": args.window_s,
                     "stride_s": args.stride_s, "sample_fps": BufferConfig().sample_fps, "width": 320, "height": 240,
                     "buffer_counters": counters, "seed": args.seed},
        "platform": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__, "machine": platform.machine(),
                     "device": str(model.device)},
    }
    result["targets"] = verdicts(result)
    result["total_s"] = time.perf_counter() - run_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0 if all(t["pass"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
