"""A one-page HTML report of a replay: metrics per query, plots over time and the demo video.

The page is self-contained (the video is embedded as a data URI, the plots are inline SVG, the style is inline,
no script): it opens from disk with no server and no network. With ground truth (scenario.json) it shows the
evaluation, the headline figures (graded only against targets the user gives: `targets.py`), hit rate and
count per window against the truth and event spans against the truth; without it, what the model answered (points
per window, counts, event spans) and the latency per window.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from molmo2_ros.core.colours import id_colour
from molmo2_ros.core.types import NS_PER_S, QueryResult, TaskKind
from molmo2_ros.offline.evaluation.answer_metrics import answer_metrics, headline
from molmo2_ros.offline.evaluation.evaluate import clip_stamps, eval_points, evaluate
from molmo2_ros.offline.data.scenario import GroundTruth
from molmo2_ros.offline.evaluation.targets import FIGURES, Target

W, H, PAD = 720, 170, 40
SPAN_PAD = PAD + 90  # left edge of the time axis of a span plot: its row labels go left of it
LEGEND_ROW = 16  # height of a legend row under a plot


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


class Plot:
    """An inline SVG chart over the replay's time axis (seconds from the first frame): the title above it, the y
    axis label upright beside it, the legend in rows of its own under the time axis (clear of the title however
    many lines there are). `left`: where the time axis starts."""

    def __init__(self, title: str, t_max: float, y_max: float, y_label: str, height: int = H, left: int = PAD) -> None:
        self.title, self.left = title, left
        self.t_max, self.y_max, self.h = max(t_max, 1e-6), max(y_max, 1e-6), height
        self.legend: list[tuple[str, str]] = []  # (colour, name) in the order the lines were drawn
        self.parts = [f'<text x="{PAD}" y="14" font-size="12" font-weight="bold">{html.escape(title)}</text>',
                      f'<text x="12" y="{height // 2}" font-size="10" fill="#555" text-anchor="middle" '
                      f'transform="rotate(-90 12 {height // 2})">{html.escape(y_label)}</text>']
        bottom = height - 20
        self.parts.append(f'<line x1="{left}" y1="{bottom}" x2="{W - 10}" y2="{bottom}" stroke="#999"/>')
        step = 2 if t_max <= 30 else 10
        for k in range(0, int(t_max) + 1, step):
            x = self.x(k)
            self.parts.append(f'<text x="{x:.0f}" y="{height - 6}" font-size="10" fill="#555" '
                              f'text-anchor="middle">{k}s</text>')

    def x(self, t: float) -> float:
        return self.left + (W - self.left - 10) * t / self.t_max

    def y(self, v: float) -> float:
        return self.h - 20 - (self.h - 44) * min(v, self.y_max) / self.y_max

    def y_ticks(self, values: list[float]) -> None:
        for v in values:
            self.parts.append(f'<line x1="{self.left}" y1="{self.y(v):.1f}" x2="{W - 10}" y2="{self.y(v):.1f}" '
                              f'stroke="#e3e3e8"/><text x="{self.left - 4}" y="{self.y(v) + 3:.1f}" font-size="10" '
                              f'fill="#555" text-anchor="end">{v:g}</text>')

    def line(self, points: list[tuple[float, float]], colour: str, name: str, dashed: bool = False) -> None:
        if not points:
            return
        path = " ".join(f"{self.x(t):.1f},{self.y(v):.1f}" for t, v in points)
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        self.parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for t, v in points:
            self.parts.append(f'<circle cx="{self.x(t):.1f}" cy="{self.y(v):.1f}" r="2.5" fill="{colour}"/>')
        if name:
            self.legend.append((colour, name))

    def span_row(self, row: int, spans: list[tuple[float, float]], colour: str, label: str) -> None:
        y = 26 + row * 18
        self.parts.append(f'<text x="4" y="{y + 10}" font-size="10">{html.escape(label)}</text>'
                          f'<rect x="{self.left}" y="{y}" width="{W - self.left - 10}" height="12" fill="#eceef2"/>')
        for a, b in spans:
            x0, x1 = self.x(a), self.x(b)
            self.parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 3):.1f}" height="12" '
                              f'fill="{colour}"><title>{a:.1f}-{b:.1f} s</title></rect>')

    def _legend_svg(self) -> tuple[str, int]:
        """The legend's entries left to right, wrapped into rows under the plot; returns them and the rows."""
        parts, x, row = [], float(PAD), 0
        for colour, name in self.legend:
            width = 13 + 6.5 * len(name)  # 11 px text: about 6.5 px a character
            if x > PAD and x + width > W - 10:
                x, row = float(PAD), row + 1
            y = self.h + row * LEGEND_ROW
            parts.append(f'<rect x="{x:.0f}" y="{y}" width="10" height="10" fill="{colour}"/>'
                         f'<text x="{x + 13:.0f}" y="{y + 9}" font-size="11">{html.escape(name)}</text>')
            x += width + 14
        return "".join(parts), row + 1 if self.legend else 0

    def svg(self) -> str:
        legend, rows = self._legend_svg()
        height = self.h + rows * LEGEND_ROW + (4 if rows else 0)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
                f'role="img" aria-label="{html.escape(self.title)}">'
                f'<rect x="0" y="0" width="{W}" height="{height}" fill="#fbfbfc"/>'
                + "".join(self.parts) + legend + "</svg>")


