"""The molmo2 lifecycle node: a thin ROS shell over the core runtime (`molmo2_ros.core.runtime`).

One node, one copy of the model, one or more cameras (`cameras`). The runtime owns scheduling, the worker thread
and the engine calls; this node owns the parameters (core/settings.py's, which the command line maps onto too),
the inputs (`camera_input.py`, `depth_input.py`), publishers (`outputs.py`; overlays drawn by `visuals.py`), the
standing queries (`standing_queries.py`), the service and action (`query_server.py`) and /diagnostics
(`diagnostics.py`). The process entry point is `main.py`.

Lifecycle:
- configure: read parameters, load the engine (model, vLLM client or `engine_plugin`), warm it up on a dummy clip,
  make one stream per camera and the output publishers. A failure (e.g. a bad model folder) logs the reason and
  leaves the node unconfigured (also on /diagnostics).
- activate: start the runtime's worker, subscribe to the cameras, enable the publishers.
- deactivate: unsubscribe, stop the runtime (a running generation stops within one decode step), drop buffered
  frames and the engine's cached vision features. The model stays loaded (re-activation is instant).
- cleanup: unload the model (GPU memory back to the driver) and remove the publishers.
The `autostart` parameter (default true) walks the node to active by itself.

History (history.enabled; core/history.py): opened by configure, closed by cleanup. Every clip a camera's buffer
emits offers its newly kept frames (with their depth when lifted) from the camera thread, never blocking; every
result's grounded outputs are recorded as sightings (`~/recall`, recall_server.py). Query goals about a range that
has left the frame buffer are answered from it (query_server.py).
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from molmo2_ros.core.engine_factory import make_engine
from molmo2_ros.core.history import HistoryStore
from molmo2_ros.core.heap import HeapTrimmer, allocator
from molmo2_ros.core.shared_pages import SharedPageReleaser
from molmo2_ros.core.runtime import Runtime, warm_up
from molmo2_ros.core.schedule import make_policy
from molmo2_ros.core.settings import (CAMERA_SETTINGS, SPECS, check_all, check_value, grounding_config,
                                      history_config, memory_setting, pipeline_config)
from molmo2_ros.core.stream import Stream
from molmo2_ros.core.types import NS_PER_S, Clip, Frame, QueryResult

from . import convert
from .camera_input import CameraInput
from .depth_input import DepthInput
from .diagnostics import StatusReporter
from .outputs import CameraOutputs
from .outputs_3d import DepthCameraOutputs
from .params import ACTIVATE_TIME, CONFIGURE_TIME, declare_parameters
from .query_server import QueryServer
from .recall_server import RecallServer
from .standing_queries import StandingQueries
from .visuals import VisualsPublisher

THROTTLE_S = 5.0
STOP_TIMEOUT_S = 2.0  # how long deactivate/shutdown wait for an engine call that cannot stop within a token
TICK_S = 1.0  # inputs' health checks, diagnostics and heap trims


class Molmo2Node(LifecycleNode):
    """Lifecycle node streaming Molmo2 grounding results of one or more cameras; see the module docstring.
    `model_state`, `model_loads`, `error`, `inputs`, `depth_inputs`, `heap`, `shared_pages`, `visuals` and
    `query_server` are read by the diagnostics (diagnostics.StatusReporter)."""

    def __init__(self, node_name: str = "molmo2", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.cameras, self._setup_error = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        sys.setswitchinterval(self.get_parameter("gil_switch_interval_ms").value / 1e3)
        self.lifecycle_state, self.model_state, self.error, self.model_loads = "unconfigured", "not loaded", "", 0
        self.runtime: Runtime | None = None
        self.history: HistoryStore | None = None
        self._outputs: dict[str, CameraOutputs] = {}
        self._status = StatusReporter()
        self.heap = HeapTrimmer()
        self.shared_pages = SharedPageReleaser()
        self.visuals = VisualsPublisher(self._draw, self._on_runtime_error)
        self.inputs = {c: CameraInput(self, c, self._accepts, self._push, MutuallyExclusiveCallbackGroup())
                       for c in self.cameras}
        self.depth_inputs = {c: DepthInput(self, c, self._stream, MutuallyExclusiveCallbackGroup())
                             for c in self.cameras}
        steady, timers = Clock(clock_type=ClockType.STEADY_TIME), MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(TICK_S, self._on_tick, timers, clock=steady)
        self.standing = StandingQueries(self)
        self.query_server = QueryServer(self, ReentrantCallbackGroup())
        self.recall_server = RecallServer(self, ReentrantCallbackGroup())
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart, timers, clock=steady)

    # ---- parameters --------------------------------------------------------------------------------------
    def camera_param(self, camera: str, name: str):
        """`<camera>.<name>` for a named camera, else the global parameter."""
        return self.get_parameter(f"{camera}.{name}" if camera else name).value

    def resolve_topic(self, topic: str) -> str:
        """Fully qualified, remapped name (rclpy without resolve_topic_name: the name as given)."""
        resolve = getattr(self, "resolve_topic_name", None)
        return resolve(topic) if resolve is not None else topic

    def _values(self) -> dict:
        return {name: self.get_parameter(name).value for name in SPECS}

    def _camera_values(self, overrides: dict | None = None) -> dict[str, dict[str, object]]:
        """Each named camera's own CAMERA_SETTINGS (`<camera>.<name>` parameters), `overrides` applied."""
        overrides = overrides or {}
        return {c: {n: overrides.get(f"{c}.{n}", self.get_parameter(f"{c}.{n}").value) for n in CAMERA_SETTINGS}
                for c in self.cameras if c}

    def _on_set_parameters(self, params) -> SetParametersResult:
        values = self._values()
        changed = {p.name: p.value for p in params}
        values.update({k: v for k, v in changed.items() if k in SPECS})
        for name, value in changed.items():
            base = name.split(".", 1)[1] if name.split(".", 1)[0] in self.cameras and "." in name else name
            reason = check_value(base, value, values) if base in SPECS else ""
            if not reason and base in CONFIGURE_TIME and self.lifecycle_state != "unconfigured":
                reason = (f"{name} is read when the node configures; it is {self.lifecycle_state} now: "
                          "deactivate and clean up first")
            if not reason and base in ACTIVATE_TIME and self.lifecycle_state == "active":
                reason = f"{name} is read when the node activates; deactivate first"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        reason = self._apply_runtime(changed, values) if self.runtime is not None else ""
        return SetParametersResult(successful=not reason, reason=reason)

    def _apply_runtime(self, changed: dict, values: dict) -> str:
        """Apply run-time parameters to the configured runtime (from the next window on); '' or why not."""
        runtime = self.runtime
        if {"queries", *(f"{c}.queries" for c in self.cameras if c)} & changed.keys():
            reason = self.standing.apply(values, self._camera_values(changed), self._outputs)
            if reason:
                return reason
        if {"track.gate_frac", "track.lost_timeout_s", "event.max_gap_s", "max_points",
                "max_new_tokens"} & changed.keys():
            for stream in runtime.streams.values():
                stream.set_config(grounding_config(values), values["max_new_tokens"])
        if {"schedule", "max_pending_mb"} & changed.keys():
            runtime.set_policy(make_policy(values["schedule"], values["max_pending_mb"]))
        if "batch_cameras" in changed:
            runtime.batch_streams = bool(values["batch_cameras"])
        return ""

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values, engine, outputs, history = self._values(), None, {}, None
        try:
            reason = self._setup_error or check_all(values)
            if reason:
                raise ValueError(reason)
            config = pipeline_config(values, self.cameras, self._camera_values())
            if values["history.enabled"]:  # a folder that cannot be used fails here, before the model loads
                history = HistoryStore(history_config(values, self.get_name()))
            started, self.model_state = time.monotonic(), "loading"
            engine = make_engine(config.engine, config.engine_config, config.engine_plugin)
            if engine.capabilities.local_memory:  # refuse what cannot fit the GPU before loading anything
                queries = max((len(q) for q in config.queries.values()), default=0)
                if note := engine.check_memory(memory_setting(values, queries, cameras=len(self.cameras))):
                    self.get_logger().info(note)
            engine.load()
            self.model_loads += 1
            warm_up(engine, config.streams[self.cameras[0]].slowfast)
            runtime = Runtime(engine, [Stream(c, config.queries[c], config.streams[c]) for c in self.cameras],
                              make_policy(config.schedule, config.max_pending_mb), batch_streams=config.batch_cameras)
            for camera in self.cameras:
                outputs[camera] = (DepthCameraOutputs if config.streams[camera].depth.enabled else CameraOutputs)(
                    self, camera)
                for query in config.queries[camera]:
                    outputs[camera].add(query, active=False)
        except Exception as error:  # noqa: BLE001 - any failure leaves the node unconfigured, alive
            self.error = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            self.model_state = "failed"
            self.get_logger().error(f"configure failed, node stays unconfigured: {self.error}")
            for out in outputs.values():
                out.destroy()
            if engine is not None:
                engine.unload()
            if history is not None:
                history.close()
            return TransitionCallbackReturn.FAILURE
        self.runtime, self._outputs, self.error, self.model_state = runtime, outputs, "", "loaded"
        self.history = history
        if history is not None:
            self.get_logger().info(f"history: recording the sampled frames and sightings of every camera in "
                                   f"{history.config.path} (at most {history.config.max_age_s:g} s, "
                                   f"{history.config.max_gb:g} GB)")
        self._status.reset(self.cameras)
        self.lifecycle_state = "inactive"
        summary = "; ".join(f"{c or 'camera'}: {', '.join(q.id for q in config.queries[c]) or 'no queries'}"
                            for c in self.cameras)
        self.get_logger().info(f"configured: model '{engine.model_id}' loaded and warmed up in "
                               f"{time.monotonic() - started:.1f} s; {summary}; malloc: {allocator()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.visuals.start()
        self.runtime.start(self._on_results, self._on_runtime_error)
        self.lifecycle_state = "active"
        for camera_input in (*self.inputs.values(), *self.depth_inputs.values()):
            camera_input.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self.lifecycle_state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return TransitionCallbackReturn.SUCCESS

    on_error = on_shutdown

    def teardown(self) -> None:
        """Stop everything and unload the model (shutdown, error, process exit)."""
        self._stop_streaming()
        self._release()
        self.lifecycle_state = "unconfigured"

    def _stop_streaming(self) -> None:
        for camera_input in (*self.inputs.values(), *self.depth_inputs.values()):
            camera_input.stop()
        runtime = self.runtime
        if runtime is None:
            return
        if not runtime.stop(STOP_TIMEOUT_S):
            how = "within one token" if runtime.engine.capabilities.stop_within_token else "(it stops between clips)"
            self.get_logger().warning(f"the engine call did not stop within {STOP_TIMEOUT_S} s {how}; it is "
                                      "abandoned and its results are dropped")
        self.visuals.stop(STOP_TIMEOUT_S)
        # open tracks and events end here: their last report is final (the publishers are still enabled). After
        # SIGINT/SIGTERM the context is already shut down and nothing can be published any more.
        closing = runtime.finish()
        if self.history is not None:
            for camera, results in closing.items():
                self.history.record(camera, results)
        if self.context.ok():
            try:
                for camera, results in closing.items():
                    if camera in self._outputs:
                        self._outputs[camera].publish(results)
            except Exception as error:  # noqa: BLE001 - the context went down meanwhile; shutting down anyway
                self.get_logger().warning(f"final track/event reports not published: {error}")
        for name, stream in runtime.streams.items():
            self._store(name, stream.clip_between(0, 0)[0])  # the frames kept after the last clip
            stream.reset_buffer("deactivate")
        runtime.engine.clear_cache()

    def _release(self) -> None:
        for outputs in self._outputs.values():
            outputs.destroy()
        self._outputs = {}
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.engine.unload()
        history, self.history = self.history, None
        if history is not None:
            history.close()
        if self.model_state == "loaded":
            self.model_state = "not loaded"

    # ---- frames and results ------------------------------------------------------------------------------
    def _stream(self, camera: str) -> Stream | None:
        runtime = self.runtime
        return runtime.streams.get(camera) if runtime is not None else None

    def _accepts(self, camera: str, stamp_ns: int) -> str:
        runtime = self.runtime
        if runtime is None or self.lifecycle_state != "active":
            return "inactive"
        return runtime.accepts(camera, stamp_ns)

    def _push(self, camera: str, frame: Frame) -> None:
        runtime = self.runtime
        if runtime is not None and self.lifecycle_state == "active":
            self._store(camera, runtime.push(camera, frame))

    def _store(self, camera: str, clip: Clip | None) -> None:
        """Offer a clip's newly kept frames to the history (never blocks: a full write queue drops, counted)."""
        history, stream = self.history, self._stream(camera)
        if history is not None and clip is not None and stream is not None:
            history.offer_clip(camera, clip, stream.depth.store.depth_for if stream.depth else None)

    def _on_results(self, clip: Clip, results: list[QueryResult]) -> None:
        """Runtime worker: publish one window's results on its camera's topics; the visuals are drawn later."""
        outputs = self._outputs.get(clip.stream)
        if outputs is None or self.lifecycle_state != "active":
            return
        outputs.publish(results)
        if self.history is not None:
            self.history.record(clip.stream, results)
        latency = max((r.inference_s for r in results), default=0.0)
        self._status.stats[clip.stream].add(latency, (self.get_clock().now().nanoseconds - clip.end_ns) / NS_PER_S)
        self.visuals.submit(clip.stream, clip, results)

    def _draw(self, camera: str, clip: Clip, results: list[QueryResult]) -> None:
        """The visuals thread: overlay and image markers of one window."""
        outputs = self._outputs.get(camera)
        if outputs is not None and self.lifecycle_state == "active":
            outputs.publish_visuals(clip, results, self.get_parameter("overlay.max_trail").value,
                                    self.get_parameter("overlay.marker_lifetime_s").value)

    def _on_runtime_error(self, message: str) -> None:
        self.error = message  # shown as last_error on /diagnostics (the log line is throttled)
        self.get_logger().error(message, throttle_duration_sec=THROTTLE_S)

    # ---- 1 Hz: inputs and diagnostics --------------------------------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        for camera_input in (*self.inputs.values(), *self.depth_inputs.values()):
            camera_input.tick(now, self.lifecycle_state == "active")
        if (self.heap.trim_every(self.get_parameter("heap_trim_period_s").value, now)
                and self.get_parameter("release_dds_shared_pages").value):
            self.shared_pages.release()
        self._diag_pub.publish(self._status.array(self, convert.header(self.get_clock().now().nanoseconds, "")))
