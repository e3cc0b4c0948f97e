"""The molmo2 lifecycle node: camera frames in; grounded points, tracks, events and answers out.

Lifecycle:
- configure: read parameters, load the model (or the `engine_plugin`), warm it up on a dummy clip, create the
  output publishers of the standing queries. A failure (e.g. a bad model folder) logs the reason and leaves the
  node unconfigured (also reported on /diagnostics).
- activate: subscribe to the camera and start the inference worker thread.
- deactivate: unsubscribe, stop the worker (after the running inference), drop buffered frames and the
  engine's cached vision features. The model stays loaded (re-activation is instant).
- cleanup: unload the model (GPU memory back to the driver) and remove the query publishers.
The `autostart` parameter (default true) walks the node to active by itself.

Threads: the image callback only classifies the stamp, decodes frames the buffer keeps and pushes them; a
worker thread runs inference. When inference is slower than the stride, the worker takes the newest pending
clip and counts the others as skipped (no queue growth). With use_sim_time every clip is processed in order, so
identical bags give identical outputs (play the bag at a rate the model keeps up with). Services, parameters,
the action and timers run on a multi-threaded executor (executor.HandOffExecutor), so they stay responsive
during inference.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import ImageMarker

from molmo2_ros.action import Query as QueryAction
from molmo2_ros.core.image_decode import BadImage
from molmo2_ros.core.overlay import draw_overlay
from molmo2_ros.core.pipeline import Pipeline, validate_query
from molmo2_ros.core.sampling import plan_clip
from molmo2_ros.core.types import NS_PER_S, Clip, Frame, Query, QueryResult, TaskKind
from molmo2_ros.msg import Answer, Event, PointArray, TrackArray
from molmo2_ros.srv import ManageQueries

from . import convert
from .executor import HandOffExecutor
from .params import (ACTIVATE_TIME, CONFIGURE_TIME, SPECS, check_all, check_value, descriptor, engine_config,
                     parse_queries, pipeline_config)

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

OUTPUT_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
MAX_GOALS = 4
MAX_SIM_BACKLOG = 1000  # pending clips kept under use_sim_time before the oldest are skipped
THROTTLE_S = 5.0
_TOPIC_KIND = {TaskKind.POINT: "points", TaskKind.COUNT: "counts", TaskKind.TRACK: "tracks",
               TaskKind.EVENT: "events", TaskKind.CAPTION: "answers", TaskKind.QUESTION: "answers"}
_MSG_TYPE = {TaskKind.POINT: PointArray, TaskKind.COUNT: PointArray, TaskKind.TRACK: TrackArray,
             TaskKind.EVENT: Event, TaskKind.CAPTION: Answer, TaskKind.QUESTION: Answer}


def load_engine(plugin: str, config):
    """The engine: Molmo2Engine, or `module:Class` from engine_plugin (a testing/extension hook)."""
    if not plugin:
        from molmo2_ros.core.engine import Molmo2Engine

        return Molmo2Engine(config)
    module, _, cls = plugin.partition(":")
    return getattr(importlib.import_module(module), cls)(config)


def default_topic(query: Query) -> str:
    return query.topic or f"~/{_TOPIC_KIND[query.task]}/{query.id}"


@dataclass
class _Outputs:
    """Publishers of one standing query: its main output and (for grounding tasks) its Answer."""

    main: object
    answer: object | None


@dataclass
class _Job:
    """An on-demand query handed to the worker."""

    query: Query
    clip: Clip
    max_new_tokens: int | None
    stage: str = "queued"
    cancelled: bool = False
    result: QueryResult | str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Molmo2Node(LifecycleNode):
    """Lifecycle node streaming Molmo2 grounding results; see the module docstring."""

    def __init__(self, node_name: str = "molmo2", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in SPECS.items():
            self.declare_parameter(name, spec.default, descriptor(name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        sys.setswitchinterval(self.get_parameter("gil_switch_interval_ms").value / 1e3)
        self._lc_state = "unconfigured"
        self._model_state = "not loaded"
        self._error = ""
        self._engine = None
        self._pipeline: Pipeline | None = None
        self._outputs: dict[str, _Outputs] = {}
        self._outputs_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._work = threading.Condition()
        self._pending: deque[Clip] = deque()
        self._jobs: deque[_Job] = deque()
        self._stop = False
        self._worker: threading.Thread | None = None
        self._deterministic = False
        self._sub = None
        self._sub_qos = ""
        self._qos_recheck = False
        self._overlay_pub = self._marker_pub = None
        self._counts: Counter = Counter()
        self._latency_s: deque[float] = deque(maxlen=50)
        self._age_s: deque[float] = deque(maxlen=50)
        self._callback_ms: deque[float] = deque(maxlen=2048)  # image callback durations (~68 s at 30 Hz)
        self._last_frame = time.monotonic()
        self._warned_no_frame = False
        self._rate_mark = (time.monotonic(), 0)
        self._input_rate = 0.0
        self._goal_count = 0
        self._goals_active = 0
        self._goals_lock = threading.Lock()
        self._input_type = Image
        self._topic = self._resolve("image")

        self._service_group = ReentrantCallbackGroup()
        self._image_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._on_tick, self._timer_group, clock=steady)
        self._manage_srv = self.create_service(ManageQueries, "~/manage_queries", self._on_manage_queries,
                                               callback_group=self._service_group)
        self._action = ActionServer(self, QueryAction, "~/query", execute_callback=self._execute_goal,
                                    goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                    callback_group=self._service_group)
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart, self._timer_group, clock=steady)

    # ---- parameters --------------------------------------------------------------------------------------
    def _values(self) -> dict:
        return {name: self.get_parameter(name).value for name in SPECS}

    def _on_set_parameters(self, params) -> SetParametersResult:
        values = self._values()
        values.update({p.name: p.value for p in params if p.name in SPECS})
        for p in params:
            if p.name not in SPECS:
                continue
            reason = check_value(p.name, p.value, values)
            if not reason and p.name in CONFIGURE_TIME and self._lc_state != "unconfigured":
                reason = (f"{p.name} is read when the node configures; it is {self._lc_state} now: "
                          "deactivate and clean up first")
            if not reason and p.name in ACTIVATE_TIME and self._lc_state == "active":
                reason = f"{p.name} is read when the node activates; deactivate first"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _resolve(self, topic: str) -> str:
        """Fully qualified, remapped name (rclpy without resolve_topic_name: the name as given)."""
        resolve = getattr(self, "resolve_topic_name", None)
        return resolve(topic) if resolve is not None else topic

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._values()
        engine = None
        try:
            reason = check_all(values)
            if reason:
                raise ValueError(reason)
            if not values["model"] and not values["engine_plugin"]:
                raise ValueError("parameter 'model' is empty: set a Hub id (e.g. allenai/Molmo2-4B) or a folder")
            queries = parse_queries(values["queries"], values["max_query_chars"])
            config = pipeline_config(values)
            self._model_state = "loading"
            started = time.monotonic()
            engine = load_engine(values["engine_plugin"], engine_config(values))
            engine.load()
            self._warm_up(engine)
            pipeline = Pipeline(engine, queries, config)
        except Exception as error:  # noqa: BLE001 - any failure leaves the node unconfigured, alive
            self._error = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            self._model_state = "failed"
            self.get_logger().error(f"configure failed, node stays unconfigured: {self._error}")
            if engine is not None and hasattr(engine, "unload"):
                engine.unload()
            return TransitionCallbackReturn.FAILURE
        self._engine, self._pipeline, self._error = engine, pipeline, ""
        self._model_state = "loaded"
        self._overlay_pub = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        self._marker_pub = self.create_publisher(ImageMarker, "~/markers", OUTPUT_QOS)
        for query in pipeline.queries:
            self._outputs[query.id] = self._make_outputs(query)
        self._lc_state = "inactive"
        self.get_logger().info(
            f"configured: model '{engine.model_id}' loaded and warmed up in {time.monotonic() - started:.1f} s; "
            f"{len(queries)} standing queries: {', '.join(q.id for q in queries) or 'none'}")
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, engine) -> None:
        """One tiny inference so that the first real clip does not pay for lazy initialisation."""
        black = np.zeros((378, 378, 3), np.uint8)
        frames = [(i, Frame(stamp_ns=i + 1, image=black, frame_id="warmup")) for i in range(2)]
        clip = plan_clip(frames, -1, 2, pipeline_config(self._values()).slowfast, epoch=-1)
        inference = engine.infer(clip, [Query("warmup", TaskKind.CAPTION)], 1)
        if inference.error:
            raise RuntimeError(f"warm-up inference failed: {inference.error}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._values()
        self._deterministic = bool(self.get_parameter("use_sim_time").value)
        self._stop = False
        self._worker = threading.Thread(target=self._work_loop, name="molmo2_worker", daemon=True)
        self._worker.start()
        self._last_frame = time.monotonic()
        self._warned_no_frame = False
        self._input_type = CompressedImage if values["input_compressed"] else Image
        self._lc_state = "active"
        self._subscribe()
        self.get_logger().info(f"active: listening on {self._topic} ({self._input_type.__name__}, "
                               f"qos={values['qos']})")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self._lc_state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._lc_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return TransitionCallbackReturn.SUCCESS

    def teardown(self) -> None:
        """Stop everything and unload the model (shutdown, error, process exit)."""
        self._stop_streaming()
        self._release()
        self._lc_state = "unconfigured"

    def _stop_streaming(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        self._qos_recheck = False
        with self._work:
            self._stop = True
            self._pending.clear()
            for job in self._jobs:
                job.result = "node deactivated"
                job.done.set()
            self._jobs.clear()
            self._work.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        with self._buffer_lock:
            if self._pipeline is not None and self._pipeline.buffer.buffered_frames:
                self._pipeline.buffer.reset("deactivate")
        if self._engine is not None and hasattr(self._engine, "clear_cache"):
            self._engine.clear_cache()

    def _release(self) -> None:
        with self._outputs_lock:
            for outputs in self._outputs.values():
                self._destroy_outputs(outputs)
            self._outputs.clear()
        for pub in (self._overlay_pub, self._marker_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._overlay_pub = self._marker_pub = None
        self._pipeline = None
        if self._engine is not None:
            self._engine.unload()
            self._engine = None
        if self._model_state == "loaded":
            self._model_state = "not loaded"

    # ---- input -------------------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        """Create the camera subscription; with qos=auto wait until a publisher shows its reliability."""
        mode = self.get_parameter("qos").value
        if mode == "auto":
            infos = self.get_publishers_info_by_topic(self._topic)
            if not infos:
                self._qos_recheck = True
                return
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            mode = "reliable" if reliable else "sensor_data"
        self._qos_recheck = False
        reliability = (qos_profile_sensor_data.reliability if mode == "sensor_data"
                       else ReliabilityPolicy.RELIABLE)
        qos = QoSProfile(depth=self.get_parameter("input_depth").value, history=HistoryPolicy.KEEP_LAST,
                         reliability=reliability)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._sub = self.create_subscription(self._input_type, "image", self._on_image, qos,
                                             callback_group=self._image_group, event_callbacks=events)
        self._topic = getattr(self._sub, "topic_name", self._topic)
        self._sub_qos = mode
        self.get_logger().info(f"subscribed to {self._topic} with {mode} QoS")

    def _on_incompatible_qos(self, event) -> None:
        try:
            policy = QoSPolicyKind(int(event.last_policy_kind)).name
        except (AttributeError, ValueError, TypeError):
            policy = "unknown"
        self.get_logger().warning(
            f"a publisher on {self._topic} offers QoS incompatible with this node's {self._sub_qos} subscription "
            f"(policy {policy}): its frames are NOT received. Set the parameter qos to auto or sensor_data.")
        if self.get_parameter("qos").value == "auto" and self._sub is not None:
            self._qos_recheck = True

    def _on_image(self, msg: Image | CompressedImage) -> None:
        started = time.perf_counter()
        try:
            self._take_image(msg)
        finally:  # one callback at a time (mutually exclusive group); deque.append is atomic
            self._callback_ms.append((time.perf_counter() - started) * 1e3)

    def _take_image(self, msg: Image | CompressedImage) -> None:
        self._last_frame = time.monotonic()
        self._counts["frames_received"] += 1
        pipeline = self._pipeline
        if pipeline is None or self._lc_state != "active":
            return
        stamp = convert.image_stamp_ns(msg)
        with self._buffer_lock:
            verdict = pipeline.buffer.accepts(stamp)
            if verdict in ("keep", "backward_jump"):
                try:
                    frame = (convert.frame_from_compressed(msg, stamp) if isinstance(msg, CompressedImage)
                             else convert.frame_from_image(msg, stamp))
                except BadImage as error:
                    reason = convert.bad_frame_reason(msg)
                    self._counts[f"bad_{reason}"] += 1
                    self.get_logger().warning(
                        f"dropping bad frame(s) from {self._topic} ({reason}): {error}",
                        throttle_duration_sec=THROTTLE_S)
                    return
            else:
                if verdict == "zero_stamp":
                    self.get_logger().warning(f"frames on {self._topic} have a zero stamp: dropped",
                                              throttle_duration_sec=THROTTLE_S)
                frame = convert.placeholder_frame(msg, stamp)
            clip = pipeline.push(frame)
        if clip is not None:
            self._submit(clip)

    def _submit(self, clip: Clip) -> None:
        with self._work:
            if self._deterministic:
                if len(self._pending) >= MAX_SIM_BACKLOG:
                    self._pending.popleft()
                    self._counts["windows_skipped"] += 1
            else:
                self._counts["windows_skipped"] += len(self._pending)
                self._pending.clear()
            self._pending.append(clip)
            self._work.notify()

    # ---- worker ------------------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            with self._work:
                while not (self._stop or self._jobs or self._pending):
                    self._work.wait()
                if self._stop:
                    return
                job = self._jobs.popleft() if self._jobs else None
                clip = None if job else self._pending.popleft()
            try:
                if job is not None:
                    self._run_job(job)
                else:
                    self._process(clip)
            except Exception as error:  # noqa: BLE001 - the worker must outlive any engine/plugin fault
                self._counts["worker_errors"] += 1
                self._error = f"{type(error).__name__}: {error}"
                self.get_logger().error(f"inference failed: {self._error}", throttle_duration_sec=THROTTLE_S)
                if job is not None:
                    job.result = self._error
                    job.done.set()

    def _process(self, clip: Clip) -> None:
        pipeline = self._pipeline
        started = time.perf_counter()
        results = pipeline.process(clip)
        if pipeline.last_error and not results and pipeline.queries:
            self._error = pipeline.last_error  # shown as last_error on /diagnostics (the log line is throttled)
            self.get_logger().error(f"inference failed: {pipeline.last_error}", throttle_duration_sec=THROTTLE_S)
        if not results:
            return
        self._latency_s.append(time.perf_counter() - started)
        for result in results:
            self._publish(result)
        self._age_s.append((self.get_clock().now().nanoseconds - clip.end_ns) / NS_PER_S)
        self._publish_visuals(clip, results)

    def _publish(self, r: QueryResult) -> None:
        with self._outputs_lock:
            outputs = self._outputs.get(r.query.id)
            if outputs is None:  # removed while its inference ran
                return
            task = r.query.task
            if task in (TaskKind.POINT, TaskKind.COUNT):
                outputs.main.publish(convert.point_array_msg(r))
            elif task == TaskKind.TRACK:
                outputs.main.publish(convert.track_array_msg(r))
            elif task == TaskKind.EVENT:
                for event in r.events:
                    outputs.main.publish(convert.event_msg(event, r.frame_id))
            else:
                outputs.main.publish(convert.answer_msg(r))
            if outputs.answer is not None:
                outputs.answer.publish(convert.answer_msg(r))

    def _publish_visuals(self, clip: Clip, results: list[QueryResult]) -> None:
        overlay, markers = self._overlay_pub, self._marker_pub
        max_trail = self.get_parameter("overlay.max_trail").value
        if overlay is not None and overlay.get_subscription_count() > 0:
            image = draw_overlay(clip.frames[-1].frame.image, results, max_trail=max_trail)
            overlay.publish(convert.image_msg(image, clip.end_ns, clip.frame_id))
        if markers is not None and markers.get_subscription_count() > 0:
            for r in results:
                for marker in convert.marker_msgs(r, max_trail):
                    markers.publish(marker)

    def _run_job(self, job: _Job) -> None:
        if job.cancelled:
            return
        encode = getattr(self._engine, "encode", None)
        if encode is not None:
            job.stage = "encoding"
            encode(job.clip)
        job.stage = "generating"
        job.result = self._pipeline.answer(job.clip, job.query, job.max_new_tokens)
        job.done.set()

    # ---- standing queries --------------------------------------------------------------------------------
    def _make_outputs(self, query: Query) -> _Outputs:
        main = self.create_publisher(_MSG_TYPE[query.task], default_topic(query), OUTPUT_QOS)
        answer = None
        if _MSG_TYPE[query.task] is not Answer:
            answer = self.create_publisher(Answer, f"~/answers/{query.id}", OUTPUT_QOS)
        return _Outputs(main, answer)

    def _destroy_outputs(self, outputs: _Outputs) -> None:
        self.destroy_publisher(outputs.main)
        if outputs.answer is not None:
            self.destroy_publisher(outputs.answer)

    def _on_manage_queries(self, request, response):
        response.success, response.message = self._manage(request)
        pipeline = self._pipeline
        response.queries = [convert.query_to_msg(q) for q in (pipeline.queries if pipeline else [])]
        return response

    def _manage(self, request) -> tuple[bool, str]:
        pipeline = self._pipeline
        if request.op not in (ManageQueries.Request.OP_LIST, ManageQueries.Request.OP_ADD,
                              ManageQueries.Request.OP_REMOVE):
            return False, f"unknown op {request.op} (OP_LIST=0, OP_ADD=1, OP_REMOVE=2)"
        if pipeline is None:
            return False, f"the node is {self._lc_state}: standing queries exist once it is configured"
        if request.op == ManageQueries.Request.OP_LIST:
            return True, f"{len(pipeline.queries)} standing queries"
        if request.op == ManageQueries.Request.OP_REMOVE:
            try:
                pipeline.remove_query(request.query.id)
            except ValueError as error:
                return False, str(error)
            with self._outputs_lock:
                self._destroy_outputs(self._outputs.pop(request.query.id))
            return True, f"removed query '{request.query.id}'"
        try:
            query = pipeline.add_query(convert.query_from_msg(request.query))
        except ValueError as error:
            return False, str(error)
        try:
            outputs = self._make_outputs(query)
        except Exception as error:  # noqa: BLE001 - e.g. an invalid topic name
            pipeline.remove_query(query.id)
            return False, f"cannot publish query '{query.id}' on '{default_topic(query)}': {error}"
        with self._outputs_lock:
            self._outputs[query.id] = outputs
        return True, f"added {query.task.value} query '{query.id}' on {default_topic(query)}"

    # ---- on-demand queries (action) ----------------------------------------------------------------------
    def _on_goal(self, goal) -> GoalResponse:
        return GoalResponse.REJECT if self._goals_active >= MAX_GOALS else GoalResponse.ACCEPT

    def _execute_goal(self, goal_handle) -> QueryAction.Result:
        with self._goals_lock:
            self._goals_active += 1
            self._goal_count += 1
            number = self._goal_count
        try:
            return self._answer_goal(goal_handle, number)
        finally:
            with self._goals_lock:
                self._goals_active -= 1

    def _answer_goal(self, goal_handle, number: int) -> QueryAction.Result:
        goal = goal_handle.request
        accepted = time.monotonic()
        result = QueryAction.Result()
        job, message = self._make_job(goal, number)
        if job is None:
            result.message = message
            goal_handle.abort()
            return result
        with self._work:
            self._jobs.append(job)
            self._work.notify()
        stage, sent = "", 0.0
        while not job.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                job.cancelled = True
                goal_handle.canceled()
                result.message = "cancelled"
                return result
            now = time.monotonic()
            if job.stage != stage or now - sent >= 0.5:
                stage, sent = job.stage, now
                goal_handle.publish_feedback(QueryAction.Feedback(stage=stage, elapsed=now - accepted))
        if isinstance(job.result, str) or job.result is None:
            result.message = job.result or "no result"
            goal_handle.abort()
            return result
        r = job.result
        for track in r.tracks:
            track.id = track.id.replace(f"goal_{number}/", f"goal/{number}/", 1)
        r.query = Query(id=f"goal/{number}", task=r.query.task, text=r.query.text)
        result.success, result.message = True, "ok"
        result.answer = convert.answer_msg(r)
        if r.query.task in (TaskKind.POINT, TaskKind.COUNT, TaskKind.EVENT):
            result.points = convert.point_array_msg(r)
        if r.query.task == TaskKind.TRACK:
            result.tracks = convert.track_array_msg(r)
        result.events = [convert.event_msg(e, r.frame_id) for e in r.events]
        goal_handle.succeed()
        return result

    def _make_job(self, goal, number: int) -> tuple[_Job | None, str]:
        pipeline = self._pipeline
        if pipeline is None or self._lc_state != "active":
            return None, f"the node is {self._lc_state}, not active"
        try:
            task = TaskKind(goal.task)
        except ValueError:
            return None, f"unknown task '{goal.task}' (use {', '.join(t.value for t in TaskKind)})"
        start, end = convert.time_to_ns(goal.start), convert.time_to_ns(goal.end)
        with self._buffer_lock:
            span = pipeline.buffer.buffered_span_ns
            if start == 0 and end == 0:
                clip = pipeline.buffer.latest_clip()
            elif end < start:
                return None, "time range: end is before start"
            else:
                clip = pipeline.buffer.clip_between(start, end)
        if clip is None:
            held = (f"[{span[0] / NS_PER_S:.3f}, {span[1] / NS_PER_S:.3f}] s" if span else "no frames")
            return None, f"no buffered frames in the requested range (the buffer holds {held})"
        query = Query(id=f"goal_{number}", task=task, text=goal.prompt)
        try:
            validate_query(query, pipeline.config.max_query_chars)
        except ValueError as error:
            return None, str(error)
        return _Job(query, clip, goal.max_new_tokens or None), ""

    # ---- timers: QoS re-check, no-frame warning, diagnostics ---------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        if self._lc_state == "active":
            if self._qos_recheck:
                if self._sub is not None:
                    self.destroy_subscription(self._sub)
                    self._sub = None
                self._subscribe()
            silent = now - self._last_frame
            if silent >= self.get_parameter("no_frame_warn_s").value and not self._warned_no_frame:
                self._warned_no_frame = True
                self.get_logger().warning(f"no frame received on {self._topic} for {silent:.1f} s "
                                          f"({self._publisher_hint()})")
            elif silent < 1.0:
                self._warned_no_frame = False
        mark_t, mark_n = self._rate_mark
        received = self._counts["frames_received"]
        self._input_rate = (received - mark_n) / max(now - mark_t, 1e-6)
        self._rate_mark = (now, received)
        self._diag_pub.publish(self._diagnostics())

    def _publisher_hint(self) -> str:
        infos = self.get_publishers_info_by_topic(self._topic)
        if not infos:
            return "no publisher on this topic: check the camera and the remapping of 'image'"
        kinds = sorted({"reliable" if i.qos_profile.reliability == ReliabilityPolicy.RELIABLE else "best effort"
                        for i in infos})
        return (f"{len(infos)} publisher(s), {'/'.join(kinds)}; this node subscribes with "
                f"{self._sub_qos or 'no'} QoS, type {self._input_type.__name__}")

    def _diagnostics(self) -> DiagnosticArray:
        counts = Counter(self._counts)
        pipeline = self._pipeline
        if pipeline is not None:
            counts.update({f"pipeline_{k}": v for k, v in pipeline.counters.items()})
            counts.update({f"buffer_{k}": v for k, v in pipeline.buffer.counters.items()})
        lat = sorted(self._latency_s)
        cb = sorted(self._callback_ms)
        values = {
            "state": self._lc_state, "model_state": self._model_state, "model": self.get_parameter("model").value,
            "input_topic": self._topic, "input_qos": self._sub_qos, "input_rate_hz": f"{self._input_rate:.2f}",
            "windows_processed": counts["pipeline_windows_processed"], "windows_skipped": counts["windows_skipped"],
            "pending_clips": len(self._pending), "inference_latency_s": f"{lat[-1]:.3f}" if lat else "",
            "inference_latency_p50_s": f"{lat[len(lat) // 2]:.3f}" if lat else "",
            "output_age_s": f"{self._age_s[-1]:.3f}" if self._age_s else "",
            "callback_ms_p50": f"{cb[len(cb) // 2]:.3f}" if cb else "",
            "callback_ms_p99": f"{cb[min(len(cb) - 1, len(cb) * 99 // 100)]:.3f}" if cb else "",
            "gpu_memory_mb": f"{self._gpu_mb():.1f}", "standing_queries": len(pipeline.queries) if pipeline else 0,
            "active_goals": self._goals_active, "threads": threading.active_count(), "last_error": self._error,
            "gil_switch_interval_ms": f"{sys.getswitchinterval() * 1e3:.3f}",
        }
        values.update({k: v for k, v in sorted(counts.items()) if k not in values})
        frames_dropped = sum(v for k, v in counts.items() if k.startswith(("bad_", "buffer_dropped_")))
        values["frames_dropped"] = frames_dropped
        level, message = DiagnosticStatus.OK, "ok"
        if self._model_state == "failed":
            level, message = DiagnosticStatus.ERROR, f"configure failed: {self._error}"
        elif self._lc_state == "active" and self._warned_no_frame:
            level, message = DiagnosticStatus.WARN, f"no frames on {self._topic}"
        elif self._lc_state != "active":
            message = self._lc_state
        status = DiagnosticStatus(level=level, name=f"molmo2_ros: {self.get_fully_qualified_name()}",
                                  message=message, hardware_id=str(self.get_parameter("model").value),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        return DiagnosticArray(header=convert.header(self.get_clock().now().nanoseconds, ""), status=[status])

    def _gpu_mb(self) -> float:
        gpu = getattr(self._engine, "gpu_memory_mb", None)
        return float(gpu()) if gpu is not None else 0.0


# ---- entry point ---------------------------------------------------------------------------------------------
def _with_default_image_remap(args: list[str]) -> list[str]:
    """Remap `image` to camera/image_raw (relative: a namespace applies) unless the command line remaps it already."""
    for i, arg in enumerate(args):
        if arg in ("-r", "--remap") and i + 1 < len(args) and args[i + 1].split(":=")[0].endswith("image"):
            return args
    return [*args, "--ros-args", "-r", "image:=camera/image_raw"]


def main(args: list[str] | None = None, executor_class=HandOffExecutor) -> int:
    """Run the node until SIGINT/SIGTERM; exit code 0 on a clean shutdown.

    executor_class: an rclpy executor class taking num_threads (bench_node --executor rclpy compares rclpy's
    MultiThreadedExecutor with the default HandOffExecutor).
    """
    rclpy.init(args=_with_default_image_remap(list(sys.argv if args is None else args)))
    node = Molmo2Node()
    name = node.get_fully_qualified_name()
    executor = executor_class(num_threads=max(6, (os.cpu_count() or 2) + 2))
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # a wait set failing because the signal handler already shut the context down
        if rclpy.ok():
            raise
    finally:
        node.teardown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"{name}: shut down cleanly", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
