"""GPU check of the real-size models: one command, random weights at full size, nothing downloaded.

    python -m bench.gpu_check                 # on one H100/H200, ~5-7 min; writes bench/out/gpu.json
    python -m bench.gpu_check --dry-run       # the whole script on the CPU with 2+2-layer real-width models

What it measures (Molmo2-4B and Molmo2-8B in bf16, built by test/released_models.py on the GPU):
- GPU memory of the weights and the peak of each step against `core/memory_plan.py`;
- per-window latency split into vision (new frames through the ViT + adapter), prefill (the shared video prefix)
  and decode (every query's suffix + `max_new_tokens` greedy tokens, batched), for 1, 4 and 8 standing queries,
  for a first window (16 new frames) and a sliding one (2 new frames);
- the SlowFast plans (uniform 3x3, default 3x3 + 5x5, detail 2x2 + 3x3) at 16 and 128 frames: visual tokens,
  prefill time and peak memory;
- sdpa vs eager attention on the same prefill;
- quantized vs not (Molmo2-4B saved once to local disk, then loaded through the engine's loader with
  quantization none / int8 / int4): weights memory vs planner, window latency, answers equal to bf16 or not;
- the node at 1080p 30 Hz with the full-size Molmo2-4B (`bench/bench_node.py` with --param model:=...,
  device:=cuda), when rclpy and the built interfaces are importable; otherwise recorded as skipped.

The device machine reaches no network: carry what it needs. transformers 5.23.0 (and bitsandbytes for the quantized
step) must be importable there; if the machine's Python lacks them, download the wheels here and carry the folder
(an ignored path, listed in `carry`), then install from it on the device:

    .venv/bin/pip download --no-deps -d bench/wheels transformers==5.23.0 tokenizers==0.23.3 \\
        huggingface-hub safetensors accelerate==1.15.0 bitsandbytes==0.50.2
    # on the device:
    pip install --no-index --find-links bench/wheels transformers tokenizers huggingface-hub safetensors \\
        accelerate bitsandbytes && python -m bench.gpu_check

Every step is timed with CUDA synchronisation; a step that fails is recorded with its error and the rest runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))  # the real-width builder is a test helper (not shipped in the package)

from molmo2_ros.core import memory_plan as mp  # noqa: E402
from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer  # noqa: E402
from molmo2_ros.core.sampling import SLOWFAST_PRESETS  # noqa: E402
from molmo2_ros.core.types import NS_PER_S, Frame, Query, TaskKind  # noqa: E402

QUERY_POOL = [Query("q0", TaskKind.POINT, "red cup"), Query("q1", TaskKind.TRACK, "person"),
              Query("q2", TaskKind.COUNT, "boxes"), Query("q3", TaskKind.EVENT, "a person falling"),
              Query("q4", TaskKind.CAPTION, ""), Query("q5", TaskKind.QUESTION, "What is on the table?"),
              Query("q6", TaskKind.POINT, "door handle"), Query("q7", TaskKind.TRACK, "forklift")]
T0 = 1_700_000_000 * NS_PER_S


def windows(preset: str, seconds: float, window_s: float, size=(1080, 1920), seed=0) -> list:
    """Sliding clips (stride 1 s, 2 fps) over random 1080p frames."""
    rng = np.random.RandomState(seed)
    pool = [rng.randint(0, 255, (*size, 3), np.uint8) for _ in range(4)]
    buf = ClipBuffer(BufferConfig(window_s=window_s, stride_s=1.0), SLOWFAST_PRESETS[preset])
    out = []
    for i in range(int(seconds * 2)):
        clip = buf.push(Frame(T0 + i * NS_PER_S // 2, pool[i % len(pool)], "cam"))
        if clip is not None:
            out.append(clip)
    return out


class Gpu:
    """Timing and memory on the device (CUDA) or a stand-in on the CPU for --dry-run."""

    def __init__(self, device) -> None:
        import torch

        self.torch, self.device, self.cuda = torch, device, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self) -> int:
        return self.torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def peak(self) -> int:
        return self.torch.cuda.max_memory_allocated(self.device) if self.cuda else 0

    def reserved_peak(self) -> int:
        return self.torch.cuda.max_memory_reserved(self.device) if self.cuda else 0

    def timed(self, fn):
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out


def gib(n: float) -> float:
    return round(n / mp.GIB, 3)


def make_engine(model, processor, device, max_new_tokens: int):
    """A `Molmo2Engine` around an in-memory model (saving 16 GB of random weights to load them back would take
    most of the time budget); the quantized step loads through the engine's own loader instead."""
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.molmo2_inputs import Molmo2InputBuilder

    engine = Molmo2Engine(EngineConfig(model="in-memory", device=str(device), max_new_tokens=max_new_tokens))
    engine.model, engine.processor, engine.device = model, processor, device
    engine.builder = Molmo2InputBuilder(processor)
    return engine


