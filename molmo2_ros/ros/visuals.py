"""Overlay images and image markers drawn off the inference worker: drawing a 1080p overlay costs milliseconds,
so the runtime's worker only hands each window over and goes on to the next window.

One drawing thread per node. Per camera only the newest window waits: a window not drawn yet when the camera's
next one arrives is replaced and counted (`skipped`), so drawing never queues up behind inference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from molmo2_ros.core.types import Clip, QueryResult


class VisualsPublisher:
    """Draws and publishes a camera's visuals through `draw(camera, clip, results)` on its own thread.
    `submit` is called by the runtime's worker and never blocks on drawing; `start`/`stop` by the lifecycle."""

    def __init__(self, draw: Callable[[str, Clip, list[QueryResult]], None],
                 on_error: Callable[[str], None]) -> None:
        self._draw, self._on_error = draw, on_error
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[Clip, list[QueryResult]]] = {}
        self._running = False
        self._thread: threading.Thread | None = None
        self.skipped = 0

    def start(self) -> None:
        with self._cond:
            self._running = True
            self._latest.clear()
        self._thread = threading.Thread(target=self._run, name="molmo2-visuals", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop after the drawing in progress (at most `timeout_s`); windows not drawn yet are dropped."""
        with self._cond:
            self._running = False
            self._latest.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def submit(self, camera: str, clip: Clip, results: list[QueryResult]) -> None:
        with self._cond:
            if not self._running:
                return
            if camera in self._latest:
                self.skipped += 1
            self._latest[camera] = (clip, results)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._latest:
                    self._cond.wait()
                if not self._running:
                    return
                camera, (clip, results) = next(iter(self._latest.items()))
                del self._latest[camera]
            try:
                self._draw(camera, clip, results)
            except Exception as error:  # noqa: BLE001 - a publisher destroyed meanwhile, a bad frame: keep drawing
                self._on_error(f"drawing the visuals of camera '{camera}' failed: {type(error).__name__}: {error}")
