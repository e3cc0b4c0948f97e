"""Held-out evaluation of a checkpoint on fresh synthetic scenarios, with the demo's settings.

Each scenario is written by `generate_scenario` (seeds never used in training: training draws its worlds from
`VideoTaskSampler`, never from a scenario bag), replayed with the pipeline the CLI's `replay` runs (8-frame clips:
window 4 s at 2 fps, stride 1 s, 400 new tokens) and scored by `evaluate` (the CLI's `eval`) plus
`answer_metrics` (absence, exact counts). The SlowFast plan is passed explicitly (default: key frames every 4th
sample at 3x3, the others at 5x5), so the figures do not depend on the node's default.

    PYTHONPATH=. .venv/bin/python training/heldout_eval.py models/molmo2-tiny-synthetic --out /tmp/heldout
    PYTHONPATH=. .venv/bin/python training/heldout_eval.py training/runs/v2/ckpt_004000.pt --out /tmp/h4000

MODEL is an exported folder or a training checkpoint (`ckpt*.pt`, exported to OUT/model first). Scenarios:
`--scenarios world:seed:WxH,...` (default: the default world at seeds 7 and 11, 320x240 and 640x480, and three
random worlds). Writes OUT/<scenario>/eval.json and OUT/summary.json; prints one line of headline figures per
scenario and their mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "training"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from molmo2_ros.core.clip_buffer import BufferConfig  # noqa: E402
from molmo2_ros.core.engine import EngineConfig, Molmo2Engine  # noqa: E402
from molmo2_ros.core.stream import StreamConfig  # noqa: E402
from molmo2_ros.core.sampling import SlowFastConfig  # noqa: E402
from molmo2_ros.core.types import Query, TaskKind  # noqa: E402
from molmo2_ros.offline.evaluation.answer_metrics import answer_metrics, headline  # noqa: E402
from molmo2_ros.offline.evaluation.evaluate import evaluate, load_results  # noqa: E402
from molmo2_ros.offline.replay import replay  # noqa: E402
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario  # noqa: E402

DEFAULT_SCENARIOS = "default:7:320x240,default:11:640x480,random:101:320x240,random:102:320x240,random:103:640x480"
PLANS = {"key3_fast5": SlowFastConfig(slow_pooling=(3, 3), fast_pooling=(5, 5), key_every=4),
         "key2_fast3": SlowFastConfig(slow_pooling=(2, 2), fast_pooling=(3, 3), key_every=4),
         "uniform3": SlowFastConfig(enabled=False, fast_pooling=(3, 3))}
SHOWN = ("point_hit_rate", "point_recall", "absence_correct", "count_exact", "mota",
         "id_switches_per_track_per_min", "event_f1", "event_start_error_s", "event_end_error_s")


def model_folder(model: str, out: Path) -> str:
    """An exported folder as is; a training checkpoint exported to OUT/model."""
    if not model.endswith(".pt"):
        return model
    import torch

    import train_tiny as T

    processor = T.build_processor()
    net = T.build_model(processor)
    net.load_state_dict(torch.load(model, weights_only=False)["model"])
    T.export(net, processor, out / "model")
    return str(out / "model")


def run_scenario(engine: Molmo2Engine, spec: str, out: Path, config: StreamConfig, seconds: float) -> dict:
    world, seed, size = spec.split(":")
    width, height = (int(v) for v in size.split("x"))
    folder = out / spec.replace(":", "_")
    if not (folder / "scenario" / "scenario.json").is_file():
        generate_scenario(folder / "scenario", seconds=seconds, width=width, height=height, seed=int(seed),
                          world=world)
    truth = GroundTruth.load(folder / "scenario" / "scenario.json")
    queries = [Query(q["id"], TaskKind(q["task"]), q["text"]) for q in truth.data["queries"]]
    engine.clear_cache()  # every scenario's stamps start at the same time: never reuse another's features
    if (folder / "replay").exists():
        import shutil

        shutil.rmtree(folder / "replay")
    summary = replay(folder / "scenario" / "bag", folder / "replay", engine, queries, config=config, gif=False,
                     progress=False)
    results = load_results(summary.results_path)
    report = evaluate(results, truth)
    extra = answer_metrics(results, truth)
    head = headline(report, extra)
    (folder / "eval.json").write_text(json.dumps({"headline": head, "report": report, "answer_metrics": extra,
                                                  "wall_s": summary.wall_s}, indent=1))
    return head


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--out", default="/tmp/molmo2_heldout")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=4.0)
    ap.add_argument("--stride", type=float, default=1.0)
    ap.add_argument("--plan", choices=tuple(PLANS), default="key3_fast5")
    ap.add_argument("--max-new-tokens", type=int, default=400)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = Molmo2Engine(EngineConfig(model=model_folder(args.model, out), device="cpu",
                                       max_new_tokens=args.max_new_tokens))
    engine.load()
    config = StreamConfig(buffer=BufferConfig(window_s=args.window, stride_s=args.stride),
                          slowfast=PLANS[args.plan], max_new_tokens=args.max_new_tokens)
    rows = {}
    print(f"{'scenario':<24} " + " ".join(f"{k[:12]:>12}" for k in SHOWN) + "   wall_s", flush=True)
    for spec in args.scenarios.split(","):
        t0 = time.time()
        rows[spec] = run_scenario(engine, spec, out, config, args.seconds)
        print(f"{spec:<24} " + " ".join(f"{fmt(rows[spec][k]):>12}" for k in SHOWN) + f"   {time.time() - t0:.0f}",
              flush=True)
    mean = {k: (sum(v) / len(v) if (v := [r[k] for r in rows.values() if r[k] is not None]) else None) for k in SHOWN}
    print(f"{'mean':<24} " + " ".join(f"{fmt(mean[k]):>12}" for k in SHOWN), flush=True)
    (out / "summary.json").write_text(json.dumps({"model": args.model, "plan": args.plan, "window": args.window,
                                                  "stride": args.stride, "scenarios": rows, "mean": mean}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