def window_split(gpu: Gpu, engine, clip, queries, max_new_tokens: int) -> dict:
    """Vision (new frames), prefill (shared prefix) and decode (the rest of `infer`) of one window."""
    import torch
    from transformers import DynamicCache

    from molmo2_ros.core.prompts import build_prompt
    from released_models import video_features

    gpu.reset_peak()
    vision_s, encoded = gpu.timed(lambda: engine.encode(clip))
    features, _ = engine._clip_features(clip)
    tokens = engine.builder.tokens(clip, build_prompt(queries[0]))
    ids = tokens.input_ids.to(engine.device)

    def prefill():
        with torch.inference_mode():
            engine.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                         mm_token_type_ids=tokens.mm_token_type_ids.to(engine.device),
                         mm_encoder_outputs=video_features(features),
                         past_key_values=DynamicCache(config=engine.model.config), use_cache=True, logits_to_keep=1)

    prefill_s, _ = gpu.timed(prefill)
    infer_s, result = gpu.timed(lambda: engine.infer(clip, queries, max_new_tokens))
    if result.error:
        raise RuntimeError(result.error)
    new_tokens = max(g.num_new_tokens for g in result.generations)
    return {"frames": len(clip.frames), "new_frames": encoded, "visual_tokens": clip.num_visual_tokens,
            "prompt_tokens": int(ids.shape[1]), "queries": len(queries), "vision_s": round(vision_s, 4),
            "prefill_s": round(prefill_s, 4), "decode_s": round(max(infer_s - prefill_s, 0.0), 4),
            "window_s": round(vision_s + infer_s, 4), "new_tokens": new_tokens,
            "decode_ms_per_token": round(1000 * max(infer_s - prefill_s, 0.0) / max(new_tokens, 1), 2),
            "peak_allocated_gib": gib(gpu.peak()), "peak_reserved_gib": gib(gpu.reserved_peak()),
            "answers": [g.text for g in result.generations]}