def _windows(results: list[QueryResult]) -> dict[str, list[QueryResult]]:
    by_query: dict[str, list[QueryResult]] = defaultdict(list)
    for r in results:
        by_query[r.query.id].append(r)
    return by_query


def plots(results: list[QueryResult], truth: GroundTruth | None, t0: int, t_max: float) -> list[str]:
    """SVG plots: pointing per window, counts per window, event spans, latency per window."""
    by_query = _windows(results)
    colours = {q: _rgb(id_colour(q)) for q in by_query}
    out = []

    def t(ns: int) -> float:
        return (ns - t0) / NS_PER_S

    radius = 0.05 * truth.diagonal if truth is not None else 0.0
    point_queries = [q for q, rs in by_query.items() if rs[0].query.task == TaskKind.POINT]
    if point_queries:
        if truth is not None:
            p = Plot("pointing per window: hit rate (solid) and recall (dashed)", t_max, 1.0, "rate")
            p.y_ticks([0, 0.5, 1.0])
        else:
            y_max = max((len(r.points) for q in point_queries for r in by_query[q]), default=1)
            p = Plot("points per window", t_max, y_max, "points")
            p.y_ticks([0, y_max])
        for q in point_queries:
            rs = by_query[q]
            spec = truth.query_for(q, rs[0].query.text) if truth is not None else None
            if spec is None:
                p.line([(t(r.clip_end_ns), len(r.points)) for r in rs], colours[q], q)
                continue
            objects = list(spec.get("objects", []))
            hit, rec = [], []
            for r in rs:
                m = eval_points(truth, [r], objects, radius)
                if m["point_hit_rate"] is not None:
                    hit.append((t(r.clip_end_ns), m["point_hit_rate"]))
                if m["point_recall"] is not None:
                    rec.append((t(r.clip_end_ns), m["point_recall"]))
            p.line(hit, colours[q], q)
            if rec:
                p.line(rec, colours[q], "", dashed=True)
        out.append(p.svg())
    for q, rs in by_query.items():
        if rs[0].query.task != TaskKind.COUNT:
            continue
        model = [(t(r.clip_end_ns), r.count or 0) for r in rs]
        spec = truth.query_for(q, rs[0].query.text) if truth is not None else None
        truth_line = []
        if spec is not None:
            objects = list(spec.get("objects", []))
            truth_line = [(t(r.clip_end_ns), _truth_count(truth, r, objects)) for r in rs]
        y_max = max([v for _, v in model + truth_line] + [1])
        p = Plot(f"count per window: {q}" + (" (grey: truth)" if truth_line else ""), t_max, y_max + 1, "count")
        p.y_ticks(list(range(0, int(y_max) + 2)))
        if truth_line:
            p.line(truth_line, "#9a9aa5", "truth")
        p.line(model, colours[q], q)
        out.append(p.svg())
    event_queries = [q for q, rs in by_query.items() if rs[0].query.task == TaskKind.EVENT]
    if event_queries:
        rows = len(event_queries) * (2 if truth is not None else 1)
        p = Plot("event spans" + (" (model, then truth in grey)" if truth is not None else ""), t_max, 1.0, "",
                 height=50 + 18 * rows, left=SPAN_PAD)
        row = 0
        for q in event_queries:
            final: dict[str, tuple[int, int]] = {}
            for r in by_query[q]:
                final.update((e.id, (e.start_ns, e.end_ns)) for e in r.events)
            p.span_row(row, [(t(a), t(b)) for a, b in final.values()], colours[q], q)
            row += 1
            spec = truth.query_for(q, by_query[q][0].query.text) if truth is not None else None
            if spec is not None:
                p.span_row(row, [(t(e["start_ns"]), t(e["end_ns"])) for e in truth.query_events(spec)], "#9a9aa5",
                           "truth")
                row += 1
        out.append(p.svg())
    latency: dict[int, tuple[int, float]] = {}
    for r in results:
        latency[r.clip_index] = (r.clip_end_ns, max(latency.get(r.clip_index, (0, 0.0))[1], r.inference_s))
    if latency:
        y_max = max(v for _, v in latency.values())
        p = Plot("latency per window (all queries of a window are answered together)", t_max, y_max * 1.15 or 1,
                 "seconds")
        p.y_ticks([0, round(y_max, 2)])
        p.line([(t(s), v) for s, v in sorted(latency.values())], "#3b6fd8", "inference s")
        out.append(p.svg())
    return out


