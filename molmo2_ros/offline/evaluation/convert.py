"""Video point/track annotations -> our scenario.json ground truth, one file per video.

Two input schemas (a JSON list, a single object, or JSON lines), detected per record:
- Ai2's published point-tracking records (the schema of the allenai/MolmoPoint-TrackAny and -TrackSyn dataset
  cards): {"video", "expression", "fps", "width", "height", "frame_trajectories": [{"frame", "time",
  "points": [{"id", "point": [x, y], "occluded"}]}], ...}; points in pixels, occluded samples become invisible
  ground truth.
- a flat point list: {"video", "fps" | "timestamps", "label", "points": [{"time", "x", "y", "id"}], optional
  "width", "height"}; x, y are percentages 0..100 when `coords="percent"` (default) or pixels.
Annotations of the same video are merged; each (label, id) becomes one object.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from molmo2_ros.core.types import NS_PER_S

DEFAULT_START_NS = 1_700_000_000 * NS_PER_S


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "q"


def _from_trajectories(item: dict) -> dict:
    """An Ai2 point-tracking record as a flat point list (pixel coordinates)."""
    points = [{"time": step["time"], "x": p["point"][0], "y": p["point"][1], "id": p["id"],
               "visible": not p.get("occluded", False)}
              for step in item["frame_trajectories"] for p in step.get("points", [])]
    return {"video": item.get("video") or item.get("video_path") or item.get("id", "video"),
            "label": item.get("expression", "object"), "fps": item.get("fps", 0), "width": item.get("width"),
            "height": item.get("height"), "timestamps": [step["time"] for step in item["frame_trajectories"]],
            "points": points, "coords": "pixels"}


def convert_annotations(items: list[dict], *, width: int, height: int, coords: str = "percent",
                        start_ns: int = DEFAULT_START_NS, task: str = "track",
                        camera_topic: str = "/camera/image_raw") -> dict[str, dict]:
    """video name -> scenario dict (version 1). Frame stamps = start_ns + time (or timestamps) in ns."""
    if coords not in ("percent", "pixels"):
        raise ValueError("coords must be 'percent' or 'pixels'")
    by_video: dict[str, list[dict]] = defaultdict(list)
    for i, item in enumerate(items):
        if "frame_trajectories" in item:
            item = _from_trajectories(item)
        if "video" not in item or "points" not in item:
            raise ValueError(f"annotation {i} needs 'video' and 'points'")
        by_video[str(item["video"])].append(item)
    out = {}
    for video, anns in by_video.items():
        w = int(anns[0].get("width") or width)
        h = int(anns[0].get("height") or height)
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
                if a.get("coords", coords) == "percent":
                    x, y = x / 100.0 * w, y / 100.0 * h
                obj["track"].append([stamp[float(p["time"])], x, y, bool(p.get("visible", True))])
        out[video] = {"version": 1, "camera_topic": camera_topic, "width": w, "height": h, "frame_id": "camera",
                      "fps": fps, "frames": sorted(stamp.values()), "objects": list(objects.values()),
                      "events": [], "queries": list(queries.values())}
    return out


def convert_file(path: str | Path, out_dir: str | Path, **kwargs) -> list[Path]:
    """Convert a JSON annotation file; writes <out_dir>/<video stem>/scenario.json per video."""
    text = Path(path).read_text()
    try:
        items = json.loads(text)
    except json.JSONDecodeError:  # JSON lines
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(items, dict):
        items = [items]
    written = []
    for video, scenario in convert_annotations(items, **kwargs).items():
        folder = Path(out_dir) / _slug(Path(video).stem)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "scenario.json").write_text(json.dumps(scenario, indent=1))
        written.append(folder / "scenario.json")
    return written