def check_model(name: str, args, gpu: Gpu, out: dict) -> None:
    import torch

    from released_models import MODELS, build_model, build_processor

    hub = MODELS[name]
    # The dry run checks the script, not bf16 numerics: float32 (bf16 matmuls are slow on CPUs without native bf16).
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    layers = (2, 2) if args.dry_run else (None, None)
    rec: dict = {"config": hub, "text_layers": layers[0] or "full", "vit_layers": layers[1] or "full"}
    out["models"].append(rec)
    gpu.reset_peak()
    base = gpu.allocated()
    build_s, model = gpu.timed(lambda: build_model(name, *layers, dtype=dtype, device=gpu.device.type,
                                                    attn_implementation="sdpa"))
    processor = build_processor(name)
    geo = mp.geometry(hub) if not args.dry_run else mp.ModelGeometry.from_config(model.config.to_dict(), hub)
    rec["build_s"] = round(build_s, 1)
    rec["parameters"] = sum(p.numel() for p in model.parameters())
    rec["planner_parameters"] = geo.parameters()
    rec["weights_gib"] = gib(gpu.allocated() - base)
    rec["planner_weights_gib"] = gib(mp.plan(geo, mp.Setting(dtype="bfloat16")).weights)
    engine = make_engine(model, processor, gpu.device, args.max_new_tokens)
    window_s = 2.0 if args.dry_run else 8.0
    sliding = windows("default", window_s + 3, window_s)
    engine.infer(sliding[0], QUERY_POOL[:1], 4)  # warm-up (kernels, allocator)
    rec["windows"] = []
    for n in (1, 4, 8):
        engine.clear_cache()
        for label, clip in (("first", sliding[-1]), ("sliding", sliding[-1])):
            try:
                if label == "sliding":  # the window before it is cached: only its new frames are encoded
                    engine.clear_cache()
                    engine.encode(sliding[-2])
                row = window_split(gpu, engine, clip, QUERY_POOL[:n], args.max_new_tokens)
                s = mp.Setting(dtype="bfloat16", queries=n, max_new_tokens=row["new_tokens"], window_s=window_s)
                p = mp.plan(geo, s)
                row.update(window=label, planner_gib=gib(p.peak - p.reserve),
                           planner_vs_peak_allocated=round((p.peak - p.reserve) / max(gpu.peak(), 1), 3))
                if n != 4:
                    row.pop("answers")
                rec["windows"].append(row)
            except Exception as error:  # noqa: BLE001 - record and go on
                rec["windows"].append({"window": label, "queries": n, "error": f"{type(error).__name__}: {error}"})
    rec["slowfast"] = []
    for frames in ((4, 8) if args.dry_run else (16, 128)):
        for preset in ("uniform", "default", "detail"):
            try:
                window_s = frames / 2.0
                clip = windows(preset, window_s + 1, window_s)[-1]
                engine.clear_cache()
                row = window_split(gpu, engine, clip, QUERY_POOL[:4], args.max_new_tokens)
                s = mp.Setting(dtype="bfloat16", queries=4, max_new_tokens=row["new_tokens"], window_s=window_s,
                               slowfast=SLOWFAST_PRESETS[preset].enabled,
                               slow_pooling=SLOWFAST_PRESETS[preset].slow_pooling[0],
                               fast_pooling=SLOWFAST_PRESETS[preset].fast_pooling[0])
                p = mp.plan(geo, s)
                row.update(plan=preset, planner_gib=gib(p.peak - p.reserve))
                row.pop("answers")
                rec["slowfast"].append(row)
            except Exception as error:  # noqa: BLE001
                rec["slowfast"].append({"plan": preset, "frames": frames, "error": f"{type(error).__name__}: {error}"})
    rec["attention"] = []
    clip = sliding[-1]
    for attn in ("sdpa", "eager"):
        try:
            model.set_attn_implementation(attn)
            engine.clear_cache()
            row = window_split(gpu, engine, clip, QUERY_POOL[:4], args.max_new_tokens)
            row["attn_implementation"] = attn
            rec["attention"].append(row)
        except Exception as error:  # noqa: BLE001
            rec["attention"].append({"attn_implementation": attn, "error": f"{type(error).__name__}: {error}"})
    model.set_attn_implementation("sdpa")
    rec["cameras"] = check_cameras(gpu, engine, window_s, args.max_new_tokens)
    engine.unload()
    del engine, model
    gc.collect()
    if gpu.cuda:
        torch.cuda.empty_cache()