def _truth_count(truth: GroundTruth, r: QueryResult, objects: list[str]) -> int:
    return len({o for s in clip_stamps(r) for o in objects if truth.visible(o, s) is not None})


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;
color:#1d1f24;background:#fff}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
.meta{color:#555;font-size:13px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d8dae0;padding:4px 8px;text-align:right}th{background:#f1f2f5}
td.l,th.l{text-align:left}.ok{color:#17803d;font-weight:600}.miss{color:#b3261e;font-weight:600}
.sw{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px}
video{max-width:100%;border:1px solid #ccc;background:#000}svg{display:block;margin:10px 0}
details{margin:10px 0;font-size:12px}pre{white-space:pre-wrap;background:#f6f7f9;padding:8px}"""

SHOWN = {"point": ("answers", "point_hit_rate", "point_recall", "points_predicted", "absence_correct",
                   "absent_answers"),
         "count": ("answers", "count_exact", "count_mae", "absence_correct", "absent_answers"),
         "track": ("answers", "mota", "track_point_hit_rate", "id_switches", "id_switches_per_track_per_min"),
         "event": ("answers", "event_f1", "event_precision", "event_recall", "event_start_error_s",
                   "event_end_error_s")}


def _headline_table(head: dict[str, Any], targets: dict[str, Target] | None) -> str:
    """The headline figures; with targets, a target and a met / not met column (empty for a figure without one)."""
    rows = []
    for key in FIGURES:
        cells = f'<td class="l">{key}</td><td>{_fmt(head.get(key))}</td>'
        if targets is not None:
            target = targets.get(key)
            if target is None:
                cells += "<td></td><td></td>"
            else:
                ok = target.met(head.get(key))
                cells += (f'<td>{html.escape(str(target))}</td>'
                          f'<td class="{"ok" if ok else "miss"}">{"met" if ok else "not met"}</td>')
        rows.append(f"<tr>{cells}</tr>")
    header = '<th class="l">figure</th><th>measured</th>'
    if targets is not None:
        header += "<th>target</th><th>status</th>"
    return f'<table id="headline"><tr>{header}</tr>' + "".join(rows) + "</table>"


def write_report(out: Path, results: list[QueryResult], truth: GroundTruth | None, *, video: Path | None,
                 title: str, settings: dict[str, Any], stamps: list[int],
                 targets: dict[str, Target] | None = None) -> Path:
    """Write OUT/report.html; returns its path. `stamps`: the bag's camera frame stamps (time axis); `targets`: the
    user's targets of the headline figures (none: no target column)."""
    out = Path(out)
    t0 = stamps[0] if stamps else min(r.clip_start_ns for r in results)
    t_max = ((stamps[-1] if stamps else max(r.clip_end_ns for r in results)) - t0) / NS_PER_S
    body = [f"<h1>{html.escape(title)}</h1>",
            '<p class="meta">' + " &middot; ".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in settings.items())
            + "</p>"]
    report = extra = None
    if truth is not None:
        report = evaluate(results, truth)
        extra = answer_metrics(results, truth)
        body += ["<h2>Headline figures</h2>", _headline_table(headline(report, extra), targets)]
    body.append("<h2>Metrics per query</h2>")
    body.append(_query_table(results, report, extra))
    if video is not None and Path(video).is_file():
        data = base64.b64encode(Path(video).read_bytes()).decode()
        body += ["<h2>Video</h2>",
                 '<p class="meta">left: the model\'s answers on the frames it sampled; right: the ground truth. '
                 "Ring = point, square = count, dot + trail = track, diamond = event.</p>" if truth is not None
                 else '<p class="meta">the model\'s answers on the frames it sampled.</p>',
                 f'<video id="demo-video" controls loop muted playsinline preload="auto" '
                 f'src="data:video/mp4;base64,{data}"></video>']
    body.append("<h2>Over time</h2>")
    body += plots(results, truth, t0, t_max)
    body.append(_answers(results, t0))
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _query_table(results: list[QueryResult], report: dict | None, extra: dict | None) -> str:
    by_query = _windows(results)
    rows = []
    for qid, rs in by_query.items():
        task = rs[0].query.task.value
        if report is not None and qid in report["per_query"]:
            m = {**report["per_query"][qid], **(extra or {}).get(qid, {})}
        else:  # no ground truth: what the model said
            m = {"answers": len(rs), "points_predicted": sum(len(r.points) for r in rs),
                 "empty_answers": sum(not (r.points or r.tracks or r.events or r.count) for r in rs)}
        shown = ", ".join(f"{k}={_fmt(m[k])}" for k in SHOWN.get(task, ()) + ("empty_answers",) if k in m)
        rows.append(f'<tr><td class="l"><span class="sw" style="background:{_rgb(id_colour(qid))}"></span>'
                    f'{html.escape(qid)}</td><td class="l">{task}</td><td class="l">{html.escape(rs[0].query.text)}'
                    f'</td><td class="l">{shown}</td></tr>')
    return ('<table id="per-query"><tr><th class="l">query</th><th class="l">task</th><th class="l">text</th>'
            '<th class="l">metrics</th></tr>' + "".join(rows) + "</table>")


def _answers(results: list[QueryResult], t0: int, limit: int = 400) -> str:
    lines = [f"{(r.clip_end_ns - t0) / NS_PER_S:6.1f}s {r.query.id:<18} {r.text}" for r in results[:limit]]
    more = f"\n... {len(results) - limit} more in results.jsonl" if len(results) > limit else ""
    return ("<details><summary>raw answers (window end, query, text)</summary><pre>"
            + html.escape("\n".join(lines) + more) + "</pre></details>")


def report_json(results: list[QueryResult], truth: GroundTruth) -> dict[str, Any]:
    """The evaluation, absence metrics and headline figures as one JSON-ready dict."""
    report = evaluate(results, truth)
    extra = answer_metrics(results, truth)
    return {"headline": headline(report, extra), "report": report, "answer_metrics": extra}


def build_report(bag: Path, results_path: Path, out: Path, *, truth: GroundTruth | None, title: str,
                 settings: dict[str, Any], model_name: str, topic: str = "", progress: bool = True,
                 targets: dict[str, Target] | None = None) -> dict[str, Path]:
    """Video (MP4 + GIF) and report.html for a replay's results, in OUT; returns their paths. `targets`: see
    write_report."""
    from tqdm import tqdm

    from molmo2_ros.offline.report.demo_video import render_replay_video
    from molmo2_ros.offline.evaluation.evaluate import load_results

    results = load_results(results_path)
    if not results:
        raise ValueError(f"{results_path} holds no results: nothing to report")
    with tqdm(desc="video", unit="frame", disable=not progress, leave=True) as bar:
        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        mp4, gif, stamps = render_replay_video(Path(bag), results, truth, Path(out), topic=topic,
                                               model_name=model_name, progress=step)
    page = write_report(Path(out), results, truth, video=mp4, title=title, settings=settings, stamps=stamps,
                        targets=targets)
    return {"video": mp4, "gif": gif, "report": page}
