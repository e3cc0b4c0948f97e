"""Thread-safe event counters: written by camera, worker and service threads, read by the diagnostics timer."""

from __future__ import annotations

import threading
from collections import Counter


class Counters:
    """A Counter behind a lock; readers get a copy (`snapshot`), never the live dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def add(self, key: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[key] += n

    def update(self, counts: dict[str, int]) -> None:
        with self._lock:
            self._counts.update({k: v for k, v in counts.items() if v})

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
