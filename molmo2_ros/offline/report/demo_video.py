"""The demo video: a replay's camera frames with the model's answers, beside the ground truth when there is one.

Layout (at least 640 px wide): the model panel and the truth panel side by side (camera frame scaled to
`panel_width`), a legend with one colour per query and what it says now (points, count vs truth, "none",
event), and a timeline with one bar per event query (model spans above truth spans) and a cursor. Without
ground truth (a user's own bag) the model panel is shown alone, wider.

What a frame shows: the video plays the frames the model sampled (2 fps by default, the clips' rate), so every
mark sits on the frame it was given for; each frame shows the FIRST answer that covered it (the window that saw it
first, as a live robot would). Marks: point = ring, count = square, event = diamond with a short label,
track = dot with its trail and id. Labels are placed where they do not overlap another label or leave the
panel, or not drawn. Written as MP4 (VP9 in MP4 through OpenCV's FFmpeg: it plays in browsers) and a GIF.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from molmo2_ros.core.colours import id_colour
from molmo2_ros.core.image_decode import BadImage
from molmo2_ros.core.overlay import LabelPlacer
from molmo2_ros.core.tracks import split_id
from molmo2_ros.core.types import NS_PER_S, QueryResult, TaskKind
from molmo2_ros.offline.evaluation.evaluate import clip_stamps
from molmo2_ros.offline.data.scenario import GroundTruth

FONT = cv2.FONT_HERSHEY_SIMPLEX
BG = (24, 26, 30)
TEXT = (235, 235, 235)
DIM = (150, 150, 155)
TRUTH_GREY = (200, 200, 200)
SHORT_EVENT = {"fall": "falls", "touch": "touch", "leave": "leaves"}


@dataclass
class QueryView:
    """One query: its colour, its ground-truth spec (or None) and, per sampled stamp, the first result that
    covered it."""

    qid: str
    task: TaskKind
    text: str
    colour: tuple[int, int, int]
    spec: dict | None
    first: dict[int, QueryResult] = field(default_factory=dict)
    results: list[QueryResult] = field(default_factory=list)


def build_views(results: list[QueryResult], truth: GroundTruth | None) -> list[QueryView]:
    """Views in order of first appearance."""
    views: dict[str, QueryView] = {}
    for r in results:
        v = views.get(r.query.id)
        if v is None:
            spec = truth.query_for(r.query.id, r.query.text) if truth is not None else None
            v = views[r.query.id] = QueryView(r.query.id, r.query.task, r.query.text, id_colour(r.query.id), spec)
        v.results.append(r)
        for s in clip_stamps(r):
            v.first.setdefault(s, r)
    return list(views.values())


def _mark(img: np.ndarray, task: TaskKind, p: tuple[int, int], colour, r: int) -> None:
    """A task-shaped mark with a black outline (visible on any object colour)."""
    x, y = p
    if task == TaskKind.COUNT:
        for c, t in (((0, 0, 0), 4), (colour, 2)):
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), c, t, cv2.LINE_AA)
    elif task == TaskKind.EVENT:
        pts = np.array([[x, y - r - 2], [x + r + 2, y], [x, y + r + 2], [x - r - 2, y]], np.int32)
        for c, t in (((0, 0, 0), 4), (colour, 2)):
            cv2.polylines(img, [pts], True, c, t, cv2.LINE_AA)
    elif task == TaskKind.TRACK:
        cv2.circle(img, p, max(3, r // 2) + 1, (0, 0, 0), cv2.FILLED, cv2.LINE_AA)
        cv2.circle(img, p, max(3, r // 2), colour, cv2.FILLED, cv2.LINE_AA)
    else:
        for c, t in (((0, 0, 0), 4), (colour, 2)):
            cv2.circle(img, p, r, c, t, cv2.LINE_AA)


class DemoRenderer:
    """Draws one video frame per camera frame; see the module docstring."""

    def __init__(self, views: list[QueryView], stamps: list[int], truth: GroundTruth | None, width: int,
                 height: int, panel_width: int = 480, model_name: str = "model") -> None:
        self.views, self.stamps, self.truth = views, stamps, truth
        self.src_w, self.src_h = width, height
        panels = 2 if truth is not None else 1
        self.pw = panel_width if truth is not None else max(panel_width, 640)
        self.ph = int(round(self.pw * height / width))
        self.k = self.pw / width
        self.title_h = 26
        self.legend_rows = -(-len(views) // 2)
        self.legend_h = 12 + 22 * self.legend_rows
        self.events = [v for v in views if v.task == TaskKind.EVENT]
        self.timeline_h = (28 + 26 * len(self.events)) if self.events else 0
        self.width = max(640, panels * self.pw + (panels - 1) * 8)
        self.height = self.title_h + self.ph + self.legend_h + self.timeline_h
        self.height += self.height % 2  # even sizes for the video encoder
        self.model_name = model_name
        self.t0, self.t1 = stamps[0], stamps[-1]
        self.sampled = sorted({s for v in views for s in v.first})
        self.scale = 0.42 if self.pw < 600 else 0.5
        self.marker_r = max(6, int(round(0.045 * min(self.pw, self.ph) / 2)))

    # ---- helpers -----------------------------------------------------------------------------------------
    def _xy(self, x: float, y: float, ox: int) -> tuple[int, int]:
        return int(round(ox + x * self.k)), int(round(self.title_h + y * self.k))

    def _sample_at(self, stamp: int) -> int | None:
        """The sampled stamp whose answers show on this camera frame: the newest one at or before it (held
        until the next)."""
        i = bisect.bisect_right(self.sampled, stamp)
        return self.sampled[i - 1] if i else None

    def _truth_objects(self, v: QueryView, stamp: int) -> list[tuple[str, tuple[float, float]]]:
        if self.truth is None or v.spec is None:
            return []
        objects = v.spec.get("objects", [])
        if v.task == TaskKind.EVENT:
            live = {o for e in self.truth.query_events(v.spec) if e["start_ns"] <= stamp <= e["end_ns"]
                    for o in e["object_ids"]}
            objects = [o for o in objects if o in live]
        return [(o, p) for o in objects if (p := self.truth.visible(o, stamp)) is not None]

    def _truth_count(self, v: QueryView, r: QueryResult) -> int | None:
        if self.truth is None or v.spec is None:
            return None
        objects = v.spec.get("objects", [])
        return len({o for s in clip_stamps(r) for o in objects if self.truth.visible(o, s)})

    # ---- drawing -----------------------------------------------------------------------------------------
    def frame(self, image: np.ndarray, stamp: int) -> np.ndarray:
        """The video frame (RGB) for one camera frame."""
        canvas = np.full((self.height, self.width, 3), BG, np.uint8)
        panel = cv2.resize(image, (self.pw, self.ph), interpolation=cv2.INTER_AREA)
        sample = self._sample_at(stamp)
        t = (stamp - self.t0) / NS_PER_S
        canvas[self.title_h:self.title_h + self.ph, :self.pw] = panel
        cv2.putText(canvas, f"model: {self.model_name}", (6, 18), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
        labels = LabelPlacer((0, self.title_h, self.pw, self.title_h + self.ph), self.scale)
        status = {v.qid: self._draw_model(canvas, v, sample, labels) for v in self.views}
        if self.truth is not None:
            ox = self.pw + 8
            canvas[self.title_h:self.title_h + self.ph, ox:ox + self.pw] = panel
            cv2.putText(canvas, "ground truth", (ox + 6, 18), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
            tl = LabelPlacer((ox, self.title_h, ox + self.pw, self.title_h + self.ph), self.scale)
            for v in self.views:
                self._draw_truth(canvas, v, stamp, ox, tl)
        cv2.putText(canvas, f"t = {t:4.1f} s", (self.width - 96, 18), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
        self._legend(canvas, status)
        if self.events:
            self._timeline(canvas, stamp)
        return canvas

    def _draw_model(self, img: np.ndarray, v: QueryView, sample: int | None, labels: LabelPlacer) -> str:
        """Draws the query's answer on the model panel; returns its legend status."""
        r = v.first.get(sample) if sample is not None else None
        if r is None:
            return "waiting"
        c, rad = v.colour, self.marker_r
        if v.task == TaskKind.TRACK:
            heads = 0
            for track in r.tracks:
                trail = [p for p in track.trajectory if p.stamp_ns <= sample][-12:]
                if not trail or trail[-1].stamp_ns != sample:
                    continue
                pts = np.array([self._xy(p.x, p.y, 0) for p in trail], np.int32)
                if len(pts) > 1:
                    cv2.polylines(img, [pts], False, (0, 0, 0), 4, cv2.LINE_AA)
                    cv2.polylines(img, [pts], False, c, 2, cv2.LINE_AA)
                head = tuple(int(v_) for v_ in pts[-1])
                _mark(img, v.task, head, c, rad)
                labels.place(img, f"#{split_id(track.id)[1]}", head, c)
                heads += 1
            return f"{heads} track{'s' if heads != 1 else ''}" if heads else "none"
        points = [p for p in r.points if p.stamp_ns == sample]
        labelled = False
        for p in points:
            xy = self._xy(p.x, p.y, 0)
            _mark(img, v.task, xy, c, rad)
            if v.task == TaskKind.EVENT and not labelled:  # one short label per event query and frame
                etype = v.spec.get("event_type", "") if v.spec else ""
                labelled = labels.place(img, SHORT_EVENT.get(etype, "event"), xy, c)
        if v.task == TaskKind.COUNT:
            truth = self._truth_count(v, r)
            return f"count {r.count if r.count is not None else '-'}" + (f" (truth {truth})" if truth is not None
                                                                          else "")
        if v.task == TaskKind.EVENT:
            return "now" if points else "-"
        return f"{len(points)} point{'s' if len(points) != 1 else ''}" if points else "none"

    def _draw_truth(self, img: np.ndarray, v: QueryView, stamp: int, ox: int, labels: LabelPlacer) -> None:
        c, rad = v.colour, self.marker_r
        labelled = False
        for oid, (x, y) in self._truth_objects(v, stamp):
            xy = self._xy(x, y, ox)
            if v.task == TaskKind.TRACK and self.truth is not None:
                past = [self.truth.visible(oid, s) for s in self.stamps
                        if stamp - 6 * NS_PER_S // 2 <= s <= stamp]
                pts = np.array([self._xy(*p, ox) for p in past if p is not None], np.int32)
                if len(pts) > 1:
                    cv2.polylines(img, [pts], False, (0, 0, 0), 4, cv2.LINE_AA)
                    cv2.polylines(img, [pts], False, c, 2, cv2.LINE_AA)
            _mark(img, v.task, xy, c, rad)
            if v.task == TaskKind.TRACK:
                labels.place(img, oid.split("_")[-1] if "_" in oid else oid, xy, c)
            elif v.task == TaskKind.EVENT and not labelled:
                labelled = labels.place(img, SHORT_EVENT.get(v.spec.get("event_type", ""), "event"), xy, c)

    def _legend(self, img: np.ndarray, status: dict[str, str]) -> None:
        y0 = self.title_h + self.ph + 8
        col_w = self.width // 2
        for i, v in enumerate(self.views):
            x, y = (i % 2) * col_w + 8, y0 + (i // 2) * 22
            cv2.rectangle(img, (x, y + 2), (x + 14, y + 16), v.colour, cv2.FILLED)
            name = f"{v.task.value} '{v.text}'"
            cv2.putText(img, name, (x + 20, y + 14), FONT, 0.45, TEXT, 1, cv2.LINE_AA)
            (nw, _), _ = cv2.getTextSize(name, FONT, 0.45, 1)
            cv2.putText(img, status.get(v.qid, ""), (x + 28 + nw, y + 14), FONT, 0.45, v.colour, 1, cv2.LINE_AA)

    def _timeline(self, img: np.ndarray, stamp: int) -> None:
        y0 = self.title_h + self.ph + self.legend_h
        x0, x1 = 150, self.width - 12
        span = max(self.t1 - self.t0, 1)

        def tx(s: int) -> int:
            return int(x0 + (x1 - x0) * (s - self.t0) / span)

        cv2.putText(img, "events" + (" (model | truth)" if self.truth is not None else ""), (8, y0 + 14), FONT,
                    0.38, DIM, 1, cv2.LINE_AA)
        for k in range(0, int(span / NS_PER_S) + 1, 2):
            x = tx(self.t0 + k * NS_PER_S)
            cv2.line(img, (x, y0 + 18), (x, y0 + 22), DIM, 1)
            if k % 4 == 0:
                cv2.putText(img, f"{k}s", (x - 8, y0 + 14), FONT, 0.35, DIM, 1, cv2.LINE_AA)
        for i, v in enumerate(self.events):
            y = y0 + 26 + 26 * i
            cv2.putText(img, v.text[:22], (8, y + 14), FONT, 0.36, v.colour, 1, cv2.LINE_AA)
            cv2.rectangle(img, (x0, y), (x1, y + 9), (50, 52, 58), cv2.FILLED)
            cv2.rectangle(img, (x0, y + 12), (x1, y + 21), (50, 52, 58), cv2.FILLED)
            spans: dict[str, tuple[int, int]] = {}
            for r in v.results:  # what the model had reported by now
                if r.clip_end_ns <= stamp:
                    spans.update((e.id, (e.start_ns, e.end_ns)) for e in r.events)
            for a, b in spans.values():
                cv2.rectangle(img, (tx(a), y), (max(tx(b), tx(a) + 3), y + 9), v.colour, cv2.FILLED)
            if self.truth is not None and v.spec is not None:
                for e in self.truth.query_events(v.spec):
                    a, b = e["start_ns"], e["end_ns"]
                    cv2.rectangle(img, (tx(a), y + 12), (max(tx(b), tx(a) + 3), y + 21), TRUTH_GREY, cv2.FILLED)
        x = tx(stamp)
        cv2.line(img, (x, y0 + 22), (x, y0 + 26 + 26 * len(self.events)), (255, 255, 255), 1)


def write_video(frames, path: Path, fps: float, size: tuple[int, int]) -> Path:
    """Write RGB frames to an MP4 (VP9, plays in browsers; falls back to MPEG-4 part 2 when this OpenCV has no
    VP9 encoder) and check that it decodes to as many frames."""
    path = Path(path)
    for fourcc in ("vp09", "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            break
    else:
        raise RuntimeError(f"OpenCV cannot write MP4 video ({path})")
    n = 0
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        n += 1
    writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = 0
    while cap.grab():
        decoded += 1
    cap.release()
    if decoded != n:
        raise RuntimeError(f"{path}: wrote {n} frames, decoded {decoded}")
    return path


def write_gif(frames: list[np.ndarray], path: Path, frame_ms: int, width: int = 640) -> Path:
    """A looping GIF (one palette per frame, scaled to `width`) for READMEs."""
    from PIL import Image

    images = []
    for f in frames:
        h = int(round(f.shape[0] * width / f.shape[1]))
        small = cv2.resize(f, (width, h - h % 2), interpolation=cv2.INTER_AREA)
        images.append(Image.fromarray(small).quantize(colors=128, method=Image.Quantize.MEDIANCUT))
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=True)
    return Path(path)


def render_replay_video(bag: Path, results: list[QueryResult], truth: GroundTruth | None, out_dir: Path, *,
                        topic: str = "", fps: float = 2.0, model_name: str = "model", progress=None
                        ) -> tuple[Path, Path, list[int]]:
    """Render the replay of `bag` with its results into OUT/demo.mp4 and OUT/demo.gif; returns both paths and
    the bag's frame stamps. Camera frames are decimated to at most `fps` (2: the sampled frames); the GIF takes
    at most 2 frames per second and 60 frames. The bag is read twice (stamps, then images) so that memory stays
    bounded by one frame. `progress`: a callable(done, total) or None."""
    from molmo2_ros.offline.data.bags import CameraBag

    stamps, keep, last = [], set(), None
    with CameraBag(bag, topic) as camera:  # stamps only: nothing decoded yet
        for f in camera.frames():  # at most `fps` frames per second of stamps
            stamps.append(f.stamp_ns)
            if last is None or f.stamp_ns - last >= NS_PER_S / fps * 0.98:
                keep.add(f.stamp_ns)
                last = f.stamp_ns
    if not stamps:
        raise ValueError(f"{bag} has no camera frames")
    stamps.sort()
    gif_frames: list[np.ndarray] = []
    gif_every = max(1, int(round(fps / 2)))

    def images():
        with CameraBag(bag, topic) as camera:
            for f in camera.frames():
                if f.stamp_ns not in keep:
                    continue
                try:
                    yield f.decode()
                except BadImage:  # the replay counted it; the video skips it
                    continue

    frames = images()
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{bag} has no decodable camera frames")
    height, width = first.image.shape[:2]
    renderer = DemoRenderer(build_views(results, truth), stamps, truth, width, height,
                            model_name=model_name)

    def rendered():
        done = 0
        for f in itertools.chain([first], frames):
            img = f.image if f.image.ndim == 3 else cv2.cvtColor(f.image, cv2.COLOR_GRAY2RGB)
            out = renderer.frame(img, f.stamp_ns)
            if done % gif_every == 0 and len(gif_frames) < 60:
                gif_frames.append(out)
            done += 1
            if progress is not None:
                progress(done, len(keep))
            yield out

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mp4 = write_video(rendered(), out_dir / "demo.mp4", fps, (renderer.width, renderer.height))
    gif = write_gif(gif_frames, out_dir / "demo.gif", int(1000 * gif_every / fps))
    return mp4, gif, stamps
