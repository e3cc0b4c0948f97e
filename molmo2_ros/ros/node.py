"""The molmo2 lifecycle node: a thin ROS shell over the core runtime (`molmo2_ros.core.runtime`).

One node, one copy of the model, one or more cameras (`cameras` parameter). The runtime owns the scheduling
(`schedule`: live | every_window), the worker thread and the engine calls; this node owns parameters,
subscriptions (`camera_input.py`), publishers (`outputs.py`), the query service and action (`query_server.py`)
and /diagnostics (`diagnostics.py`).

Lifecycle:
- configure: read parameters, load the engine (model, vLLM client or `engine_plugin`), warm it up on a dummy clip,
  make one stream per camera and the output publishers. A failure (e.g. a bad model folder) logs the reason and
  leaves the node unconfigured (also on /diagnostics).
- activate: start the runtime's worker, subscribe to the cameras, enable the publishers.
- deactivate: unsubscribe, stop the runtime (a running generation stops within one decode step), drop buffered
  frames and the engine's cached vision features. The model stays loaded (re-activation is instant).
- cleanup: unload the model (GPU memory back to the driver) and remove the publishers.
The `autostart` parameter (default true) walks the node to active by itself.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from molmo2_ros.core.engine_factory import make_engine
from molmo2_ros.core.engine_interface import Engine
from molmo2_ros.core.heap import HeapTrimmer
from molmo2_ros.core.queries import dump_queries, parse_queries
from molmo2_ros.core.runtime import Runtime
from molmo2_ros.core.sampling import plan_clip
from molmo2_ros.core.schedule import make_policy
from molmo2_ros.core.settings import (CAMERA_SETTINGS, SPECS, camera_queries, check_all, check_value, defaults,
                                      grounding_config, memory_setting, parse_cameras, pipeline_config)
from molmo2_ros.core.stream import Stream
from molmo2_ros.core.types import NS_PER_S, Clip, Frame, Query, QueryResult, TaskKind

from . import convert, diagnostics
from .camera_input import CameraInput
from .depth_input import DepthInput
from .executor import HandOffExecutor
from .outputs import CameraOutputs
from .outputs_3d import DepthCameraOutputs
from .params import ACTIVATE_TIME, CAMERA_PARAMS, CONFIGURE_TIME, camera_descriptor, descriptor
from .query_server import QueryServer

THROTTLE_S = 5.0
STOP_TIMEOUT_S = 2.0  # how long deactivate/shutdown wait for an engine call that cannot stop within a token
TICK_S = 1.0  # inputs' health checks, diagnostics and heap trims


class Molmo2Node(LifecycleNode):
    """Lifecycle node streaming Molmo2 grounding results of one or more cameras; see the module docstring."""

    def __init__(self, node_name: str = "molmo2", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        # The preset's values are the declared defaults: a params file or command line value still wins.
        self._setup_error = ""
        preset = self.declare_parameter("preset", "", descriptor("preset")).value
        try:
            initial = defaults(preset)
        except ValueError as error:
            initial, self._setup_error = defaults(), str(error)
        for name in SPECS:
            if name != "preset":
                self.declare_parameter(name, initial[name], descriptor(name))
        try:
            self.cameras = parse_cameras(self.get_parameter("cameras").value)
        except ValueError as error:
            self.cameras, self._setup_error = [""], self._setup_error or str(error)
        for camera in self.cameras:
            if camera:
                for name in CAMERA_PARAMS:
                    default = "" if name == "queries" else self.get_parameter(name).value
                    self.declare_parameter(f"{camera}.{name}", default, camera_descriptor(camera, name))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        sys.setswitchinterval(self.get_parameter("gil_switch_interval_ms").value / 1e3)
        self.lifecycle_state = "unconfigured"
        self._model_state = "not loaded"
        self._error = ""
        self.runtime: Runtime | None = None
        self._model_loads = 0
        self._outputs: dict[str, CameraOutputs] = {}
        self._stats: dict[str, diagnostics.WindowStats] = {}
        self._rises = diagnostics.Rises()
        self._heap, self._heap_trimmed = HeapTrimmer(), time.monotonic()

        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._inputs = {c: CameraInput(self, c, self._accepts, self._push, MutuallyExclusiveCallbackGroup())
                        for c in self.cameras}
        self._depth_inputs = {c: DepthInput(self, c, self._stream, MutuallyExclusiveCallbackGroup())
                              for c in self.cameras}
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(TICK_S, self._on_tick, self._timer_group, clock=steady)
        self._query_server = QueryServer(self, self._service_group)
        self._autostart_timer = None
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart, self._timer_group, clock=steady)

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

    def _on_set_parameters(self, params) -> SetParametersResult:
        values = self._values()
        changed = {p.name: p.value for p in params}
        values.update({k: v for k, v in changed.items() if k in SPECS})
        for name, value in changed.items():
            base = name.split(".", 1)[1] if name.split(".", 1)[0] in self.cameras and "." in name else name
            if base not in SPECS:
                continue
            reason = check_value(base, value, values)
            if not reason and base in CONFIGURE_TIME and self.lifecycle_state != "unconfigured":
                reason = (f"{name} is read when the node configures; it is {self.lifecycle_state} now: "
                          "deactivate and clean up first")
            if not reason and base in ACTIVATE_TIME and self.lifecycle_state == "active":
                reason = f"{name} is read when the node activates; deactivate first"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if self.runtime is not None:
            reason = self._apply_runtime(changed, values)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_runtime(self, changed: dict, values: dict) -> str:
        """Apply run-time parameters to the configured runtime (from the next window on); '' or why not."""
        runtime = self.runtime
        if {"queries", *(f"{c}.queries" for c in self.cameras if c)} & changed.keys():
            reason = self._apply_queries(values, self._camera_values(changed))
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

    # ---- standing queries (parameters are the source of truth) -------------------------------------------
    def _camera_values(self, overrides: dict[str, object] | None = None) -> dict[str, dict[str, object]]:
        """Each named camera's own CAMERA_SETTINGS (`<camera>.<name>` parameters), `overrides` applied."""
        overrides = overrides or {}
        return {c: {n: overrides.get(f"{c}.{n}", self.get_parameter(f"{c}.{n}").value) for n in CAMERA_SETTINGS}
                for c in self.cameras if c}

    def _apply_queries(self, values: dict, camera_values: dict[str, dict[str, object]]) -> str:
        """Make every camera's standing queries and publishers match the query parameters; '' or why not
        (nothing changes then)."""
        try:
            desired = camera_queries(values, self.cameras, camera_values)
        except ValueError as error:
            return str(error)
        active = self.lifecycle_state == "active"
        plans = []
        for camera, queries in desired.items():
            stream = self.runtime.streams[camera]
            current = {q.id: q for q in stream.queries}
            wanted = {q.id: q for q in queries}
            add = [q for q in queries if current.get(q.id) != q]
            remove = [i for i, q in current.items() if wanted.get(i) != q]
            plans.append((camera, stream, add, remove))
        created = []
        try:
            for camera, _, add, _ in plans:
                for query in add:
                    self._outputs[camera].add(query, active)
                    created.append((camera, query.id))
        except Exception as error:  # noqa: BLE001 - e.g. an invalid topic name
            for camera, query_id in created:
                self._outputs[camera].remove(query_id)
            return f"cannot create the publishers of a query: {error}"
        for camera, stream, add, remove in plans:
            for query_id in remove:
                stream.remove_query(query_id)
                if query_id not in {q.id for q in add}:
                    self._outputs[camera].remove(query_id)
            for query in add:
                stream.add_query(query)
        return ""

    def standing_queries(self, camera: str) -> list[Query]:
        """The standing queries that ManageQueries edits for `camera` ("" = the shared list)."""
        if camera and camera not in self.cameras:
            raise ValueError(f"unknown camera '{camera}' (cameras: {', '.join(c for c in self.cameras if c)})")
        text = self.get_parameter(f"{camera}.queries").value if camera else ""
        if camera and not text.strip():
            raise ValueError(f"camera '{camera}' uses the shared queries: manage them with an empty camera field")
        return parse_queries(text if camera else self.get_parameter("queries").value,
                             self.get_parameter("max_query_chars").value, f"{camera}.queries" if camera else "queries")

    def set_standing_queries(self, camera: str, queries: list[Query]) -> str:
        """Set the query parameter of `camera` ("" = shared); the parameter callback applies it. '' or why not."""
        if self.lifecycle_state == "unconfigured":
            return "the node is unconfigured: standing queries exist once it is configured"
        name = f"{camera}.queries" if camera else "queries"
        result = self.set_parameters([Parameter(name, value=dump_queries(queries))])[0]
        return "" if result.successful else result.reason

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._values()
        engine = None
        try:
            reason = self._setup_error or check_all(values)
            if reason:
                raise ValueError(reason)
            config = pipeline_config(values, self.cameras, self._camera_values())
            queries = config.queries
            self._check_memory(values, config.engine_config.model, max((len(q) for q in queries.values()), default=0))
            self._model_state = "loading"
            started = time.monotonic()
            engine = make_engine(config.engine, config.engine_config, config.engine_plugin)
            engine.load()
            self._model_loads += 1
            self._warm_up(engine, config.streams[self.cameras[0]].slowfast)
            streams = [Stream(c, queries[c], config.streams[c]) for c in self.cameras]
            runtime = Runtime(engine, streams, make_policy(config.schedule, config.max_pending_mb),
                              batch_streams=config.batch_cameras)
            outputs = {c: (DepthCameraOutputs if config.streams[c].depth.enabled else CameraOutputs)(self, c)
                       for c in self.cameras}
            for camera, own in queries.items():
                for query in own:
                    outputs[camera].add(query, active=False)
        except Exception as error:  # noqa: BLE001 - any failure leaves the node unconfigured, alive
            self._error = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            self._model_state = "failed"
            self.get_logger().error(f"configure failed, node stays unconfigured: {self._error}")
            for out in locals().get("outputs", {}).values():
                out.destroy()
            if engine is not None:
                engine.unload()
            return TransitionCallbackReturn.FAILURE
        self.runtime, self._outputs, self._error = runtime, outputs, ""
        self._stats = {c: diagnostics.WindowStats() for c in self.cameras}
        self._model_state = "loaded"
        self.lifecycle_state = "inactive"
        summary = "; ".join(f"{c or 'camera'}: {', '.join(q.id for q in queries[c]) or 'no queries'}"
                            for c in self.cameras)
        self.get_logger().info(f"configured: model '{engine.model_id}' loaded and warmed up in "
                               f"{time.monotonic() - started:.1f} s; {summary}")
        return TransitionCallbackReturn.SUCCESS

    def _check_memory(self, values: dict, model: str, queries: int) -> None:
        """Refuse a setting that cannot fit the GPU (core/memory_plan.py), before loading anything. Only for the
        local transformers engine on CUDA; a model whose configuration is not known without downloading it is
        checked after loading instead (a CUDA out-of-memory error then names the device)."""
        if values["engine"] != "transformers" or values["engine_plugin"]:
            return
        import torch

        from molmo2_ros.core import memory_plan
        from molmo2_ros.core.engine import resolve_device

        device = resolve_device(values["device"])
        if device.type != "cuda":
            return
        setting = memory_setting(values, queries)
        setting = dataclasses.replace(setting, cameras=len(self.cameras))
        try:
            message = memory_plan.refusal(model, setting, *torch.cuda.mem_get_info(device))
        except ValueError as error:
            self.get_logger().info(f"memory plan skipped: {error}")
            return
        if message:
            raise ValueError(f"the setting does not fit {device}: {message}")

    def _warm_up(self, engine: Engine, slowfast) -> None:
        """One tiny inference so that the first real clip does not pay for lazy initialisation."""
        black = np.zeros((378, 378, 3), np.uint8)
        frames = [(i, Frame(stamp_ns=i + 1, image=black, frame_id="warmup")) for i in range(2)]
        clip = plan_clip(frames, -1, 2, slowfast, epoch=-1, stream="warmup")
        inference = engine.infer(clip, [Query("warmup", TaskKind.CAPTION)], 1)
        engine.clear_cache()
        if inference.error:
            raise RuntimeError(f"warm-up inference failed: {inference.error}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.runtime.start(self._on_results, self._on_runtime_error)
        self.lifecycle_state = "active"
        for camera_input in (*self._inputs.values(), *self._depth_inputs.values()):
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

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        return TransitionCallbackReturn.SUCCESS

    def teardown(self) -> None:
        """Stop everything and unload the model (shutdown, error, process exit)."""
        self._stop_streaming()
        self._release()
        self.lifecycle_state = "unconfigured"

    def _stop_streaming(self) -> None:
        for camera_input in (*self._inputs.values(), *self._depth_inputs.values()):
            camera_input.stop()
        runtime = self.runtime
        if runtime is None:
            return
        if not runtime.stop(STOP_TIMEOUT_S):
            self.get_logger().warning(f"the engine call did not stop within {STOP_TIMEOUT_S} s (its engine cannot "
                                      "stop between tokens); it is abandoned and its results are dropped")
        # open tracks and events end here: their last report is final (the publishers are still enabled). After
        # SIGINT/SIGTERM the context is already shut down and nothing can be published any more.
        closing = runtime.finish()
        if self.context.ok():
            try:
                for camera, results in closing.items():
                    if camera in self._outputs:
                        self._outputs[camera].publish(results)
            except Exception as error:  # noqa: BLE001 - the context went down meanwhile; shutting down anyway
                self.get_logger().warning(f"final track/event reports not published: {error}")
        for stream in runtime.streams.values():
            stream.reset_buffer("deactivate")
        runtime.engine.clear_cache()

    def _release(self) -> None:
        for outputs in self._outputs.values():
            outputs.destroy()
        self._outputs = {}
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.engine.unload()
        if self._model_state == "loaded":
            self._model_state = "not loaded"

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
            runtime.push(camera, frame)

    def _on_results(self, clip: Clip, results: list[QueryResult]) -> None:
        """Runtime worker: publish one window's results on its camera's topics."""
        outputs = self._outputs.get(clip.stream)
        if outputs is None or self.lifecycle_state != "active":
            return
        outputs.publish(results)
        latency = max((r.inference_s for r in results), default=0.0)
        self._stats[clip.stream].add(latency, (self.get_clock().now().nanoseconds - clip.end_ns) / NS_PER_S)
        outputs.publish_visuals(clip, results, self.get_parameter("overlay.max_trail").value,
                                self.get_parameter("overlay.marker_lifetime_s").value)

    def _on_runtime_error(self, message: str) -> None:
        self._error = message  # shown as last_error on /diagnostics (the log line is throttled)
        self.get_logger().error(message, throttle_duration_sec=THROTTLE_S)

    # ---- 1 Hz: inputs and diagnostics --------------------------------------------------------------------
    def _on_tick(self) -> None:
        now = time.monotonic()
        for camera_input in (*self._inputs.values(), *self._depth_inputs.values()):
            camera_input.tick(now, self.lifecycle_state == "active")
        period = self.get_parameter("heap_trim_period_s").value
        if period > 0 and now - self._heap_trimmed >= period - TICK_S / 2:  # on the tick nearest the period
            self._heap.trim()
            self._heap_trimmed = now
        self._diag_pub.publish(self._diagnostics())

    def _diagnostics(self) -> DiagnosticArray:
        runtime = self.runtime
        name = self.get_fully_qualified_name()
        model = str(self.get_parameter("model").value or self.get_parameter("engine_plugin").value)
        node_values: dict[str, object] = {
            "state": self.lifecycle_state, "model_state": self._model_state, "model": model,
            "cameras": ", ".join(c or "(unnamed)" for c in self.cameras),
            "model_loads": self._model_loads, "schedule": self.get_parameter("schedule").value,
            "active_goals": self._query_server.active_goals,
            "threads": threading.active_count(), "last_error": self._error,
            "gil_switch_interval_ms": f"{sys.getswitchinterval() * 1e3:.3f}", **self._heap.values(),
        }
        level, message = diagnostics.OK, self.lifecycle_state if self.lifecycle_state != "active" else "ok"
        camera_statuses = []
        if runtime is not None:
            pending, pinned = runtime.pending()
            memory = runtime.engine.memory_report()
            node_values.update({"pending_clips": pending, "pending_mb": f"{pinned / 2**20:.1f}",
                                "device": memory.device, "gpu_memory_mb": f"{memory.allocated_mb:.1f}",
                                "gpu_reserved_mb": f"{memory.reserved_mb:.1f}", "cached_frames": memory.cached_frames})
            node_values.update(runtime.engine.diagnostics())
            counts = runtime.counters.snapshot()
            node_values.update(sorted(counts.items()))
            if self._rises.rose("worker_errors", counts.get("worker_errors", 0)):
                level, message = diagnostics.WARN, f"worker error: {runtime.last_error}"
            for camera in self.cameras:
                camera_statuses.append(self._camera_status(name, camera, runtime))
        if self._model_state == "failed":
            level, message = diagnostics.ERROR, f"configure failed: {self._error}"
        hardware = node_values.get("device") or model
        statuses = [diagnostics.status(diagnostics.node_status_name(name), str(hardware), level, message,
                                       node_values), *camera_statuses]
        return DiagnosticArray(header=convert.header(self.get_clock().now().nanoseconds, ""), status=statuses)

    def _camera_status(self, node_name: str, camera: str, runtime: Runtime):
        stream = runtime.streams[camera]
        camera_input = self._inputs[camera]
        counts = {**camera_input.counters.snapshot(), **stream.counter_snapshot()}
        values: dict[str, object] = {"camera": camera or "(unnamed)", **camera_input.stats(),
                                     **self._stats[camera].values(), "standing_queries": len(stream.queries)}
        for key in ("frames_received", "windows_processed", "windows_skipped", "windows_dropped_budget",
                    "windows_stopped", "inference_errors"):
            values[key] = counts.get(key, 0)
        dropped = sum(v for k, v in counts.items() if k.startswith(("bad_", "buffer_dropped_")))
        values["frames_dropped"] = dropped
        depth = self._depth_inputs[camera]
        if depth.enabled:
            values.update(depth.values())
        values.update(sorted((k, v) for k, v in counts.items() if k not in values))
        level, message = diagnostics.OK, "ok"
        stride = self.get_parameter("stride_s").value
        p50 = self._stats[camera].latency_p50()
        key = f"{camera}:"
        if self.lifecycle_state != "active":
            message = self.lifecycle_state
        elif camera_input.silent:
            level, message = diagnostics.WARN, f"no frames on {camera_input.topic}"
        elif self._rises.rose(key + "bad", sum(v for k, v in counts.items() if k.startswith("bad_"))):
            level, message = diagnostics.WARN, "bad frames dropped (see the bad_* counts)"
        elif self._rises.rose(key + "errors", counts.get("inference_errors", 0)):
            level, message = diagnostics.WARN, f"inference failed: {runtime.last_error}"
        elif depth_warning := depth.warning():
            level, message = diagnostics.WARN, depth_warning
        elif p50 is not None and p50 > stride:
            level, message = diagnostics.WARN, (f"inference p50 {p50:.2f} s is slower than the stride "
                                                f"({stride:.2f} s): windows are skipped")
        return diagnostics.status(diagnostics.camera_status_name(node_name, camera), camera_input.topic, level,
                                  message, values)


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
    executor = executor_class(num_threads=max(6, (os.cpu_count() or 2) + 2) + len(node.cameras))
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


def run() -> None:
    """Process entry point: main(), then leave without the interpreter's finalization. Everything is already shut
    down and flushed; tearing down torch and transformers modules at interpreter exit took another 2-6 s on a
    loaded 2-core host, which broke the 5 s SIGINT/SIGTERM exit bound (measured with the old and the new node)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
