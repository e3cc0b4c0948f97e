"""Held-out evaluation of an exported checkpoint through the product CLI (generate -> replay -> eval).

Writes a fresh scenario (seed not used in training: training frames come from `SceneSampler`, never from a
scenario bag), adds point queries for the three labels to a copy of its scenario.json, replays the bag with
1-frame clips (window 0.4 s, stride 0.5 s, 2 fps) and scores it with `molmo2-ros eval`.

    PYTHONPATH=. .venv/bin/python training/heldout_eval.py models/molmo2-tiny-synthetic --out /tmp/heldout
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
    ap.add_argument("--window", type=float, default=0.4,
                    help="clip length, s: 0.4 gives 1-frame clips at 2 fps (0.5 sometimes keeps 2 frames)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scen = out / "scenario"
    if not (scen / "scenario.json").exists():
        run(CLI + ["generate", str(scen), "--seconds", str(args.seconds), "--width", str(args.width),
                   "--height", str(args.height), "--seed", str(args.seed)])
    truth = json.loads((scen / "scenario.json").read_text())
    by_label: dict[str, list[str]] = {}
    for o in truth["objects"]:
        by_label.setdefault(o["label"], []).append(o["id"])
    queries = [{"id": lab.split()[1] + "_point", "task": "point", "text": lab, "objects": ids}
               for lab, ids in by_label.items()]
    truth["queries"] = [q for q in truth["queries"] if q["task"] != "point"] + queries
    (out / "scenario_points.json").write_text(json.dumps(truth))
    (out / "queries.json").write_text(json.dumps([{k: q[k] for k in ("id", "task", "text")} for q in queries]))
    replay = out / "replay"
    run(CLI + ["replay", str(scen / "bag"), "--out", str(replay), "--model", args.model, "--device", "cpu",
               "--window", str(args.window), "--stride", "0.5", "--queries", str(out / "queries.json"), "--no-gif", "--quiet"])
    run(CLI + ["eval", str(replay / "results.jsonl"), str(out / "scenario_points.json"),
               "--json", str(out / "eval.json")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
