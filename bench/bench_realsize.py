"""The released Molmo2 configurations at real width on the CPU (random weights, reduced depth) + SlowFast plans on
the shipped tiny model. Writes bench/out/realsize.json; `make bench-realsize` (~15-25 min on a 2-core CPU).

Per released configuration (built by test/released_models.py at full width, --text-layers / --vit-layers deep):
- params_full, weights_gib_bf16_full: the memory planner on the full config;
- tokens_per_frame_uniform, tokens_per_clip_uniform, tokens_per_clip_slowfast_default: <im_patch> tokens of the
  prompts the engine builds (8 s clip at 2 fps = 16 frames) with the real processor settings;
- exact_fp32, exact_bf16: `Molmo2Engine` (feature cache + shared prefix, batched queries) gives the same greedy
  text as the stock processor + `generate` (uniform) or whole-clip mixed inputs + `generate` (SlowFast), over
  sliding windows; bf16 with eager attention (exact), and `exact_bf16_sdpa` with sdpa (CPU SDPA kernels differ
  at ties for the shorter shared prefix: BRIEF section 6);
- planner_vs_measured_rss_ratio: the planner's CPU prediction (fp32 weights, KV cache, feature cache, activations)
  for one 16-frame window with 2 queries over the RSS growth of a fresh process that loads the model and answers
  (peak while answering minus RSS before loading; the float32-from-bfloat16 load transient is reported apart);
- prefill_s_uniform / prefill_s_slowfast_default: one 16-frame prefix prefill at real width.
Shipped tiny model (models/molmo2-tiny-synthetic, current checkpoint): track and point hit rates through
replay + eval for the default, detail and uniform SlowFast plans, and the engine's prefill time per window.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))  # the real-width builder is a test helper (not shipped in the package)

from molmo2_ros.core import memory_plan as mp  # noqa: E402
from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer  # noqa: E402
from molmo2_ros.core.sampling import SLOWFAST_PRESETS  # noqa: E402
from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind  # noqa: E402

QUERIES = [Query("a", TaskKind.POINT, "red ball"), Query("b", TaskKind.TRACK, "person")]
T0 = 1_700_000_000 * NS_PER_S


def clips(preset: str, n_frames: int, window_s: float, size=(480, 640), seed=1) -> list:
    """Sliding windows (stride 1 s) over random 2 Hz frames."""
    rng = np.random.RandomState(seed)
    buf = ClipBuffer(BufferConfig(window_s=window_s, stride_s=1.0), SLOWFAST_PRESETS[preset])
    out = []
    for i in range(n_frames):
        clip = buf.push(Frame(T0 + i * NS_PER_S // 2, rng.randint(0, 255, (*size, 3), np.uint8), "cam"))
        if clip is not None:
            out.append(clip)
    return out


def exactness(engine, preset: str, args, windows: int, queries: list) -> tuple[int, int]:
    """(windows x queries with the same text as the reference path, total), over consecutive sliding windows (the
    second one reuses the first one's cached features)."""
    from released_models import reference_answer

    engine.clear_cache()
    same = total = 0
    for clip in clips(preset, args.exact_frames, args.exact_window)[:windows]:
        result = engine.infer(clip, queries, args.max_new_tokens)
        if result.error:
            raise RuntimeError(result.error)
        for query, gen in zip(queries, result.generations):
            total += 1
            same += gen.text == reference_answer(engine, clip, query, args.max_new_tokens)
    return same, total


def prefill_seconds(engine, clip) -> float:
    """Wall time of one prefill of the clip's video prefix (features cached first, so only the LLM runs)."""
    import torch
    from transformers import DynamicCache

    from molmo2_ros.core.prompts import build_prompt
    from released_models import video_features

    features, _ = engine._clip_features(clip)
    tokens = engine.builder.tokens(clip, build_prompt(QUERIES[0]))
    with torch.inference_mode():
        t0 = time.perf_counter()
        engine.model(input_ids=tokens.input_ids, attention_mask=torch.ones_like(tokens.input_ids),
                     mm_token_type_ids=tokens.mm_token_type_ids, mm_encoder_outputs=video_features(features),
                     past_key_values=DynamicCache(config=engine.model.config), use_cache=True, logits_to_keep=1)
        return time.perf_counter() - t0


def released(name: str, args, workdir: Path) -> dict:
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from released_models import MODELS, measure_memory, model_config, save_model

    hub = MODELS[name]
    full = mp.plan(hub, mp.Setting(dtype="bfloat16"))
    row = {"config": hub, "params_full": full.parameters, "weights_gib_bf16_full": round(full.weights / mp.GIB, 3),
           "kv_bytes_per_token_full": full.kv_per_token, "text_layers": args.text_layers, "vit_layers": args.vit_layers}
    folder = save_model(name, workdir / name, text_layers=args.text_layers, vit_layers=args.vit_layers,
                        init_std=args.init_std)
    engine = Molmo2Engine(EngineConfig(model=str(folder), device="cpu", dtype="float32", attn_implementation="sdpa",
                                       max_new_tokens=args.max_new_tokens))
    engine.load()
    patch = engine.processor.tokenizer.convert_tokens_to_ids("<im_patch>")

    def visual(clip) -> int:
        return int((engine.builder.tokens(clip, "Describe this video.").input_ids == patch).sum())

    full_uniform, full_default = clips("uniform", 17, 8.0)[-1], clips("default", 17, 8.0)[-1]
    row["tokens_per_frame_uniform"] = visual(clips("uniform", 4, 0.4)[-1])  # a 1-frame clip
    row["tokens_per_clip_uniform"] = visual(full_uniform)
    row["tokens_per_clip_slowfast_default"] = visual(full_default)
    row["tokens_per_clip_slowfast_detail"] = visual(clips("detail", 17, 8.0)[-1])
    row["frames_per_clip"] = len(full_uniform.frames)
    row["prefill_tokens_uniform"] = int(engine.builder.tokens(full_uniform, "x").input_ids.shape[1])
    row["prefill_tokens_slowfast_default"] = int(engine.builder.tokens(full_default, "x").input_ids.shape[1])
    same, total = exactness(engine, "uniform", args, args.exact_windows, QUERIES)
    same_sf, total_sf = exactness(engine, "default", args, args.exact_windows, QUERIES)
    row["prefill_s_uniform"] = round(prefill_seconds(engine, full_uniform), 2)
    row["prefill_s_slowfast_default"] = round(prefill_seconds(engine, full_default), 2)
    row["exact_fp32"] = same == total and same_sf == total_sf
    row["exact_fp32_counts"] = f"uniform {same}/{total}, slowfast {same_sf}/{total_sf}"
    engine.unload()
    del engine
    gc.collect()
    # Memory in a fresh process (this one's allocator still holds the model it built): load, one 8 s window.
    measured = measure_memory(folder, window_s=8.0, queries=len(QUERIES), max_new_tokens=args.max_new_tokens)
    geo = mp.ModelGeometry.from_config(model_config(name, args.text_layers, args.vit_layers).to_dict(), hub)
    predicted = mp.plan(geo, mp.Setting(dtype="float32", cuda=False, window_s=8.0, queries=len(QUERIES),
                                        slowfast=False, max_new_tokens=args.max_new_tokens))
    growth = measured["peak"] - measured["base"]
    row["planner_cpu_gib"] = round(predicted.peak / mp.GIB, 3)
    row["measured_rss_growth_gib"] = round(growth / mp.GIB, 3)
    row["planner_vs_measured_rss_ratio"] = round(predicted.peak / growth, 3)
    row["planner_weights_gib"] = round(predicted.weights / mp.GIB, 3)
    row["measured_weights_gib"] = round((measured["after_load"] - measured["base"]) / mp.GIB, 3)
    row["measured_load_peak_gib"] = round((measured["load_peak"] - measured["base"]) / mp.GIB, 3)
    # bfloat16 matmuls are ~6x slower than float32 on an AVX2 CPU without native bf16: one window, one query.
    for attn, key in (("eager", "exact_bf16"), ("sdpa", "exact_bf16_sdpa"))[: 2 if args.bf16_sdpa else 1]:
        engine = Molmo2Engine(EngineConfig(model=str(folder), device="cpu", dtype="bfloat16",
                                           attn_implementation=attn, max_new_tokens=args.max_new_tokens))
        engine.load()
        same, total = exactness(engine, "uniform", args, 1, QUERIES[:1])
        same_sf, total_sf = exactness(engine, "default", args, 1, QUERIES[:1])
        row[key] = same == total and same_sf == total_sf
        row[key + "_counts"] = f"uniform {same}/{total}, slowfast {same_sf}/{total_sf}"
        engine.unload()
        del engine
        gc.collect()
    return row


def tiny_slowfast(args, workdir: Path) -> dict:
    """Hit rates of the shipped tiny model for each SlowFast plan (held-out scenario, replay + eval)."""
    from molmo2_ros.cli import SHIPPED_MODEL
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.stream import StreamConfig
    from molmo2_ros.offline.evaluation.evaluate import evaluate, load_results
    from molmo2_ros.offline.replay import replay
    from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario

    scen = workdir / "tiny_scenario"
    bag = generate_scenario(scen, seconds=args.tiny_seconds, width=320, height=240, seed=7)
    truth = json.loads((scen / "scenario.json").read_text())
    labels: dict[str, list[str]] = {}
    for o in truth["objects"]:
        labels.setdefault(o["label"], []).append(o["id"])
    engine = Molmo2Engine(EngineConfig(model=str(SHIPPED_MODEL), device="cpu"))
    engine.load()
    out = {"model": "models/molmo2-tiny-synthetic (current checkpoint, trained before the 3x3/5x5 default)",
           "scenario": f"generate seed 7, {args.tiny_seconds:g} s, 320x240"}
    for task, window, stride, tokens in (("track", 3.9, 1.0, 400), ("point", 0.4, 0.5, 64)):
        qs = [{"id": f"{lab.replace(' ', '_')}_{task}", "task": task, "text": lab, "objects": ids}
              for lab, ids in labels.items()]
        truth_q = dict(truth, queries=[q for q in truth["queries"] if q["task"] not in ("point", "track")] + qs)
        truth_path = workdir / f"truth_{task}.json"
        truth_path.write_text(json.dumps(truth_q))
        queries = [Query(q["id"], TaskKind(task), q["text"]) for q in qs]
        for preset in ("default", "detail", "uniform"):
            config = StreamConfig(buffer=BufferConfig(window_s=window, stride_s=stride, sample_fps=2.0),
                                    slowfast=SLOWFAST_PRESETS[preset], max_new_tokens=tokens)
            engine.clear_cache()
            t0 = time.perf_counter()
            summary = replay(bag, workdir / f"replay_{task}_{preset}", engine, queries, config=config, gif=False,
                             progress=False)
            wall = time.perf_counter() - t0
            report = evaluate(load_results(summary.results_path), GroundTruth.load(truth_path))["overall"]
            key = "track_point_hit_rate" if task == "track" else "point_hit_rate"
            name = {"default": "slowfast_default", "detail": "slowfast_detail", "uniform": "uniform"}[preset]
            out[f"{name}_{task}_hit_rate"] = report[key]
            out[f"{name}_{task}_replay_s"] = round(wall, 1)
            if task == "track":
                clip = clips(preset, 9, window, size=(240, 320))[-1]
                t = min(prefill_seconds(engine, clip) for _ in range(5))
                out[f"{name}_prefill_ms_8_frames"] = round(1000 * t, 2)
                out[f"{name}_visual_tokens_8_frames"] = clip.num_visual_tokens
    out["slowfast_default_track_hit_rate"] = out.pop("slowfast_default_track_hit_rate")
    out["uniform_track_hit_rate"] = out.pop("uniform_track_hit_rate")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["molmo2-4b", "molmo2-8b", "molmo2-o-7b"])
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--vit-layers", type=int, default=3)
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--exact-frames", type=int, default=7, help="2 Hz frames for the exactness windows")
    ap.add_argument("--exact-window", type=float, default=1.5, help="s (1.5 = 3-frame windows, 1 frame shared)")
    ap.add_argument("--exact-windows", type=int, default=2, help="sliding windows compared in float32")
    ap.add_argument("--bf16-sdpa", action="store_true", help="also compare bfloat16 with sdpa attention")
    ap.add_argument("--max-new-tokens", type=int, default=6)
    ap.add_argument("--tiny-seconds", type=float, default=20.0)
    ap.add_argument("--skip-tiny", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: stable on a shared host; 0 = torch's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "realsize.json"))
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "models": []}
    with tempfile.TemporaryDirectory(prefix="molmo2_realsize_") as tmp:
        for name in args.models:
            t0 = time.perf_counter()
            row = released(name, args, Path(tmp))
            row["bench_s"] = round(time.perf_counter() - t0, 1)
            result["models"].append(row)
            print(json.dumps(row), flush=True)
        if not args.skip_tiny:
            result["tiny"] = tiny_slowfast(args, Path(tmp))
            print(json.dumps(result["tiny"]), flush=True)
    keys = ("config", "params_full", "weights_gib_bf16_full", "tokens_per_frame_uniform", "tokens_per_clip_uniform",
            "tokens_per_clip_slowfast_default", "exact_fp32", "exact_bf16",
            "planner_vs_measured_rss_ratio", "prefill_s_uniform", "prefill_s_slowfast_default")
    print("\n" + " | ".join(keys))
    for row in result["models"]:
        print(" | ".join(str(row[k]) for k in keys))
    if "tiny" in result:
        print("\n" + "\n".join(f"{k}: {v}" for k, v in result["tiny"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    ok = all(r["exact_fp32"] and r["exact_bf16"] and 0.8 <= r["planner_vs_measured_rss_ratio"] <= 1.2
             for r in result["models"])
    print(f"\n{'PASS' if ok else 'MISS'}: exact fp32/bf16(eager) and planner within 20 % of RSS -> {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
