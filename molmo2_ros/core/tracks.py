"""Persistent track ids for one track query across overlapping windows.

The model renumbers its objects from 1 in every answer, so ids are not stable across calls. Overlapping
windows share frames (identical stamps); an answer object continues the track whose points lie within a gate
of its own on the most shared stamps. Track ids are `{query_id}/t{n}` and are never reused, not even after reset().

The ids of tracks and events (`{query_id}/e{n}`, core/events.py) are built by `track_id` / `event_id` and read back
by `split_id`, nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from .types import NS_PER_S, Clip, GroundedPoint, Track, TrackStatus


def track_id(query_id: str, number: int) -> str:
    """The persistent id of a track query's `number`-th track: `<query id>/t<number>`."""
    return f"{query_id}/t{number}"


def event_id(query_id: str, number: int) -> str:
    """The stable id of an event query's `number`-th event: `<query id>/e<number>`."""
    return f"{query_id}/e{number}"


def split_id(id_: str) -> tuple[str, int]:
    """(query id, number) of a track or event id (the inverse of track_id and event_id); ValueError otherwise."""
    query_id, _, tail = id_.rpartition("/")
    if not query_id or tail[:1] not in ("t", "e") or not tail[1:].isdigit():
        raise ValueError(f"'{id_}' is not a track or event id (<query id>/t<n> or <query id>/e<n>)")
    return query_id, int(tail[1:])


@dataclass
class _TrackState:
    number: int
    label: str
    status: TrackStatus
    first_ns: int
    last_ns: int
    points: dict[int, GroundedPoint]  # by stamp_ns


def _dist(a: GroundedPoint, b: GroundedPoint) -> float:
    return math.hypot(a.x - b.x, a.y - b.y)


