"""Molmo2Client: the planner's side of a molmo2 node, in one object (rclpy).

    import rclpy
    from molmo2_ros.client import Molmo2Client, Stale, NoData

    node = rclpy.create_node("planner")
    client = Molmo2Client(node, namespace="/molmo2")   # before the node is spun (see Threads)
    client.discover(timeout_s=5.0)                      # needs the node spun by another thread, or:
    client.watch("cup", "point")                        # no service call: a query known in advance
    ...
    try:
        cup = client.latest("cup", max_age_s=1.0)       # Sample: cup.msg (PointArray), cup.msg3d (PointArray3D)
    except Stale as why:                                # the newest result is older than 1 s: why.reason
        ...
    fell = client.wait_for_event("ball_fall", timeout_s=30.0)   # Sample or None (timeout)
    answer = client.ask("is the door open?", task="question", lookback_s=4.0)   # Query action result

What it keeps: for every watched query the newest result of its main output (`~/points/<id>`, `~/counts/<id>`,
`~/tracks/<id>`, `~/events/<id>` or `~/answers/<id>`), paired with its 3D side (`~/points3d/<id>`, ...) by header
stamp (and event id and state), and every event (bounded) with a sequence number, so that a waiter sees each event
once. Topics follow core/messages.py `output_topics` (a query's own `topic` included; `camera` adds the `N/` of a
multi-camera node).

Staleness: the age of a result is the reference stamp minus its header stamp (the newest source frame it used),
in seconds. The reference is the newest header stamp received on any output this client watches (the node's own
notion of "now": its newest frame), and with `clock=True` also the node's clock (`node.get_clock()`, which follows
/clock under use_sim_time): that also catches a node that went silent. `latest()` never returns data older than
`max_age_s`: it raises `Stale` (or `NoData` when nothing came yet); both are `Unavailable` (a LookupError) with a
`reason` string.

Node restarts: a watchdog (a steady-clock timer, every `watch_period_s`) follows the publishers of the node's
lifecycle `transition_event` topic in the ROS graph and its 1 Hz status on /diagnostics. The node is there while
it was heard from (status, outputs, responses, a new publisher) within `silence_s`; it is gone when its publisher
left the graph or it has been silent that long (an exited process can stay in the graph for the DDS lease time):
the client logs "node ... is gone". A publisher with a new GID is a new process:
the client logs "node ... reconnected" and increments `reconnects`. Subscriptions re-match by themselves; the
service and action calls wait for their servers again (`timeout_s`). Queries added at run time with `add_query`
live in the node's parameters and are lost when the process exits: call `add_query` again after a reconnect
(`on_reconnect` callbacks run on the executor thread).

Threads: every callback is in one ReentrantCallbackGroup and touches shared state under one lock, so any executor
works. The blocking calls (`discover`, `list_queries`, `add_query`, `remove_query`, `ask`, `wait_for_event`) wait
for callbacks: the node must be spun by another thread (e.g. an executor in a background thread) while they
block. The non-blocking ones (`latest`, `next_event`, `ask_async` and its `PendingAsk`) only read state: use them
from a timer callback or a behaviour tree's tick (molmo2_ros/behaviours.py). Create the client before the node is
spun: rclpy 9.1's ActionClient registers itself before it is fully built, and a spinning executor can see it half
made.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.qos import QoSProfile, ReliabilityPolicy

from diagnostic_msgs.msg import DiagnosticArray

from molmo2_ros.action import Query as QueryAction
from molmo2_ros.core.messages import output_topics
from molmo2_ros.core.types import NS_PER_S, Query, TaskKind
from molmo2_ros.ros.diagnostics import node_status_name
from molmo2_ros.msg import (Answer, Event, Event3D, GroundedPoint3D, PointArray, PointArray3D, StandingQuery,
                            TrackArray, TrackArray3D)
from molmo2_ros.srv import ManageQueries, Recall

# The node's outputs are RELIABLE keep-last 50 (README "Topics"); a reliable reader matches them.
OUTPUT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
_TYPES = {"PointArray": PointArray, "TrackArray": TrackArray, "Event": Event, "Answer": Answer,
          "PointArray3D": PointArray3D, "TrackArray3D": TrackArray3D, "Event3D": Event3D}
_KIND = {TaskKind.POINT: "points", TaskKind.COUNT: "counts", TaskKind.TRACK: "tracks", TaskKind.EVENT: "events",
         TaskKind.CAPTION: "answers", TaskKind.QUESTION: "answers"}
EVENTS_KEPT = 200  # per query: older events are forgotten (a waiter further behind misses them)
PAIRS_KEPT = 20  # 3D messages kept per query while their 2D message has not come


class Molmo2Error(Exception):
    """Base of the client's errors."""