def check_cameras(gpu: Gpu, engine, window_s: float, max_new_tokens: int) -> dict:
    """4 cameras due together: one batched engine call (the runtime's default) vs one call per camera, same windows
    and the same cached features before each; seconds, the ratio, and whether the answers are identical."""
    from molmo2_ros.core.engine_interface import InferRequest

    cams = [windows("default", window_s + 3, window_s, seed=seed) for seed in range(4)]
    requests = [InferRequest(replace(c[-1], stream=f"cam{i}"), tuple(QUERY_POOL[:2]), max_new_tokens)
                for i, c in enumerate(cams)]
    previous = [replace(c[-2], stream=f"cam{i}") for i, c in enumerate(cams)]

    def run(batched: bool):
        engine.clear_cache()
        for clip in previous:  # sliding windows: only the new frames are encoded
            engine.encode(clip)
        if batched:
            return gpu.timed(lambda: engine.infer_batch(requests))
        return gpu.timed(lambda: [engine.infer(r.clip, list(r.queries), r.max_new_tokens) for r in requests])
    try:
        run(True)  # warm-up
        batched_s, batched = run(True)
        single_s, single = run(False)
        same = [[g.text for g in a.generations] == [g.text for g in b.generations] for a, b in zip(batched, single)]
        return {"cameras": 4, "queries_per_camera": 2, "batched_s": round(batched_s, 3),
                "one_call_per_camera_s": round(single_s, 3), "ratio": round(single_s / batched_s, 2),
                "same_answers": sum(same), "peak_allocated_gib": gib(gpu.peak())}
    except Exception as error:  # noqa: BLE001 - record and go on
        return {"error": f"{type(error).__name__}: {error}"}


def check_quantized(args, gpu: Gpu, out: dict, workdir: Path) -> str:
    """Molmo2-4B saved once, loaded through the engine with each quantization; returns the folder."""
    import torch

    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from released_models import save_model

    layers = dict(text_layers=2, vit_layers=2) if args.dry_run else dict(text_layers=None, vit_layers=None)
    folder = workdir / "molmo2-4b"
    save_s, _ = gpu.timed(lambda: save_model("molmo2-4b", folder, dtype=torch.bfloat16, device=gpu.device.type,
                                             **layers))
    window_s = 2.0 if args.dry_run else 8.0
    out["quantized"] = {"save_s": round(save_s, 1), "runs": []}
    clip = windows("default", window_s + 3, window_s)[-1]
    reference = None
    for q in ("none", "int8", "int4"):
        rec = {"quantization": q}
        out["quantized"]["runs"].append(rec)
        try:
            gpu.reset_peak()
            base = gpu.allocated()
            engine = Molmo2Engine(EngineConfig(model=str(folder), device=str(gpu.device),
                                               dtype="float32" if args.dry_run else "bfloat16",
                                               attn_implementation="sdpa", quantization=q,
                                               max_new_tokens=args.max_new_tokens))
            load_s, _ = gpu.timed(engine.load)
            geo = mp.ModelGeometry.from_config(engine.model.config.to_dict(), "allenai/Molmo2-4B")
            rec.update(load_s=round(load_s, 1), weights_gib=gib(gpu.allocated() - base),
                       planner_weights_gib=gib(mp.plan(geo, mp.Setting(quantization=q)).weights))
            row = window_split(gpu, engine, clip, QUERY_POOL[:4], args.max_new_tokens)
            answers = row.pop("answers")
            reference = reference or answers
            rec.update(row, answers_equal_to_bf16=answers == reference)
            engine.unload()
            del engine
        except Exception as error:  # noqa: BLE001
            rec["error"] = f"{type(error).__name__}: {error}"
        gc.collect()
        if gpu.cuda:
            torch.cuda.empty_cache()
    return str(folder)