def min_cost_matching(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of a one-to-one matching with the most pairs of finite cost (costs >= 0, inf = not
    allowed) and, among those, the least total cost. scipy's Hungarian solver on a copy where inf is a cost
    larger than any sum of allowed costs, so it trades no allowed pair for a cheaper total."""
    if cost.size == 0:
        return []
    allowed = np.isfinite(cost)
    if not allowed.any():
        return []
    big = float(np.abs(cost[allowed]).sum()) * 2 + 1.0
    rows, cols = linear_sum_assignment(np.where(allowed, cost, big))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]


class TrackAssociator:
    """Turns per-answer object ids of one track query into persistent tracks.

    Association (gate = gate_px, or gate_frac * image diagonal), two optimal one-to-one matchings
    (`min_cost_matching`: most pairs, then least total cost; greedy best-pair-first swaps ids where two objects
    cross):
    1. a track and an object that share stamps may match when their points lie within the gate on at least one
       of them; cost = mean over the shared stamps of the distance capped at the gate (a stamp where they
       disagree costs a full gate);
    2. an object left unmatched continues an unmatched track with which it shares no stamp when the track's
       point nearest in time to the object's first point is within the gate and within lost_timeout_s of it;
       cost = that distance.
    Any other object starts a new track. An object with two points on one stamp keeps the first.
    Status: NEW in the clip that created it, TRACKED when matched, LOST while unseen for at most lost_timeout_s
    before clip.end_ns, then ENDED (reported once, then forgotten); finish() ends all open tracks.
    """

    def __init__(self, query_id: str, *, gate_px: float | None = None, gate_frac: float = 0.05,
                 lost_timeout_s: float = 2.0, max_trajectory_points: int = 256) -> None:
        if max_trajectory_points < 1:
            raise ValueError("max_trajectory_points must be >= 1")
        self.query_id = query_id
        self.gate_px = gate_px
        self.gate_frac = gate_frac
        self.lost_timeout_ns = int(lost_timeout_s * NS_PER_S)
        self.max_trajectory_points = max_trajectory_points
        self._tracks: dict[int, _TrackState] = {}
        self._next_number = 1

    def finish(self) -> list[Track]:
        """End every open track (the stream is over: the last report of each track is final); returns them."""
        for track in self._tracks.values():
            track.status = TrackStatus.ENDED
        ended = [self._snapshot(t) for _, t in sorted(self._tracks.items())]
        self._tracks.clear()
        return ended

    def reset(self) -> None:
        """Forget all tracks (without reporting them); ids keep counting so none is reused."""
        self._tracks.clear()

    def _associate(self, objects: dict[int, dict[int, GroundedPoint]], gate: float) -> dict[int, int]:
        """object id -> track number: two optimal one-to-one matchings (shared stamps first, then continuations)."""
        numbers = sorted(self._tracks)
        oids = sorted(objects)
        shared_cost = np.full((len(numbers), len(oids)), np.inf)
        continue_cost = np.full((len(numbers), len(oids)), np.inf)
        for r, number in enumerate(numbers):
            track = self._tracks[number]
            for c, oid in enumerate(oids):
                obj = objects[oid]
                shared = obj.keys() & track.points.keys()
                if shared:
                    dists = [_dist(obj[s], track.points[s]) for s in shared]
                    if min(dists) <= gate:  # a pair with shared stamps is never a continuation candidate
                        shared_cost[r, c] = sum(min(d, gate) for d in dists) / len(dists)
                    continue
                first = min(obj)
                ref = min(track.points, key=lambda s: (abs(s - first), s))
                d = _dist(obj[first], track.points[ref])
                if abs(first - ref) <= self.lost_timeout_ns and d <= gate:
                    continue_cost[r, c] = d
        assignment: dict[int, int] = {}
        for cost in (shared_cost, continue_cost):
            free_r = [r for r, n in enumerate(numbers) if n not in assignment.values()]
            free_c = [c for c, o in enumerate(oids) if o not in assignment]
            for r, c in min_cost_matching(cost[np.ix_(free_r, free_c)]):
                assignment[oids[free_c[c]]] = numbers[free_r[r]]
        return assignment

    def _merge(self, track: _TrackState, obj: dict[int, GroundedPoint]) -> None:
        tid = track_id(self.query_id, track.number)
        track.points.update((s, replace(p, object_id=tid)) for s, p in obj.items())
        for s in sorted(track.points)[:-self.max_trajectory_points]:
            del track.points[s]
        track.first_ns = min(track.first_ns, min(obj))
        track.last_ns = max(track.last_ns, max(obj))
        track.label = next((p.label for p in obj.values() if p.label), track.label)

    def _snapshot(self, track: _TrackState) -> Track:
        return Track(id=track_id(self.query_id, track.number), label=track.label, status=track.status,
                     first_ns=track.first_ns, last_ns=track.last_ns,
                     trajectory=[track.points[s] for s in sorted(track.points)])

    def update(self, clip: Clip, answer_tracks: dict[int, list[GroundedPoint]]) -> list[Track]:
        """Associate one answer's objects (per-answer id -> grounded points) with the persistent tracks.

        Returns snapshots of the new, tracked and lost tracks plus those ending now, ordered by id number.
        """
        gate = self.gate_px if self.gate_px is not None else self.gate_frac * math.hypot(clip.width, clip.height)
        objects: dict[int, dict[int, GroundedPoint]] = {}
        for oid, pts in sorted(answer_tracks.items()):
            for p in pts:  # the first point of an object on a stamp wins, as in the parser
                objects.setdefault(oid, {}).setdefault(p.stamp_ns, p)
        assignment = self._associate(objects, gate)
        for oid, number in assignment.items():
            track = self._tracks[number]
            track.status = TrackStatus.TRACKED
            self._merge(track, objects[oid])
        matched = set(assignment.values())
        for number, track in self._tracks.items():
            if number not in matched:
                lost = clip.end_ns - track.last_ns <= self.lost_timeout_ns
                track.status = TrackStatus.LOST if lost else TrackStatus.ENDED
        for oid in sorted((o for o in objects if o not in assignment), key=lambda o: (min(objects[o]), o)):
            obj = objects[oid]
            track = _TrackState(number=self._next_number, label="", status=TrackStatus.NEW,
                                first_ns=min(obj), last_ns=max(obj), points={})
            self._next_number += 1
            self._merge(track, obj)
            self._tracks[track.number] = track
        result = [self._snapshot(t) for _, t in sorted(self._tracks.items())]
        self._tracks = {n: t for n, t in self._tracks.items() if t.status != TrackStatus.ENDED}
        return result