class Unavailable(Molmo2Error, LookupError):
    """`latest()` has nothing usable; `reason` says why (also str(error))."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoData(Unavailable):
    """No result of that query has been received (yet), or the query is not watched."""


class Stale(Unavailable):
    """The newest result is older than allowed: `age_s` (s) > `max_age_s` (s); `sample` is that result."""

    def __init__(self, reason: str, age_s: float, max_age_s: float, sample: "Sample") -> None:
        super().__init__(reason)
        self.age_s, self.max_age_s, self.sample = age_s, max_age_s, sample


class NodeAbsent(Molmo2Error):
    """The node's service or action server did not appear within the timeout."""


class Refused(Molmo2Error):
    """The node answered success=False; `message` is its reason, `response` the whole response or result."""

    def __init__(self, message: str, response: Any = None) -> None:
        super().__init__(message)
        self.message, self.response = message, response


def stamp_ns(t) -> int:
    """builtin_interfaces/Time -> ns."""
    return int(t.sec) * NS_PER_S + int(t.nanosec)


def to_time(ns: int):
    """ns -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


@dataclass(frozen=True)
class Sample:
    """One result of a query: `msg` the main message (PointArray, TrackArray, Event or Answer), `msg3d` its 3D side
    with the same header stamp (PointArray3D, TrackArray3D, Event3D; None when not lifted or not received yet),
    `stamp_ns` the header stamp (newest source frame; an Event's latest evidence), `received` (time.monotonic() s),
    `seq` the client's running number of this query's results."""

    query_id: str
    kind: str
    msg: Any
    msg3d: Any
    stamp_ns: int
    received: float
    seq: int

    @property
    def frame_id(self) -> str:
        return self.msg.header.frame_id

    def points3d(self) -> list:
        """The valid 3D points (GroundedPoint3D, newest stamp first): the points of a point/count result, the
        evidence of an event, the newest trajectory point of each track; [] without 3D."""
        if self.msg3d is None:
            return []
        if self.kind == "tracks":
            pts = [t.trajectory[-1] for t in self.msg3d.tracks if t.trajectory]
        elif self.kind == "events":
            pts = list(self.msg3d.evidence)
        else:
            pts = list(self.msg3d.points)
        valid = [p for p in pts if p.valid and p.status == GroundedPoint3D.STATUS_OK]
        return sorted(valid, key=lambda p: stamp_ns(p.point.stamp), reverse=True)

    def points2d(self) -> list:
        """The 2D points (GroundedPoint): points, event evidence, newest trajectory point of each track."""
        if self.kind == "tracks":
            return [t.trajectory[-1] for t in self.msg.tracks if t.trajectory]
        if self.kind == "events":
            return list(self.msg.evidence)
        if self.kind == "answers":
            return []
        return list(self.msg.points)


@dataclass
class _Watched:
    query_id: str
    task: TaskKind
    kind: str
    main: str
    lifted: str | None
    subscriptions: list = field(default_factory=list)
    latest: Sample | None = None
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=EVENTS_KEPT))
    unpaired3d: collections.deque = field(default_factory=lambda: collections.deque(maxlen=PAIRS_KEPT))
    seq: int = 0


def _pair_key(kind: str, msg) -> tuple:
    if kind == "events":
        return stamp_ns(msg.header.stamp), msg.id, msg.state
    return (stamp_ns(msg.header.stamp),)


class PendingAsk:
    """A Query action goal in flight (from `Molmo2Client.ask_async`); never blocks. `done()` says whether it
    finished; `result()` then returns the action result or raises (NodeAbsent, Refused, TimeoutError);
    `stage` is the newest feedback stage ("waiting for the server", "sent", "queued", "encoding", "generating").
    """

    def __init__(self, client: "Molmo2Client", goal, timeout_s: float, server_timeout_s: float) -> None:
        self._client, self._goal = client, goal
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self._deadline = self.started + timeout_s
        self._server_deadline = self.started + server_timeout_s
        self.timeout_s = timeout_s
        self.stage = "waiting for the server"
        self._goal_handle = None
        self._result = None
        self._error: Exception | None = None
        self._sent = False
        self.poll()

    def _fail(self, error: Exception) -> None:
        with self._lock:
            if self._result is None and self._error is None:
                self._error = error

    def _on_feedback(self, msg) -> None:
        self.stage = msg.feedback.stage

    def _on_goal_response(self, future) -> None:
        handle = future.result()
        self._client._heard_from()
        if handle is None or not handle.accepted:
            self._fail(Refused(f"the node rejected the Query goal ({self._goal.task} '{self._goal.prompt}')"))
            return
        with self._lock:
            self._goal_handle = handle
        self.stage = "accepted"
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, future) -> None:
        wrapped = future.result()
        result = wrapped.result if wrapped is not None else None
        if result is None:
            self._fail(Molmo2Error("the Query goal ended without a result"))
        elif not result.success:
            self._fail(Refused(result.message, result))
        else:
            with self._lock:
                if self._error is None:
                    self._result = result
        self.stage = "done"

    def poll(self) -> None:
        """Advance: send the goal once the server is there, fail on the deadlines. Called by done()."""
        now = time.monotonic()
        if self._result is not None or self._error is not None:
            return
        if not self._sent:
            if self._client._action.server_is_ready():
                self._sent = True
                self.stage = "sent"
                future = self._client._action.send_goal_async(self._goal, feedback_callback=self._on_feedback)
                future.add_done_callback(self._on_goal_response)
            elif now > self._server_deadline:
                self._fail(NodeAbsent(f"no Query action server {self._client.namespace}/query "
                                      f"({self._client.absence()})"))
                return
        if now > self._deadline:
            self._fail(TimeoutError(f"no Query result within {self.timeout_s:g} s (stage: {self.stage})"))
            self.cancel()

    def done(self) -> bool:
        self.poll()
        return self._result is not None or self._error is not None

    def result(self):
        """The Query action result (success True); raises the failure. Call after done() is True."""
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise Molmo2Error("the Query goal has not finished: check done() first")
        return self._result

    def cancel(self) -> None:
        """Cancel the goal on the node (when it was accepted); the result then fails."""
        with self._lock:
            handle = self._goal_handle
        if handle is not None:
            handle.cancel_goal_async()
        self._fail(Molmo2Error("cancelled"))


class Molmo2Client:
    """The outputs, standing queries and on-demand questions of one molmo2 node (one camera of it).

    node: the caller's rclpy node (the client adds subscriptions, a service client, an action client and a timer
    to it); namespace: the molmo2 node's fully qualified name (`/molmo2`, or `/robot/molmo2`); camera: a name of
    its `cameras` parameter ("" = the only camera of a single-camera node); clock: also age results against
    `node.get_clock()` (see the module docstring); watch_period_s: how often the graph is checked for a restart;
    silence_s: the node counts as gone after this long without its /diagnostics status (1 Hz) while it still
    shows in the graph; depth: also watch the 3D outputs."""

    def __init__(self, node, namespace: str = "/molmo2", camera: str = "", *, clock: bool = False,
                 watch_period_s: float = 0.5, silence_s: float = 3.0, depth: bool = True) -> None:
        self.node = node
        self.namespace = "/" + namespace.strip("/")
        self.camera = camera
        self.use_clock = clock
        self.depth = depth
        self.reconnects = 0
        self.on_reconnect: list[Callable[[], None]] = []
        self._group = ReentrantCallbackGroup()
        self._lock = threading.Condition()
        self._watched: dict[str, _Watched] = {}
        self._newest_ns = 0
        self._all_gids: frozenset = frozenset()
        self._gids: frozenset = frozenset()
        self._present = False
        self._created = time.monotonic()
        self._heard = 0.0  # time.monotonic() of the node's newest status on /diagnostics
        self.silence_s = silence_s
        self._status_name = node_status_name(self.namespace)
        self._seen = False
        self._log = node.get_logger()
        self._manage = node.create_client(ManageQueries, f"{self.namespace}/manage_queries",
                                          callback_group=self._group)
        self._recall = node.create_client(Recall, f"{self.namespace}/recall", callback_group=self._group)
        self._action = ActionClient(node, QueryAction, f"{self.namespace}/query", callback_group=self._group)
        self._diagnostics = node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                                     QoSProfile(depth=10), callback_group=self._group)
        self._timer = node.create_timer(watch_period_s, self._check_graph, callback_group=self._group,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._check_graph()

    # ---- node presence -----------------------------------------------------------------------------------
    def _present_locked(self, now: float) -> bool:
        return self._heard > 0 and now - self._heard < self.silence_s

    def _heard_from(self) -> None:
        """Something came from the node (its status, an output, a response): it is there."""
        with self._lock:
            self._heard = time.monotonic()

    @property
    def connected(self) -> bool:
        """The node is there: heard from (its /diagnostics status, an output, a service or action response, its
        publisher appearing in the graph) within silence_s, and its transition_event publisher has not left."""
        with self._lock:
            return self._present_locked(time.monotonic())

    def absent_for(self) -> float:
        """Seconds the node has been missing (since this client started when never heard from); 0 when it is
        there."""
        now = time.monotonic()
        with self._lock:
            if self._present_locked(now):
                return 0.0
            since = self._heard + self.silence_s if self._heard > 0 else self._created
            return max(0.0, now - since)

    def absence(self) -> str:
        """Why the node is unreachable, in words (for failure reasons)."""
        if self.connected:
            return f"node {self.namespace} is there"
        seen = "gone" if self._seen else "never seen"
        return f"node {self.namespace} absent ({seen}, {self.absent_for():.1f} s)"

    def _on_diagnostics(self, msg) -> None:
        if any(status.name == self._status_name for status in msg.status):
            self._heard_from()

    def _check_graph(self) -> None:
        try:
            infos = self.node.get_publishers_info_by_topic(f"{self.namespace}/transition_event")
        except Exception:  # noqa: BLE001 - the node is being destroyed
            return
        gids = frozenset(bytes(i.endpoint_gid) for i in infos)
        reconnected = False
        now = time.monotonic()
        with self._lock:
            new = gids - self._all_gids
            self._all_gids |= gids
            if new:
                self._heard = now  # a new process: its first status is due within silence_s
            elif self._gids and not gids:
                self._heard = 0.0  # its publisher left the graph: gone now
            self._gids = gids
            # an exited process can stay in the graph for the DDS lease time: its silence tells
            present = self._present_locked(now)
            before, self._present = self._present, present
            if new and self._seen:
                self.reconnects += 1
                reconnected = True
                self._log.warning(f"molmo2 node {self.namespace} reconnected (a new process; reconnect "
                                  f"{self.reconnects})")
            elif present and not before:
                self._log.info(f"molmo2 node {self.namespace} {'is back' if self._seen else 'found'}")
            elif before and not present:
                self._log.warning(f"molmo2 node {self.namespace} is gone: waiting for it to come back")
            self._seen = self._seen or present or bool(gids)
            self._lock.notify_all()
        if reconnected:
            for callback in list(self.on_reconnect):
                callback()

    # ---- outputs -----------------------------------------------------------------------------------------
    def watch(self, query_id: str, task: str, topic: str = "") -> None:
        """Subscribe to the outputs of a standing query (id, task as in StandingQuery, its own `topic` if it has
        one). Idempotent."""
        with self._lock:
            if query_id in self._watched:
                return
        kind = TaskKind(task)
        names = output_topics(Query(query_id, kind, "", topic), self.camera)
        absolute = [self._absolute(n) if n else None for n in (names.main, names.lifted)]
        w = _Watched(query_id, kind, _KIND[kind], absolute[0], absolute[1] if self.depth else None)
        w.subscriptions.append(self.node.create_subscription(
            _TYPES[names.main_type], w.main, lambda m, w=w: self._on_main(w, m), OUTPUT_QOS,
            callback_group=self._group))
        if w.lifted:
            w.subscriptions.append(self.node.create_subscription(
                _TYPES[names.lifted_type], w.lifted, lambda m, w=w: self._on_3d(w, m), OUTPUT_QOS,
                callback_group=self._group))
        with self._lock:
            self._watched[query_id] = w

    def unwatch(self, query_id: str) -> None:
        with self._lock:
            w = self._watched.pop(query_id, None)
        for sub in w.subscriptions if w else []:
            self.node.destroy_subscription(sub)

    def watched(self) -> dict[str, str]:
        """query id -> task of the watched queries."""
        with self._lock:
            return {q: w.task.value for q, w in self._watched.items()}

    def topics(self, query_id: str) -> tuple[str, str | None]:
        """(main topic, 3D topic or None) of a watched query, absolute."""
        with self._lock:
            w = self._watched[query_id]
            return w.main, w.lifted

    def publishes_3d(self, query_id: str) -> bool:
        """The node publishes this query's 3D side (depth enabled for the camera)."""
        with self._lock:
            w = self._watched.get(query_id)
        return bool(w and w.lifted and self.node.count_publishers(w.lifted) > 0)

    def _absolute(self, name: str) -> str:
        return f"{self.namespace}/{name[2:]}" if name.startswith("~/") else name

    def _on_main(self, w: _Watched, msg) -> None:
        key = _pair_key(w.kind, msg)
        with self._lock:
            msg3d = next((m for m in w.unpaired3d if _pair_key(w.kind, m) == key), None)
            w.seq += 1
            sample = Sample(w.query_id, w.kind, msg, msg3d, key[0], time.monotonic(), w.seq)
            w.latest = sample
            if w.kind == "events":
                w.events.append(sample)
            self._newest_ns = max(self._newest_ns, key[0])
            self._heard = time.monotonic()
            self._lock.notify_all()

    def _on_3d(self, w: _Watched, msg) -> None:
        key = _pair_key(w.kind, msg)
        with self._lock:
            self._newest_ns = max(self._newest_ns, key[0])
            paired = False
            if w.latest is not None and w.latest.msg3d is None and _pair_key(w.kind, w.latest.msg) == key:
                w.latest = replace(w.latest, msg3d=msg)
                paired = True
            for i, e in enumerate(w.events):
                if e.msg3d is None and _pair_key(w.kind, e.msg) == key:
                    w.events[i] = replace(e, msg3d=msg)
                    paired = True
            if not paired:
                w.unpaired3d.append(msg)
            self._lock.notify_all()

    def reference_ns(self) -> int:
        """The stamp (ns) ages are measured from: the newest header stamp received, and with clock=True the
        node's clock if later."""
        with self._lock:
            ref = self._newest_ns
        if self.use_clock:
            ref = max(ref, self.node.get_clock().now().nanoseconds)
        return ref

    def age_s(self, sample: Sample) -> float:
        """Age of a result (s) against reference_ns()."""
        return (self.reference_ns() - sample.stamp_ns) / NS_PER_S

    def latest(self, query_id: str, max_age_s: float | None = None) -> Sample:
        """The newest result of a watched query. Raises NoData when none came (or the query is not watched), Stale
        when its age (reference_ns() - its stamp) exceeds max_age_s (s; None = any age). Never blocks."""
        with self._lock:
            w = self._watched.get(query_id)
            sample = w.latest if w else None
        if w is None:
            raise NoData(f"query '{query_id}' is not watched (watch() or discover() it)")
        if sample is None:
            raise NoData(f"no result of query '{query_id}' yet on {w.main} ({self.absence()})")
        if max_age_s is not None:
            age = self.age_s(sample)
            if age > max_age_s:
                raise Stale(f"stale: the newest result of '{query_id}' is {age:.2f} s old (limit {max_age_s:g} s)",
                            age, max_age_s, sample)
        return sample

    def event_seq(self, query_id: str) -> int:
        """The running number of the newest result of a watched query: pass it to next_event() to see only what
        comes after now."""
        with self._lock:
            w = self._watched.get(query_id)
            return w.seq if w else 0

    def next_event(self, query_id: str, after_seq: int,
                   states: tuple[int, ...] = (Event.STATE_STARTED,)) -> Sample | None:
        """The first event of a watched event query received after `after_seq` whose state is in `states`, or
        None. Never blocks."""
        with self._lock:
            return self._next_event(query_id, after_seq, states)

    def wait_for_event(self, query_id: str, timeout_s: float, states: tuple[int, ...] = (Event.STATE_STARTED,),
                       after_seq: int | None = None, wait_3d_s: float = 1.0) -> Sample | None:
        """Block until an event of `query_id` in `states` arrives (after `after_seq`; None = after this call) and
        return it, with its 3D side when the node lifts events (waiting up to wait_3d_s s more for it). None when
        none came within timeout_s (s). Watches the query as an event query if it is not watched."""
        self.watch(query_id, "event")
        after = self.event_seq(query_id) if after_seq is None else after_seq
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while (event := self._next_event(query_id, after, states)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.1))
        if event.msg3d is None and self.publishes_3d(query_id):
            end = time.monotonic() + wait_3d_s
            with self._lock:
                while (left := end - time.monotonic()) > 0:
                    found = self._next_event(query_id, event.seq - 1, states)
                    if found is not None and found.msg3d is not None:
                        return found
                    self._lock.wait(min(left, 0.05))
        return event

    def _next_event(self, query_id: str, after_seq: int, states: tuple[int, ...]) -> Sample | None:
        """next_event() with the lock held."""
        w = self._watched.get(query_id)
        if w is None:
            return None
        return next((e for e in w.events if e.seq > after_seq and e.msg.state in states), None)

    # ---- ManageQueries -----------------------------------------------------------------------------------
    def _call(self, client, name: str, request, timeout_s: float):
        """Call one of the node's services and wait (never longer than timeout_s); a refusal raises Refused."""
        deadline = time.monotonic() + timeout_s
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise NodeAbsent(f"no service {self.namespace}/{name} within {timeout_s:g} s ({self.absence()})")
        future = client.call_async(request)
        with self._lock:
            while not future.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    client.remove_pending_request(future)
                    raise TimeoutError(f"no {name} response within {timeout_s:g} s")
                self._lock.wait(min(left, 0.05))
        response = future.result()
        self._heard_from()
        if not response.success:
            raise Refused(response.message, response)
        return response

    def _call_manage(self, op: int, query: StandingQuery | None, camera: str | None, timeout_s: float):
        request = ManageQueries.Request(op=op, camera=self.camera if camera is None else camera,
                                        query=query or StandingQuery())
        return self._call(self._manage, "manage_queries", request, timeout_s)

    def recall(self, text: str = "", query_id: str = "", *, camera: str | None = None, start_ns: int = 0,
               end_ns: int = 0, lookback_s: float = 0.0, limit: int = 1, timeout_s: float = 5.0) -> list:
        """Where and when the standing queries saw something (the node's `~/recall`, history on): Sighting
        messages, newest first (`limit` 1 = the last sighting); `camera` None = this client's camera, "" = any.
        Answered from the node's index without running the model. Raises Refused (history off, bad range),
        NodeAbsent, TimeoutError."""
        request = Recall.Request(text=text, query_id=query_id, camera=self.camera if camera is None else camera,
                                 start=to_time(start_ns), end=to_time(end_ns), lookback_s=float(lookback_s),
                                 limit=int(limit))
        return list(self._call(self._recall, "recall", request, timeout_s).sightings)

    def list_queries(self, timeout_s: float = 5.0, camera: str | None = None) -> list:
        """The node's standing queries (StandingQuery messages) of this client's camera (OP_LIST). Raises
        NodeAbsent, TimeoutError."""
        return list(self._call_manage(ManageQueries.Request.OP_LIST, None, camera, timeout_s).queries)

    def discover(self, timeout_s: float = 5.0) -> dict[str, str]:
        """List the standing queries and watch every one (also those added by others since). Returns watched()."""
        for q in self.list_queries(timeout_s):
            self.watch(q.id, q.task, q.topic)
        return self.watched()

    def add_query(self, query_id: str, task: str, text: str = "", topic: str = "", timeout_s: float = 5.0) -> list:
        """Add a standing query (OP_ADD) and watch it. Returns the queries after the change. Raises Refused (e.g.
        duplicate id, bad task), NodeAbsent, TimeoutError."""
        query = StandingQuery(id=query_id, task=task, text=text, topic=topic)
        queries = list(self._call_manage(ManageQueries.Request.OP_ADD, query, None, timeout_s).queries)
        self.watch(query_id, task, topic)
        return queries

    def ensure_query(self, query_id: str, task: str, text: str = "", topic: str = "",
                     timeout_s: float = 5.0) -> bool:
        """Watch the standing query `query_id`, adding it when the node does not have it. True when added."""
        listed = {q.id: q for q in self.list_queries(timeout_s)}
        if query_id in listed:
            q = listed[query_id]
            self.watch(q.id, q.task, q.topic)
            return False
        self.add_query(query_id, task, text, topic, timeout_s)
        return True

    def remove_query(self, query_id: str, timeout_s: float = 5.0) -> list:
        """Remove a standing query (OP_REMOVE) and stop watching it. Returns the queries after the change."""
        queries = list(self._call_manage(ManageQueries.Request.OP_REMOVE, StandingQuery(id=query_id), None,
                                         timeout_s).queries)
        self.unwatch(query_id)
        return queries

    # ---- Query action ------------------------------------------------------------------------------------
    def ask_async(self, prompt: str, task: str = "question", *, camera: str | None = None,
                  start_ns: int = 0, end_ns: int = 0, lookback_s: float = 0.0, scan: str = "",
                  max_new_tokens: int = 0, timeout_s: float = 60.0, server_timeout_s: float = 5.0) -> PendingAsk:
        """Send an on-demand Query goal without blocking (see action/Query.action): about the latest clip (no
        range), the source-time range [start_ns, end_ns], or the last lookback_s s. Poll the returned PendingAsk
        with done(). Fails with NodeAbsent when no server is there within server_timeout_s, TimeoutError
        (cancelling the goal) after timeout_s."""
        goal = QueryAction.Goal(camera=self.camera if camera is None else camera, prompt=prompt, task=task,
                                start=to_time(start_ns), end=to_time(end_ns), lookback_s=float(lookback_s),
                                scan=scan, max_new_tokens=int(max_new_tokens))
        return PendingAsk(self, goal, timeout_s, server_timeout_s)

    def ask(self, prompt: str, task: str = "question", **kwargs):
        """ask_async(...) and wait for it: the Query action result (answer, points, tracks, events, ...). Raises
        NodeAbsent, Refused (success False: bad task, range outside the buffer, ...), TimeoutError."""
        pending = self.ask_async(prompt, task, **kwargs)
        while not pending.done():
            with self._lock:
                self._lock.wait(0.05)
        return pending.result()

    def close(self) -> None:
        """Destroy everything the client added to the node."""
        for query_id in list(self.watched()):
            self.unwatch(query_id)
        self.node.destroy_timer(self._timer)
        self.node.destroy_subscription(self._diagnostics)
        self._action.destroy()
        self.node.destroy_client(self._manage)
        self.node.destroy_client(self._recall)