def check_node(args, folder: str, out: dict) -> None:
    """bench/bench_node.py with the full-size model folder on the GPU (needs rclpy + the built interfaces)."""
    with_ros = ROOT / "scripts" / "with_ros"
    probe = subprocess.run([str(with_ros), sys.executable, "-c", "import rclpy, molmo2_ros.msg"], cwd=ROOT,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        out["node"] = {"skipped": "rclpy or molmo2_ros.msg not importable here (make setup builds them): "
                                  + (probe.stderr.strip().splitlines() or ["?"])[-1]}
        return
    device = "cpu" if args.dry_run else "cuda"
    cmd = [str(with_ros), sys.executable, "-m", "bench.bench_node", "--seconds", str(args.node_seconds),
           "--param", f"model:={folder}", "--param", f"device:={device}", "--param", "dtype:=bfloat16",
           "--param", "attn_implementation:=sdpa"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.node_seconds + 240)
    node_json = ROOT / "bench" / "out" / "node.json"
    out["node"] = {"command": " ".join(cmd[1:]), "rc": run.returncode, "wall_s": round(time.perf_counter() - t0, 1),
                   "tail": run.stdout[-2000:] + run.stderr[-1000:]}
    if node_json.is_file():
        out["node"]["result"] = json.loads(node_json.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, 2+2-layer real-width models, short node run")
    ap.add_argument("--models", nargs="*", default=["molmo2-4b", "molmo2-8b"])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--node-seconds", type=float, default=30.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["models", "quantized", "node"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / ("gpu_dry_run.json" if "--dry-run" in sys.argv
                                                                     else "gpu.json")))
    args = ap.parse_args()
    if args.dry_run:
        args.max_new_tokens, args.node_seconds = min(args.max_new_tokens, 4), min(args.node_seconds, 12.0)
    import torch
    import transformers

    device = torch.device("cpu" if args.dry_run else "cuda")
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    gpu = Gpu(device)
    out = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": args.dry_run,
           "host": platform.node(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name(device) if gpu.cuda else "cpu",
           "device_total_gib": gib(torch.cuda.get_device_properties(device).total_memory) if gpu.cuda else None,
           "planner_cuda_reserve_gib": gib(mp.CUDA_RESERVE_BYTES), "models": [], "errors": []}
    started = time.perf_counter()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out["wall_s"] = round(time.perf_counter() - started, 1)
        Path(args.out).write_text(json.dumps(out, indent=1))

    with tempfile.TemporaryDirectory(prefix="molmo2_gpu_check_", dir=os.environ.get("GPU_CHECK_TMP")) as tmp:
        steps = [] if "models" in args.skip else [(f"model {m}", lambda m=m: check_model(m, args, gpu, out))
                                                   for m in args.models]
        folder = {}
        if "quantized" not in args.skip:
            steps.append(("quantized", lambda: folder.setdefault("4b", check_quantized(args, gpu, out, Path(tmp)))))
        if "node" not in args.skip:
            steps.append(("node", lambda: check_node(args, folder.get("4b") or str(
                __import__("released_models").save_model("molmo2-4b", Path(tmp) / "node_model",
                                                         dtype=torch.bfloat16, text_layers=2 if args.dry_run
                                                         else None, vit_layers=2 if args.dry_run else None)), out)))
        for label, step in steps:
            t0 = time.perf_counter()
            try:
                step()
            except Exception as error:  # noqa: BLE001 - one failed step must not lose the others
                out["errors"].append({"step": label, "error": f"{type(error).__name__}: {error}",
                                      "trace": traceback.format_exc()[-2000:]})
            print(f"{label}: {time.perf_counter() - t0:.1f} s", flush=True)
            save()
    save()
    for rec in out["models"]:
        print(f"\n{rec['config']}: weights {rec.get('weights_gib')} GiB (planner {rec.get('planner_weights_gib')})")
        for row in rec.get("windows", []):
            print("  " + (f"{row['window']:<8} q={row['queries']} vision {row['vision_s']:.3f} s prefill "
                          f"{row['prefill_s']:.3f} s decode {row['decode_s']:.3f} s peak {row['peak_allocated_gib']} "
                          f"GiB (planner {row['planner_gib']})" if "error" not in row else str(row)))
        for row in rec.get("slowfast", []):
            print("  " + (f"{row['plan']:<8} {row['frames']:>3} frames {row['visual_tokens']:>6} tokens prefill "
                          f"{row['prefill_s']:.3f} s peak {row['peak_allocated_gib']} GiB" if "error" not in row
                          else str(row)))
    for rec in out.get("quantized", {}).get("runs", []):
        print(f"quantization {rec}")
    if "node" in out:
        print(f"node: {json.dumps(out['node'])[:400]}")
    print(f"errors: {len(out['errors'])}; wrote {args.out} in {out['wall_s']} s")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
