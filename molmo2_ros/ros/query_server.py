"""The node's query interfaces: the ManageQueries service (standing queries) and the Query action (on-demand
questions about buffered frames).

ManageQueries changes the `queries` parameter (or `<camera>.queries` for a camera with its own list) and the node
applies parameter changes, so the parameter always shows the standing queries and there is one code path for both.
Query goals run on the runtime's worker before pending windows; a cancel stops the running generation within one
decode step (engines with stop_within_token). A goal's range (start/end, or lookback_s) is answered from the frame
buffer when it holds the whole range, else from the history (history.enabled): scanned in clips (core/rewind.py),
the windows due meanwhile served between its batches.
"""

from __future__ import annotations

import threading
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from molmo2_ros.action import Query as QueryAction
from molmo2_ros.core.queries import task_kind
from molmo2_ros.core.rewind import RewindResult
from molmo2_ros.core.tracks import event_id, split_id, track_id
from molmo2_ros.core.types import NS_PER_S, Query, QueryResult, TaskKind
from molmo2_ros.srv import ManageQueries

from . import convert

MAX_GOALS = 4


class QueryServer:
    """ManageQueries service and Query action of a Molmo2Node (which provides `runtime`, `lifecycle_state`,
    `standing` (standing_queries.StandingQueries) and `cameras`)."""

    def __init__(self, node, callback_group) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._goal_count = 0
        self.active_goals = 0
        self._service = node.create_service(ManageQueries, "~/manage_queries", self._on_manage,
                                            callback_group=callback_group)
        self._action = ActionServer(node, QueryAction, "~/query", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                    callback_group=callback_group)

    def destroy(self) -> None:
        self._action.destroy()
        self.node.destroy_service(self._service)

    # ---- ManageQueries -----------------------------------------------------------------------------------
    def _on_manage(self, request, response):
        response.success, response.message = self._manage(request)
        try:
            queries = self.node.standing.listed(request.camera)
        except ValueError:
            queries = []
        response.queries = [convert.query_to_msg(q) for q in queries]
        return response

    def _manage(self, request) -> tuple[bool, str]:
        ops = (ManageQueries.Request.OP_LIST, ManageQueries.Request.OP_ADD, ManageQueries.Request.OP_REMOVE)
        if request.op not in ops:
            return False, f"unknown op {request.op} (OP_LIST=0, OP_ADD=1, OP_REMOVE=2)"
        try:
            queries = self.node.standing.listed(request.camera)
        except ValueError as error:
            return False, str(error)
        where = f" of camera '{request.camera}'" if request.camera else ""
        if request.op == ManageQueries.Request.OP_LIST:
            return True, f"{len(queries)} standing queries{where}"
        if request.op == ManageQueries.Request.OP_REMOVE:
            if not any(q.id == request.query.id for q in queries):
                return False, f"no query with id '{request.query.id}'{where}"
            reason = self.node.standing.set(request.camera, [q for q in queries if q.id != request.query.id])
            return (False, reason) if reason else (True, f"removed query '{request.query.id}'{where}")
        try:
            query = convert.query_from_msg(request.query, self.node.get_parameter("max_query_chars").value)
        except ValueError as error:
            return False, str(error)
        if any(q.id == query.id for q in queries):
            return False, f"query id '{query.id}' already exists{where}"
        reason = self.node.standing.set(request.camera, [*queries, query])
        return (False, reason) if reason else (True, f"added {query.task.value} query '{query.id}'{where}")

    # ---- Query action ------------------------------------------------------------------------------------
    def _on_goal(self, goal) -> GoalResponse:
        return GoalResponse.REJECT if self.active_goals >= MAX_GOALS else GoalResponse.ACCEPT

    def _execute(self, goal_handle) -> QueryAction.Result:
        with self._lock:
            self.active_goals += 1
            self._goal_count += 1
            number = self._goal_count
        try:
            return self._answer(goal_handle, number)
        finally:
            with self._lock:
                self.active_goals -= 1

    def _answer(self, goal_handle, number: int) -> QueryAction.Result:
        goal = goal_handle.request
        accepted = time.monotonic()
        result = QueryAction.Result()
        runtime = self.node.runtime
        if runtime is None or self.node.lifecycle_state != "active":
            return self._abort(goal_handle, result, f"the node is {self.node.lifecycle_state}, not active")
        cameras = self.node.cameras
        camera = goal.camera
        if not camera and len(cameras) > 1:
            return self._abort(goal_handle, result, f"name the camera (one of {', '.join(cameras)})")
        if not camera:
            camera = cameras[0]
        try:
            job = self._make_job(runtime, camera, goal, number)
        except ValueError as error:
            return self._abort(goal_handle, result, str(error))
        runtime.submit(job)
        stage, sent = "", 0.0
        while not job.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                job.cancel.set()
                goal_handle.canceled()
                result.message = "cancelled"
                return result
            now = time.monotonic()
            current = f"{job.stage} (clip {job.progress[0]} of {job.progress[1]})" if job.progress[1] else job.stage
            if current != stage or now - sent >= 0.5:
                stage, sent = current, now
                goal_handle.publish_feedback(QueryAction.Feedback(stage=stage, elapsed=now - accepted))
        if isinstance(job.result, str) or job.result is None:
            return self._abort(goal_handle, result, job.result or "no result")
        query_id = f"goal/{number}"  # the result's ids name the goal (the job's query id must be a plain name)
        if isinstance(job.result, RewindResult):
            rewound = job.result
            r = _renamed(rewound.result, query_id)
            result.clip_points = [convert.point_array_msg(_renamed(c, query_id)) for c in rewound.clips]
            result.clips_scanned, result.frames_scanned = rewound.clips_scanned, rewound.frames_scanned
            result.frames_skipped = rewound.frames_skipped
            result.message = (f"ok: {rewound.clips_scanned} clips, {rewound.frames_scanned} frames of the history"
                              + (f", {rewound.frames_skipped} unreadable frames skipped" if rewound.frames_skipped
                                 else "")
                              + (f", {rewound.clips_failed} clips failed ({rewound.error})" if rewound.clips_failed
                                 else ""))
        else:
            r = _renamed(job.result, query_id)
            result.message = "ok"
        result.success = True
        result.answer = convert.answer_msg(r)
        if r.query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
            result.points = convert.point_array_msg(r)
        if r.query.task == TaskKind.TRACK:
            result.tracks = convert.track_array_msg(r)
        result.events = [convert.event_msg(e, r.frame_id) for e in r.events]
        goal_handle.succeed()
        return result

    def _make_job(self, runtime, camera: str, goal, number: int):
        """The job for a goal: the current window (no range), the frame buffer (a range it holds), or the history
        (a range that has left the buffer). ValueError says what is wrong."""
        query = Query(id=f"goal_{number}", task=task_kind(goal.task), text=goal.prompt)
        start_ns, end_ns = convert.time_to_ns(goal.start), convert.time_to_ns(goal.end)
        history = self.node.history
        if goal.lookback_s < 0:
            raise ValueError(f"lookback_s must be >= 0, got {goal.lookback_s}")
        if goal.lookback_s > 0:
            newest = [span[1] for span in (runtime.stream(camera).clip_between(0, 0)[1],
                                           history.span(camera) if history is not None else None) if span]
            if not newest:
                raise ValueError(f"no frames of camera '{camera}' yet")
            end_ns = max(newest)
            start_ns = max(0, end_ns - int(goal.lookback_s * NS_PER_S))
        if (start_ns == 0 and end_ns == 0) or runtime.buffer_covers(camera, start_ns, end_ns):
            return runtime.make_job(camera, query, start_ns, end_ns, goal.max_new_tokens or None)
        if history is None:
            try:
                return runtime.make_job(camera, query, start_ns, end_ns, goal.max_new_tokens or None)
            except ValueError as error:
                raise ValueError(f"{error}; older ranges need history.enabled:=true") from None
        return runtime.make_range_job(camera, query, start_ns, end_ns, history, goal.scan or "dense",
                                      goal.max_new_tokens or None)

    @staticmethod
    def _abort(goal_handle, result, message: str):
        result.message = message
        goal_handle.abort()
        return result


def _renamed(r: QueryResult, query_id: str) -> QueryResult:
    """A goal's result under the goal's id: its query, track ids and event ids (core/tracks.py builds them)."""
    for track in r.tracks:
        track.id = track_id(query_id, split_id(track.id)[1])
    for event in r.events:
        event.id, event.query_id = event_id(query_id, split_id(event.id)[1]), query_id
    r.query = Query(id=query_id, task=r.query.task, text=r.query.text)
    return r
