"""Video point/track annotations (Molmo2-VideoPoint/-Track style, see docs/ground_truth.md for the assumed
schema) -> our scenario.json ground truth, one file per video.

Input: a JSON list of {"video", "fps" | "timestamps", "label", "points": [{"time", "x", "y", "id"}],
optional "width", "height"}. x, y are percentages 0..100 when `coords="percent"` (default) or pixels.
Annotations of the same video are merged; each (label, id) becomes one object; a point is a visible sample.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from ..core.types import NS_PER_S

DEFAULT_START_NS = 1_700_000_000 * NS_PER_S


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "q"


def convert_annotations(items: list[dict], *, width: int, height: int, coords: str = "percent",
                        start_ns: int = DEFAULT_START_NS, task: str = "track",
                        camera_topic: str = "/camera/image_raw") -> dict[str, dict]:
    """video name -> scenario dict (version 1). Frame stamps = start_ns + time (or timestamps) in ns."""
    if coords not in ("percent", "pixels"):
        raise ValueError("coords must be 'percent' or 'pixels'")
    by_video: dict[str, list[dict]] = defaultdict(list)
    for i, item in enumerate(items):
        if "video" not in item or "points" not in item:
            raise ValueError(f"annotation {i} needs 'video' and 'points'")
        by_video[str(item["video"])].append(item)
    out = {}
    for video, anns in by_video.items():
        w = int(anns[0].get("width", width))
        h = int(anns[0].get("height", height))
        fps = float(anns[0].get("fps") or 0.0)
        times: set[float] = set()
        for a in anns:
            times.update(float(t) for t in a.get("timestamps", []))
            times.update(float(p["time"]) for p in a["points"])
        stamp = {t: start_ns + round(t * NS_PER_S) for t in times}
        objects: dict[tuple[str, str], dict] = {}
        queries: dict[str, dict] = {}
        for a in anns:
            label = str(a.get("label", "object"))
            q = queries.setdefault(label, {"id": _slug(label), "task": task, "text": label, "objects": []})
            for p in sorted(a["points"], key=lambda p: float(p["time"])):
                key = (label, str(p.get("id", 0)))
                obj = objects.setdefault(key, {"id": f"{_slug(label)}_{key[1]}", "label": label, "kind": "",
                                               "color": "", "track": []})
                if obj["id"] not in q["objects"]:
                    q["objects"].append(obj["id"])
                x, y = float(p["x"]), float(p["y"])
                if coords == "percent":
                    x, y = x / 100.0 * w, y / 100.0 * h
                obj["track"].append([stamp[float(p["time"])], x, y, True])
        out[video] = {"version": 1, "camera_topic": camera_topic, "width": w, "height": h, "frame_id": "camera",
                      "fps": fps, "frames": sorted(stamp.values()), "objects": list(objects.values()),
                      "events": [], "queries": list(queries.values())}
    return out


def convert_file(path: str | Path, out_dir: str | Path, **kwargs) -> list[Path]:
    """Convert a JSON annotation file; writes <out_dir>/<video stem>/scenario.json per video."""
    items = json.loads(Path(path).read_text())
    if isinstance(items, dict):
        items = [items]
    written = []
    for video, scenario in convert_annotations(items, **kwargs).items():
        folder = Path(out_dir) / _slug(Path(video).stem)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "scenario.json").write_text(json.dumps(scenario, indent=1))
        written.append(folder / "scenario.json")
    return written
