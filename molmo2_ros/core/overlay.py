"""Draws grounded results onto an RGB image (debug image of the node, frames of the replay GIF).

Deterministic: colours come from a CRC of the track id or query id, never from a random generator.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from .types import QueryResult

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_rgb(key: str) -> tuple[int, int, int]:
    """A bright, stable RGB colour for a string."""
    h = zlib.crc32(key.encode("utf-8"))
    hsv = np.uint8([[[h % 180, 200 + (h >> 8) % 56, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _scale(image: np.ndarray) -> tuple[float, int]:
    """Font scale and line thickness for the image size."""
    s = max(0.35, min(image.shape[0], image.shape[1]) / 800.0)
    return s, max(1, int(round(s * 2)))


def _label(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], box: bool = False) -> None:
    """Text with a dark background box (box=True) or a dark outline, clipped to the image."""
    scale, thick = _scale(img)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    x = int(min(max(org[0], 0), max(img.shape[1] - tw, 0)))
    y = int(min(max(org[1], th + 2), img.shape[0] - base - 1))
    if box:
        cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base + 1), (20, 20, 20), cv2.FILLED)
    else:
        cv2.putText(img, text, (x, y), _FONT, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), _FONT, scale, color, thick, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, results: list[QueryResult], max_trail: int = 32,
                 max_labels: int = 20) -> np.ndarray:
    """A new RGB uint8 image of the same size with the results' points, track trails and event labels.

    Points: circle + label on the newest frame that has points, small dots for older frames. Tracks: polyline of the last max_trail trajectory points, a circle on the newest,
    the track id. Events: a text box "EVENT <description> <state>" stacked at the top left.
    At most max_labels texts are drawn in all (shapes are still drawn beyond that).
    """
    img = np.ascontiguousarray(image, dtype=np.uint8).copy()
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    h, w = img.shape[:2]
    scale, thick = _scale(img)
    radius = max(3, int(round(min(h, w) / 80)))
    labels = 0
    event_row = 0

    def can_label() -> bool:
        nonlocal labels
        labels += 1
        return labels <= max_labels

    for result in results:
        qcolor = color_rgb(result.query.id)
        newest = max((p.stamp_ns for p in result.points), default=None)
        for p in result.points:
            c = (int(round(p.x)), int(round(p.y)))
            if p.stamp_ns != newest:  # points on older frames of the clip: a small dot, no label
                cv2.circle(img, c, max(1, radius // 3), qcolor, cv2.FILLED, cv2.LINE_AA)
                continue
            cv2.circle(img, c, radius, qcolor, thick, cv2.LINE_AA)
            if p.label and can_label():
                _label(img, p.label, (c[0] + radius + 2, c[1] - radius), qcolor)
        for track in result.tracks:
            tcolor = color_rgb(track.id)
            trail = track.trajectory[-max_trail:] if max_trail > 0 else []
            if not trail:
                continue
            pts = np.array([[int(round(p.x)), int(round(p.y))] for p in trail], dtype=np.int32)
            if len(pts) > 1:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, tcolor, thick, cv2.LINE_AA)
            head = (int(pts[-1, 0]), int(pts[-1, 1]))
            cv2.circle(img, head, radius + 1, tcolor, cv2.FILLED, cv2.LINE_AA)
            if can_label():
                _label(img, track.id, (head[0] + radius + 2, head[1] - radius), tcolor)
        for event in result.events:
            if not can_label():
                continue
            (_, th), base = cv2.getTextSize("Ag", _FONT, scale, thick)
            y = 4 + (event_row + 1) * (th + base + 6)
            event_row += 1
            _label(img, f"EVENT {event.description} {event.state.name}", (4, y), color_rgb(event.id), box=True)
    return img
