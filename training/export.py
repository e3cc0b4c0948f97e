"""Export a training checkpoint (OUT/ckpt.pt) as a plain Molmo2 checkpoint: model + processor via
save_pretrained (safetensors, fp32), without the training-only auxiliary head, plus training_recipe.json,
loss_curve.csv and loss_curve.png (drawn with OpenCV; no matplotlib in the venv).

    PYTHONPATH=. .venv/bin/python training/export.py training/runs/v1 models/molmo2-tiny-synthetic
    PYTHONPATH=. .venv/bin/python training/export.py training/runs/v2 OUT --recipe training/curves/v2/recipe.json

The recipe (commands, task, data) written into training_recipe.json is v1's unless --recipe names a JSON file
with those three keys.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as T  # noqa: E402


PY = "OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python training/train_tiny.py --out training/runs/v1"
PHASES = [
    f"{PY} --steps 4000 --stop-at 2000 --eval-every 250",
    f"{PY} --steps 5000 --phase2-start 2000 --eval-every 250 --resume",
    f"{PY} --steps 6200 --phase2-start 2000 --p-none 0.25 --p-slow 0.3 --eval-every 200 --resume",
    f"{PY} --steps 9200 --phase-start 6200 --phase2-start 2000 --p-none 0.15 --p-slow 0.3 --p-track 0.6 "
    "--lr 7e-4 --warmup 150 --eval-every 250 --resume --stop-at 7900",
    f"{PY} --steps 11000 --phase-start 6200 --phase2-start 2000 --p-none 0.15 --p-slow 0.3 --p-track 0.6 "
    "--lr 7e-4 --warmup 150 --eval-every 250 --resume --threads 2",
    f"{PY} --steps 12000 --phase-start 11000 --phase2-start 2000 --p-none 0.2 --p-slow 0.3 --p-track 0.4 "
    "--lr 3e-4 --warmup 50 --eval-every 250 --absent-from-vocabulary --resume --threads 2",
    "OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python training/export.py training/runs/v1 models/molmo2-tiny-synthetic",
]

V1_RECIPE = {
    "commands": PHASES,
    "task": "single-frame pointing: 'Point to the {colour} {shape}.' -> one point on the leftmost visible "
            "instance, or 'There are none.' (3x3 and 2x2 pooled frames); from step 6200 also tracking: "
            "'Track the {colour} {shape}.' on 2-8 frame clips at 2 fps (SlowFast poolings) -> "
            "<tracks coords=\"t id x y;...\">label</tracks>, every visible instance, ids by first appearance",
    "data": "random frames rendered by molmo2_ros.offline.data.scenario.render_frame: 1-6 objects (ball/square/"
            "triangle x red/blue/green, radius 4-6.5% of min(w,h)), textured background, grey occluder; "
            "sizes 320x240, 640x480, 480x360, 400x300, 320x320, 640x360; tracking clips: 1-3 objects in "
            "straight lines up to 0.15 image/s, 20% falling 0.7 image heights in 1.5 s, entering, leaving, "
            "passing behind the occluder",
}


def write_curve(source: Path, dest: Path) -> None:
    """The run's loss curve with one row per step: a resumed run re-logs the steps after its checkpoint, and the
    later row (the one the checkpoint's weights continued from) is kept."""
    with source.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = {int(r["step"]): r for r in reader}
        fields = reader.fieldnames
    with dest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows[s] for s in sorted(rows))


def plot_curve(csv_path: Path, png_path: Path) -> None:
    import cv2

    rows = list(csv.DictReader(csv_path.open()))
    W, H, m = 900, 500, 60
    img = np.full((H, W, 3), 255, np.uint8)
    steps = [int(r["step"]) for r in rows]
    smax = max(steps)
    series = [("digit_ce", (200, 40, 40), 0, 3.0), ("lm", (40, 40, 200), 0, 3.0), ("attn", (40, 150, 40), 0, 3.0),
              ("aux_digits", (150, 100, 0), 0, 3.0), ("eval_hit_rate", (0, 0, 0), 0, 1.0),
              ("eval_track_hit_rate", (180, 0, 180), 0, 1.0), ("eval_video_hit_rate", (0, 140, 200), 0, 1.0),
              ("eval_video_recall", (120, 120, 0), 0, 1.0)]

    def xy(step, v, lo, hi):
        return int(m + (W - 2 * m) * step / smax), int(H - m - (H - 2 * m) * (v - lo) / (hi - lo))

    cv2.rectangle(img, (m, m), (W - m, H - m), (0, 0, 0), 1)
    for i, (name, colour, lo, hi) in enumerate(series):
        pts = [xy(int(r["step"]), min(float(r[name]), hi), lo, hi) for r in rows if r.get(name) not in ("", None)]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2 if name.startswith("eval") else 1, cv2.LINE_AA)
        label = name + (" (0..1)" if hi == 1.0 else " (0..3 nats)")
        cv2.putText(img, label, (m + 10 + 270 * (i % 3), 18 + 16 * (i // 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour,
                    1, cv2.LINE_AA)
    cv2.putText(img, f"step 0..{smax}", (W // 2 - 40, H - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    y = xy(0, np.log(10), 0, 3.0)[1]
    cv2.line(img, (m, y), (W - m, y), (180, 180, 180), 1)
    cv2.putText(img, "ln 10", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (120, 120, 120), 1)
    cv2.imwrite(str(png_path), img)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("dest")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--recipe", default="", help="JSON file with commands, task and data (default: v1's)")
    args = ap.parse_args()
    try:
        described = json.loads(Path(args.recipe).read_text()) if args.recipe else V1_RECIPE
        missing = {"commands", "task", "data"} - described.keys()
    except (OSError, ValueError, AttributeError) as error:
        missing = {f"a readable JSON object ({error})"}
    if missing:
        print(f"error: {args.recipe} lacks {sorted(missing)}: give commands (a list), task and data", file=sys.stderr)
        return 2
    run, dest = Path(args.run), Path(args.dest)
    torch.set_num_threads(1)
    processor = T.build_processor()
    run_args = json.loads((run / "args.json").read_text())
    model = T.build_model(processor, run_args.get("pos_code", "sincos"), run_args.get("pos_amplitude", 1.0))
    state = torch.load(run / "ckpt.pt", weights_only=False)
    model.load_state_dict(state["model"])
    if args.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    if dest.exists():
        shutil.rmtree(dest)
    T.export(model, processor, dest)
    write_curve(run / "loss_curve.csv", dest / "loss_curve.csv")
    plot_curve(dest / "loss_curve.csv", dest / "loss_curve.png")
    recipe = {
        "trained_by": "training/train_tiny.py (molmo2_ros)",
        "seed": run_args["seed"],
        "args": {k: v for k, v in run_args.items() if k != "spec"},
        "spec": run_args["spec"],
        "steps_trained": state["step"],
        "train_seconds": round(state["elapsed"], 1),
        "dtype": args.dtype,
        **described,
        "note": "training-only auxiliary head and attention supervision are not part of these weights",
    }
    (dest / "training_recipe.json").write_text(json.dumps(recipe, indent=1))
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"exported step {state['step']} to {dest} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
