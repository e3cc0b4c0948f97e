"""Persistent track ids for one track query across overlapping windows.

The model renumbers its objects from 1 in every answer, so ids are not stable across calls. Overlapping
windows share frames (identical stamps); an answer object continues the track whose points lie within a gate
of its own on the most shared stamps. Track ids are `{query_id}/t{n}` and are never reused, not even after reset().
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .types import NS_PER_S, Clip, GroundedPoint, Track, TrackStatus


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


class TrackAssociator:
    """Turns per-answer object ids of one track query into persistent tracks.

    Association: score(track, object) = number of shared stamps where both points lie within the gate
    (gate_px, or gate_frac * image diagonal); pairs are assigned one-to-one greedily by score (ties: smaller
    summed distance, then lower track number, then lower object id). An object left without a match continues
    an unmatched track with which it shares no stamp if the track's point nearest in time to the object's
    first point is within the gate and within lost_timeout_s of it; otherwise it starts a new track.
    Status: NEW in the clip that created it, TRACKED when matched, LOST while unseen for at most lost_timeout_s
    before clip.end_ns, then ENDED (reported once, then forgotten).
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

    def reset(self) -> None:
        """Forget all tracks (without reporting them); ids keep counting so none is reused."""
        self._tracks.clear()

    def _track_id(self, number: int) -> str:
        return f"{self.query_id}/t{number}"

    def _associate(self, objects: dict[int, dict[int, GroundedPoint]], gate: float) -> dict[int, int]:
        """object id -> track number."""
        scored: list[tuple[int, float, int, int]] = []
        fallback: list[tuple[float, int, int, int]] = []
        for number, track in self._tracks.items():
            for oid, obj in objects.items():
                shared = obj.keys() & track.points.keys()
                if shared:
                    inside = [d for s in shared if (d := _dist(obj[s], track.points[s])) <= gate]
                    if inside:
                        scored.append((-len(inside), sum(inside), number, oid))
                    continue
                first = min(obj)
                ref = min(track.points, key=lambda s: (abs(s - first), s))
                dt, d = abs(first - ref), _dist(obj[first], track.points[ref])
                if dt <= self.lost_timeout_ns and d <= gate:
                    fallback.append((d, dt, number, oid))
        assignment: dict[int, int] = {}
        used: set[int] = set()
        for pairs in (scored, fallback):
            for *_, number, oid in sorted(pairs):
                if oid not in assignment and number not in used:
                    assignment[oid] = number
                    used.add(number)
        return assignment

    def _merge(self, track: _TrackState, obj: dict[int, GroundedPoint]) -> None:
        track_id = self._track_id(track.number)
        track.points.update((s, replace(p, object_id=track_id)) for s, p in obj.items())
        for s in sorted(track.points)[:-self.max_trajectory_points]:
            del track.points[s]
        track.first_ns = min(track.first_ns, min(obj))
        track.last_ns = max(track.last_ns, max(obj))
        track.label = next((p.label for p in obj.values() if p.label), track.label)

    def _snapshot(self, track: _TrackState) -> Track:
        return Track(id=self._track_id(track.number), label=track.label, status=track.status,
                     first_ns=track.first_ns, last_ns=track.last_ns,
                     trajectory=[track.points[s] for s in sorted(track.points)])

    def update(self, clip: Clip, answer_tracks: dict[int, list[GroundedPoint]]) -> list[Track]:
        """Associate one answer's objects (per-answer id -> grounded points) with the persistent tracks.

        Returns snapshots of the new, tracked and lost tracks plus those ending now, ordered by id number.
        """
        gate = self.gate_px if self.gate_px is not None else self.gate_frac * math.hypot(clip.width, clip.height)
        objects = {oid: {p.stamp_ns: p for p in pts} for oid, pts in sorted(answer_tracks.items()) if pts}
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
