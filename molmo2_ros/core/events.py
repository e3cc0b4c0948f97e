"""Stable events for one event query across overlapping windows.

The event query is answered by pointing: every grounded point's stamp is a moment where the event is visible.
Stamps at most max_gap_s apart form one span; a span that overlaps an open event or lies within max_gap_s of
it extends that event (same id) instead of creating a duplicate. Ids are `{query_id}/e{n}` (tracks.event_id),
never reused.
The description is the label the model gave the moments it pointed at (the `<points>` label), else the query text.
"""

from __future__ import annotations

from dataclasses import replace

from .tracks import event_id
from .types import NS_PER_S, Clip, Event, EventState, GroundedPoint, Query

MAX_EVIDENCE = 64


def _spans(points: list[GroundedPoint], max_gap_ns: int) -> list[list[GroundedPoint]]:
    """Points (one per stamp, the first given, as parser and tracks keep) grouped into runs of stamps at most
    max_gap_ns apart."""
    by_stamp: dict[int, GroundedPoint] = {}
    for p in points:
        by_stamp.setdefault(p.stamp_ns, p)
    spans: list[list[GroundedPoint]] = []
    for s in sorted(by_stamp):
        if spans and s - spans[-1][-1].stamp_ns <= max_gap_ns:
            spans[-1].append(by_stamp[s])
        else:
            spans.append([by_stamp[s]])
    return spans


class EventMerger:
    """Merges the per-window answers of one event query into events: STARTED -> ONGOING -> ENDED.

    A span extends the open event with the lowest number that it overlaps or comes within max_gap_s of.
    An open event that got no evidence in a clip and whose end_ns + max_gap_s < clip.end_ns ends: it is
    reported once as ENDED and closed. finish() ends every open event when the stream ends.
    """

    def __init__(self, query: Query, *, max_gap_s: float = 1.0) -> None:
        self.query = query
        self.max_gap_ns = int(max_gap_s * NS_PER_S)
        self._open: dict[int, Event] = {}
        self._next_number = 1

    def reset(self) -> None:
        """Forget open events (after a backward time jump their stamps mean nothing); ids keep counting."""
        self._open.clear()

    @property
    def total_events(self) -> int:
        """Number of distinct events created so far."""
        return self._next_number - 1

    def _matching(self, start_ns: int, end_ns: int) -> int | None:
        gap = self.max_gap_ns
        return next((n for n, e in sorted(self._open.items())
                     if start_ns <= e.end_ns + gap and end_ns >= e.start_ns - gap), None)

    def update(self, clip: Clip, points: list[GroundedPoint]) -> list[Event]:
        """Fold one window's grounded points in; returns copies of the events started, updated or ended now."""
        started: set[int] = set()
        changed: dict[int, Event] = {}
        for span in _spans(points, self.max_gap_ns):
            start, end = span[0].stamp_ns, span[-1].stamp_ns
            number = self._matching(start, end)
            if number is None:
                number = self._next_number
                self._next_number += 1
                started.add(number)
                self._open[number] = Event(
                    id=event_id(self.query.id, number), query_id=self.query.id, query=self.query.text,
                    description=self.query.text, start_ns=start, end_ns=end, state=EventState.STARTED)
            event = self._open[number]
            event.start_ns, event.end_ns = min(event.start_ns, start), max(event.end_ns, end)
            event.state = EventState.STARTED if number in started else EventState.ONGOING
            event.description = next((p.label for p in reversed(span) if p.label), event.description)
            evidence = {p.stamp_ns: p for p in event.evidence}
            evidence.update((p.stamp_ns, p) for p in span)
            event.evidence = [evidence[s] for s in sorted(evidence)][-MAX_EVIDENCE:]
            changed[number] = event
        for number, event in list(self._open.items()):
            if number not in changed and event.end_ns + self.max_gap_ns < clip.end_ns:
                event.state = EventState.ENDED
                changed[number] = self._open.pop(number)
        return [replace(e, evidence=list(e.evidence)) for _, e in sorted(changed.items())]

    def finish(self) -> list[Event]:
        """End every open event (the stream is over: the last report of each event is final); returns them."""
        ended = [replace(e, state=EventState.ENDED, evidence=list(e.evidence)) for _, e in sorted(self._open.items())]
        self._open.clear()
        return ended
