"""Draws grounded results onto an RGB image (debug image of the node, frames of the replay GIF).

Colours: `colours.id_colour` of the query id (points, events) or the track id (tracks), as in every other view.
"""

from __future__ import annotations

import cv2
import numpy as np

from .colours import id_colour
from .types import QueryResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _scale(image: np.ndarray) -> tuple[float, int]:
    """Font scale and line thickness for the image size."""
    s = max(0.35, min(image.shape[0], image.shape[1]) / 800.0)
    return s, max(1, int(round(s * 2)))


class LabelPlacer:
    """Places short labels without overlaps: candidate spots around an anchor (right-above, right-below,
    left-above, left-below, above, below), the first one inside the bounds and clear of earlier labels wins;
    a label with no free spot is not drawn. Each label gets a dark box, so it reads on any background."""

    def __init__(self, bounds: tuple[int, int, int, int], scale: float, thickness: int = 1) -> None:
        self.bounds = bounds  # x0, y0, x1, y1 (exclusive)
        self.scale, self.thickness = scale, thickness
        self.boxes: list[tuple[int, int, int, int]] = []

    def reserve(self, box: tuple[int, int, int, int]) -> None:
        """Keep labels off this area (x0, y0, x1, y1)."""
        self.boxes.append(box)

    def place(self, img: np.ndarray, text: str, anchor: tuple[int, int], color: tuple[int, int, int],
              gap: int = 7) -> bool:
        (tw, th), base = cv2.getTextSize(text, _FONT, self.scale, self.thickness)
        ax, ay = anchor
        bx0, by0, bx1, by1 = self.bounds
        for dx, dy in ((gap, -gap), (gap, gap + th), (-gap - tw, -gap), (-gap - tw, gap + th),
                       (-tw // 2, -gap - 4), (-tw // 2, gap + th + 4)):
            x, y = ax + dx, ay + dy
            box = (x - 2, y - th - 2, x + tw + 2, y + base)
            if box[0] < bx0 or box[1] < by0 or box[2] >= bx1 or box[3] >= by1:
                continue
            if any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in self.boxes):
                continue
            self.boxes.append(box)
            cv2.rectangle(img, box[:2], box[2:], (0, 0, 0), cv2.FILLED)
            cv2.putText(img, text, (x, y), _FONT, self.scale, color, self.thickness, cv2.LINE_AA)
            return True
        return False


def _label(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int]) -> None:
    """Text in a dark box at `org` (baseline left), kept inside the image."""
    scale, thick = _scale(img)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    x = int(min(max(org[0], 0), max(img.shape[1] - tw, 0)))
    y = int(min(max(org[1], th + 2), img.shape[0] - base - 1))
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base + 1), (20, 20, 20), cv2.FILLED)
    cv2.putText(img, text, (x, y), _FONT, scale, color, thick, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, results: list[QueryResult], max_trail: int = 32,
                 max_labels: int = 20) -> np.ndarray:
    """A new RGB uint8 image of the same size with the results' points, track trails and event labels.

    Points: circle + label on the newest frame that has points, small dots for older frames. Tracks: polyline of
    the last max_trail trajectory points, a circle on the newest, the track id. Events: a text box
    "EVENT <description> <state>" stacked at the top left. Point and track labels go where they overlap no other
    label (LabelPlacer) or are left out; at most max_labels texts are drawn in all (shapes are still drawn).
    """
    img = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    h, w = img.shape[:2]
    scale, thick = _scale(img)
    radius = max(3, int(round(min(h, w) / 80)))
    labels = 0
    event_row = 0
    placer = LabelPlacer((0, 0, w, h), scale, thick)
    events = sum(len(r.events) for r in results)
    if events:  # event boxes are stacked at the top left: keep point and track labels off them
        (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
        placer.reserve((0, 0, w // 2, 4 + (min(events, max_labels) + 1) * (th + base + 6)))

    def can_label() -> bool:
        nonlocal labels
        labels += 1
        return labels <= max_labels

    for result in results:
        qcolor = id_colour(result.query.id)
        newest = max((p.stamp_ns for p in result.points), default=None)
        labelled = False  # one label per query: its points share it
        for p in result.points:
            c = (int(round(p.x)), int(round(p.y)))
            if p.stamp_ns != newest:  # points on older frames of the clip: a small dot, no label
                cv2.circle(img, c, max(1, radius // 3), qcolor, cv2.FILLED, cv2.LINE_AA)
                continue
            cv2.circle(img, c, radius, qcolor, thick, cv2.LINE_AA)
            if p.label and not labelled and labels < max_labels and placer.place(img, p.label, c, qcolor,
                                                                                 radius + 2):
                labels += 1
                labelled = True
        for track in result.tracks:
            tcolor = id_colour(track.id)
            trail = track.trajectory[-max_trail:] if max_trail > 0 else []
            if not trail:
                continue
            pts = np.array([[int(round(p.x)), int(round(p.y))] for p in trail], dtype=np.int32)
            if len(pts) > 1:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, tcolor, thick, cv2.LINE_AA)
            head = (int(pts[-1, 0]), int(pts[-1, 1]))
            cv2.circle(img, head, radius + 1, tcolor, cv2.FILLED, cv2.LINE_AA)
            if labels < max_labels and placer.place(img, track.id, head, tcolor, radius + 2):
                labels += 1
        for event in result.events:
            if not can_label():
                continue
            (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
            y = 4 + (event_row + 1) * (th + base + 6)
            event_row += 1
            _label(img, f"EVENT {event.description} {event.state.name}", (4, y), qcolor)
    return img
