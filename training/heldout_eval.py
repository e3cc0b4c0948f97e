"""Held-out evaluation of an exported checkpoint through the product CLI (generate -> replay -> eval).

Writes a fresh scenario (seed not used in training: training frames come from `SceneSampler`, never from a
scenario bag), adds a point (or track) query for each label to a copy of its scenario.json, replays the bag and
scores it with `molmo2-ros eval`. Points: 1-frame clips (window 0.4 s, stride 0.5 s, 2 fps). Tracks: 8-frame
clips (window 3.9 s at 2 fps, stride 1 s), scored by track_point_hit_rate.

    PYTHONPATH=. .venv/bin/python training/heldout_eval.py models/molmo2-tiny-synthetic --out /tmp/heldout
    PYTHONPATH=. .venv/bin/python training/heldout_eval.py MODEL --task track --out /tmp/heldout_track
    PYTHONPATH=. .venv/bin/python training/heldout_eval.py MODEL --world two_colours --out /tmp/heldout_2c
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "molmo2_ros.cli"]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--out", default="/tmp/molmo2_heldout")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--task", choices=("point", "track"), default="point")
    ap.add_argument("--world", choices=("default", "two_colours"), default="default")
    ap.add_argument("--window", type=float, default=None,
                    help="clip length, s (default: 0.4 = 1-frame clips for point, 3.9 = 8 frames for track)")
    ap.add_argument("--stride", type=float, default=None, help="s between clips (default 0.5 point, 1.0 track)")
    args = ap.parse_args()
    window = args.window or (0.4 if args.task == "point" else 3.9)
    stride = args.stride or (0.5 if args.task == "point" else 1.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scen = out / "scenario"
    if not (scen / "scenario.json").exists():
        run(CLI + ["generate", str(scen), "--seconds", str(args.seconds), "--width", str(args.width),
                   "--height", str(args.height), "--seed", str(args.seed), "--world", args.world])
    truth = json.loads((scen / "scenario.json").read_text())
    by_label: dict[str, list[str]] = {}
    for o in truth["objects"]:
        by_label.setdefault(o["label"], []).append(o["id"])
    queries = [{"id": lab.replace(" ", "_") + "_" + args.task, "task": args.task, "text": lab, "objects": ids}
               for lab, ids in by_label.items()]
    truth["queries"] = [q for q in truth["queries"] if q["task"] not in ("point", "track")] + queries
    (out / "scenario_queries.json").write_text(json.dumps(truth))
    (out / "queries.json").write_text(json.dumps([{k: q[k] for k in ("id", "task", "text")} for q in queries]))
    replay = out / "replay"
    run(CLI + ["replay", str(scen / "bag"), "--out", str(replay), "--model", args.model, "--device", "cpu",
               "--window", str(window), "--stride", str(stride),
               "--max-new-tokens", "64" if args.task == "point" else "400",
               "--queries", str(out / "queries.json"), "--no-gif", "--quiet"])
    run(CLI + ["eval", str(replay / "results.jsonl"), str(out / "scenario_queries.json"),
               "--json", str(out / "eval.json")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
