"""py_trees leaves over a Molmo2Client (molmo2_ros/client.py): wait for an event, find an object, count, ask.

Every tick returns at once (the client's non-blocking calls only read state; the Query action runs as a
PendingAsk), so a tree ticked from a timer never stalls the executor. A leaf ends in FAILURE with the reason in
`feedback_message` (also `reason`), starting with one of these words:
  "timeout"      nothing usable within timeout_s (s) of the leaf starting;
  "stale"        the newest result is older than max_age_s (s) (client.latest raised Stale) until the timeout;
  "not found"    a fresh result without the object, or a count below N (no waiting: conditions are immediate once
                 fresh data is there; wrap them in a py_trees Retry/Timeout decorator to wait for a change);
  "node absent"  the molmo2 node has been missing from the ROS graph for absent_s (s), or its Query action server
                 did not answer;
  "refused"      the node refused the request (Ask: the Query action's message).
Results go to the blackboard under `key` (py_trees.blackboard, absolute names like "/event"): WaitForEvent a
client.Sample (the Event, its Event3D when lifted), FindObject a Found, CountAtLeast the count (int), Ask the
Query action result.

py_trees (2.6) is only needed by this module and the example mission (requirements/core.txt; rosdep key
`py_trees`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import py_trees
from py_trees.common import Access, Status

from molmo2_ros.client import Molmo2Client, Molmo2Error, NoData, NodeAbsent, Refused, Stale, stamp_ns
from molmo2_ros.msg import Event


@dataclass(frozen=True)
class Found:
    """An object found by FindObject: the query (or question) it answers, `stamp_ns` the source stamp of the frame
    the point lies on, `x`, `y` its pixel in the camera image, `label`, and with 3D `position` (x, y, z) in metres
    in `frame_id` (the camera's optical frame) at that stamp, else None."""

    query: str
    stamp_ns: int
    x: float
    y: float
    label: str
    frame_id: str
    position: tuple[float, float, float] | None


class Molmo2Leaf(py_trees.behaviour.Behaviour):
    """Shared parts: the client, a blackboard key to write, the start time, failure with a reason."""

    def __init__(self, name: str, client: Molmo2Client, key: str, timeout_s: float, absent_s: float) -> None:
        super().__init__(name)
        self.client = client
        self.key = key
        self.timeout_s = timeout_s
        self.absent_s = absent_s
        self.reason = ""
        self.started = 0.0
        self.blackboard = self.attach_blackboard_client(name=name)
        self.blackboard.register_key(key=key, access=Access.WRITE)

    def initialise(self) -> None:
        self.started = time.monotonic()
        self.reason = self.feedback_message = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fail(self, reason: str) -> Status:
        self.reason = self.feedback_message = reason
        self.logger.debug(f"{self.name}: {reason}")
        return Status.FAILURE

    def succeed(self, value, message: str) -> Status:
        self.blackboard.set(self.key, value)
        self.feedback_message = message
        return Status.SUCCESS

    def node_absent(self) -> str:
        """The failure reason when the node has been absent for absent_s, else ""."""
        if self.client.absent_for() >= self.absent_s:
            return f"node absent: {self.client.absence()}"
        return ""

    def timed_out(self) -> bool:
        return self.elapsed() >= self.timeout_s

    def fresh_sample(self, query_id: str, max_age_s: float):
        """(sample, None) of a standing query's newest result not older than max_age_s, (None, RUNNING) while there
        is none yet, (None, FAILURE) when the node is absent or timeout_s passed (stale, or no data)."""
        try:
            return self.client.latest(query_id, max_age_s), None
        except (Stale, NoData) as why:
            if absent := self.node_absent():
                return None, self.fail(absent)
            if self.timed_out():
                prefix = "" if isinstance(why, Stale) else f"timeout ({self.timeout_s:g} s): "
                return None, self.fail(prefix + why.reason)
            self.feedback_message = why.reason
            return None, Status.RUNNING

    def pending_result(self, pending):
        """(result, None) of a finished on-demand goal, (None, RUNNING) while it runs, (None, FAILURE) with the
        reason when it failed: refused, timeout, node absent, or failed (cancelled, no result)."""
        if not pending.done():
            self.feedback_message = f"asking: {pending.stage}"
            return None, Status.RUNNING
        try:
            return pending.result(), None
        except Refused as why:
            return None, self.fail(f"refused: {why.message}")
        except TimeoutError as why:
            return None, self.fail(f"timeout: {why}")
        except NodeAbsent as why:
            return None, self.fail(f"node absent: {why}")
        except Molmo2Error as why:
            return None, self.fail(f"failed: {why}")

    def cancel_pending(self, new_status: Status, pending) -> None:
        """Halting the leaf (INVALID) cancels its goal."""
        if new_status == Status.INVALID and pending is not None and not pending.done():
            pending.cancel()


class WaitForEvent(Molmo2Leaf):
    """SUCCESS when an event of `query_id` (an event query) in `states` arrives after the leaf started; the
    client.Sample goes to the blackboard under `key`. When the node lifts events (depth), waits up to wait_3d_s (s)
    more for the Event3D. max_age_s: an event older than that (against client.reference_ns()) is stale: FAILURE.
    FAILURE on timeout (timeout_s, s) and when the node is absent for absent_s (s)."""

    def __init__(self, name: str, client: Molmo2Client, query_id: str, timeout_s: float = 30.0, *,
                 key: str = "/event", states: tuple[int, ...] = (Event.STATE_STARTED,), wait_3d_s: float = 1.0,
                 max_age_s: float | None = None, absent_s: float = 3.0) -> None:
        super().__init__(name, client, key, timeout_s, absent_s)
        self.query_id, self.states, self.wait_3d_s, self.max_age_s = query_id, states, wait_3d_s, max_age_s
        self._cursor = 0
        self._seen_at: float | None = None
        client.watch(query_id, "event")

    def initialise(self) -> None:
        super().initialise()
        self._cursor = self.client.event_seq(self.query_id)
        self._seen_at = None

    def update(self) -> Status:
        event = self.client.next_event(self.query_id, self._cursor, self.states)
        if event is None:
            if absent := self.node_absent():
                return self.fail(absent)
            if self.timed_out():
                return self.fail(f"timeout: no '{self.query_id}' event within {self.timeout_s:g} s")
            self.feedback_message = f"waiting for a '{self.query_id}' event"
            return Status.RUNNING
        if self.max_age_s is not None and (age := self.client.age_s(event)) > self.max_age_s:
            return self.fail(f"stale: the '{self.query_id}' event {event.msg.id} is {age:.2f} s old "
                             f"(limit {self.max_age_s:g} s)")
        if event.msg3d is None and self.client.publishes_3d(self.query_id):
            now = time.monotonic()
            self._seen_at = self._seen_at or now
            if now - self._seen_at < self.wait_3d_s:
                self.feedback_message = f"event {event.msg.id}: waiting for its 3D side"
                return Status.RUNNING
        return self.succeed(event, f"event {event.msg.id} at {stamp_ns(event.msg.header.stamp)} ns"
                                   f"{' with 3D' if event.msg3d is not None else ''}")


class FindObject(Molmo2Leaf):
    """Where is it? Either from a standing point/count/track query (`query_id`: the newest result not older than
    max_age_s), or, with `question` and no query_id, an on-demand point question (the Query action about the
    latest clip, or the last lookback_s s). SUCCESS writes a Found (the newest point, with its 3D position when
    lifted: standing queries only, the Query action has no 3D) under `key`. FAILURE: "not found" (a fresh result
    without points), "stale", "timeout" (no fresh result within timeout_s), "node absent", "refused"."""

    def __init__(self, name: str, client: Molmo2Client, query_id: str = "", *, question: str = "",
                 max_age_s: float = 2.0, timeout_s: float = 5.0, key: str = "/object", lookback_s: float = 0.0,
                 absent_s: float = 3.0) -> None:
        super().__init__(name, client, key, timeout_s, absent_s)
        if bool(query_id) == bool(question):
            raise ValueError("FindObject: give either query_id (a standing query) or question (on demand)")
        self.query_id, self.question, self.max_age_s, self.lookback_s = query_id, question, max_age_s, lookback_s
        self._pending = None

    def initialise(self) -> None:
        super().initialise()
        if self.question:
            self._pending = self.client.ask_async(self.question, "point", lookback_s=self.lookback_s,
                                                  timeout_s=self.timeout_s, server_timeout_s=self.absent_s)

    def update(self) -> Status:
        return self._on_demand() if self.question else self._standing()

    def _standing(self) -> Status:
        sample, status = self.fresh_sample(self.query_id, self.max_age_s)
        if status is not None:
            return status
        points = sample.points2d()
        if not points:
            return self.fail(f"not found: no '{sample.msg.query}' in the newest result ({sample.stamp_ns} ns)")
        with3d = sample.points3d()
        if with3d:
            p = with3d[0]
            found = Found(sample.msg.query, stamp_ns(p.point.stamp), p.point.x, p.point.y, p.point.label,
                          sample.msg3d.header.frame_id, (p.position.x, p.position.y, p.position.z))
        else:
            p = max(points, key=lambda q: stamp_ns(q.stamp))
            found = Found(sample.msg.query, stamp_ns(p.stamp), p.x, p.y, p.label, sample.frame_id, None)
        return self.succeed(found, f"found '{found.query}' at ({found.x:.0f}, {found.y:.0f}) px"
                                   f"{' with 3D' if found.position else ''}")

    def _on_demand(self) -> Status:
        result, status = self.pending_result(self._pending)
        if status is not None:
            return status
        points = list(result.points.points)
        if not points:
            return self.fail(f"not found: no '{self.question}' in the clip")
        p = max(points, key=lambda q: stamp_ns(q.stamp))
        found = Found(self.question, stamp_ns(p.stamp), p.x, p.y, p.label, result.points.header.frame_id, None)
        return self.succeed(found, f"found '{self.question}' at ({p.x:.0f}, {p.y:.0f}) px")

    def terminate(self, new_status: Status) -> None:
        self.cancel_pending(new_status, self._pending)


class CountAtLeast(Molmo2Leaf):
    """SUCCESS when the newest count of a count query (not older than max_age_s) is >= n; the count goes under
    `key`. FAILURE: "not found" (count below n), "stale", "timeout", "node absent"."""

    def __init__(self, name: str, client: Molmo2Client, query_id: str, n: int, *, max_age_s: float = 2.0,
                 timeout_s: float = 5.0, key: str = "/count", absent_s: float = 3.0) -> None:
        super().__init__(name, client, key, timeout_s, absent_s)
        self.query_id, self.n, self.max_age_s = query_id, n, max_age_s
        client.watch(query_id, "count")

    def update(self) -> Status:
        sample, status = self.fresh_sample(self.query_id, self.max_age_s)
        if status is not None:
            return status
        count = int(sample.msg.count)
        if count < self.n:
            return self.fail(f"not found: count of '{sample.msg.query}' is {count} < {self.n}")
        return self.succeed(count, f"count {count} >= {self.n}")


class Ask(Molmo2Leaf):
    """An on-demand question (the Query action; task "question" by default, or caption/point/count/track/event)
    about the latest clip or the last lookback_s s. SUCCESS writes the action result under `key` (its
    answer.text is the reply). FAILURE: "timeout" (timeout_s; the goal is cancelled), "refused", "node absent".
    Halting the leaf (INVALID) cancels the goal."""

    def __init__(self, name: str, client: Molmo2Client, question: str, *, task: str = "question",
                 lookback_s: float = 0.0, timeout_s: float = 60.0, key: str = "/answer", absent_s: float = 3.0,
                 max_new_tokens: int = 0) -> None:
        super().__init__(name, client, key, timeout_s, absent_s)
        self.question, self.task, self.lookback_s, self.max_new_tokens = question, task, lookback_s, max_new_tokens
        self._pending = None

    def initialise(self) -> None:
        super().initialise()
        self._pending = self.client.ask_async(self.question, self.task, lookback_s=self.lookback_s,
                                              max_new_tokens=self.max_new_tokens, timeout_s=self.timeout_s,
                                              server_timeout_s=self.absent_s)

    def update(self) -> Status:
        result, status = self.pending_result(self._pending)
        if status is not None:
            return status
        return self.succeed(result, f"answer: {result.answer.text[:80]}")

    def terminate(self, new_status: Status) -> None:
        self.cancel_pending(new_status, self._pending)
