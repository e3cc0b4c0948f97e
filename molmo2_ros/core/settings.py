"""The pipeline's settings: ONE table of named settings that the node's ROS parameters and the command line's
flags both map onto (same names, defaults, ranges and checks), model presets filled in under them, and the
configurations built from them (`pipeline_config`). Pure Python: importing this imports no rclpy and no torch.

Names are the node's parameter names (`window_s`, `slowfast.enabled`, ...). A value comes from, highest first: an
explicit parameter or flag, the preset (`preset`, core/presets.py), the default in `SPECS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from . import memory_plan
from .clip_buffer import MAX_SAMPLE_FPS, BufferConfig
from .depth import DepthConfig
from .engine_config import ENGINE_KINDS, EngineConfig, VllmConfig, check_server_url
from .presets import load_preset, preset_names, resolve_model
from .queries import parse_queries
from .sampling import SlowFastConfig
from .schedule import SCHEDULES
from .stream import GroundingConfig, StreamConfig
from .types import Query

QOS_CHOICES = ("auto", "sensor_data", "reliable")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATION_CHOICES = ("none", "int8", "int4")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CAMERA = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Namespaces of the node's own dotted parameters cannot name a camera (its `<camera>.<name>` would collide).
_RESERVED_CAMERAS = {"slowfast", "track", "event", "overlay", "qos", "use_sim_time", "depth", "history",
                     "vision_msgs"}


@dataclass(frozen=True)
class Spec:
    default: object
    description: str
    low: float | int | None = None
    high: float | int | None = None
    read_only: bool = False
    dynamic_typing: bool = False


SPECS: dict[str, Spec] = {
    "preset": Spec("", "Model preset filling in the settings that go with one model (model, clip window and stride, "
                       "sampling, SlowFast, max_new_tokens, dtype, device): tiny (the tiny model shipped with the "
                       "package), molmo2-4b, molmo2-8b, molmo2-o-7b (molmo2_ros/presets/). Parameters given "
                       "explicitly override it. Empty = none. Set at start-up.", read_only=True),
    "engine": Spec("transformers", "transformers (the model runs in this process) | vllm (a vLLM server, see "
                                   "server_url; README 'Serving on vLLM')."),
    "model": Spec("", "Hugging Face Hub id (e.g. allenai/Molmo2-4B), local model folder, or the name of a model "
                      "shipped with the package (molmo2-tiny-synthetic). Nothing is "
                      "downloaded when HF_HUB_OFFLINE=1. With engine vllm: the served model name (empty = the "
                      "server's first model)."),
    "server_url": Spec("", "engine vllm: the server's OpenAI-compatible URL, http(s)://host:port/v1."),
    "api_key_env": Spec("", "engine vllm: name of the environment variable holding the server's API key "
                            "(never logged)."),
    "api_key_file": Spec("", "engine vllm: file holding the server's API key (alternative to api_key_env)."),
    "request_timeout_s": Spec(60.0, "engine vllm: limit for one request (a timed-out window is counted and "
                                    "skipped).", 0.1, 3600.0),
    "max_inflight": Spec(8, "engine vllm: most requests in flight from this node (queries x cameras).", 1, 256),
    "revision": Spec("", "Pinned Hub revision (commit hash or tag); empty = default branch."),
    "device": Spec("auto", "auto | cpu | cuda | cuda:N."),
    "dtype": Spec("auto", "auto (bfloat16 on CUDA, float32 on CPU) | bfloat16 | float16 | float32."),
    "attn_implementation": Spec("", "transformers attention backend (sdpa, eager, flash_attention_2); "
                                    "empty = transformers' default."),
    "quantization": Spec("none", "Weights of the text model's linear layers: none | int8 | int4 (bitsandbytes "
                                 "LLM.int8 / NF4 through transformers; vision encoder and lm_head stay in dtype). "
                                 "Molmo2-8B weights: 16.1 GiB bf16, 9.7 GiB int8, 6.5 GiB int4 (`molmo2-ros plan`). "
                                 "Answers change slightly; check on your data."),
    "engine_plugin": Spec("", "Testing/extension hook: 'module:Class' of an engine (a molmo2_ros.core."
                              "engine_interface.Engine) constructed as Class(EngineConfig); empty = Molmo2Engine.",
                          read_only=True),
    "cameras": Spec("", "Camera streams served by this node's one model: a list of names (e.g. [front, wrist]) "
                        "or a comma-separated string. Empty = one unnamed camera (input 'image', outputs ~/...). "
                        "Each camera N reads N/image and publishes under ~/N/...", read_only=True,
                    dynamic_typing=True),
    "schedule": Spec("live", "live: run the newest window of each camera, count skipped ones (robots); "
                             "every_window: run every window in order (bag replay, simulation; pair it with "
                             "use_sim_time and a deep input_depth)."),
    "max_pending_mb": Spec(1024.0, "every_window: most MiB of frames that waiting windows may pin; past it the "
                                   "oldest waiting window is dropped and counted (windows_dropped_budget).",
                           1.0, 1_000_000.0),
    "batch_cameras": Spec(True, "Run the windows of cameras that are due together in one model call (one prefill "
                                "and one decode batch; same tokens as one call per camera)."),
    "max_new_tokens": Spec(256, "Generation limit per query and clip.", 1, 8192),
    "window_s": Spec(8.0, "Clip length in seconds of source time.", 0.1, 600.0),
    "stride_s": Spec(1.0, "Seconds of source time between clips.", 0.05, 600.0),
    "sample_fps": Spec(2.0, "Frames per second kept for the model (Molmo2 was trained at <= 2).",
                       0.01, MAX_SAMPLE_FPS),
    "max_frames": Spec(128, "Most frames per clip.", 1, 128),
    "slowfast.enabled": Spec(True, "SlowFast pooling: key frames get slow_pooling, others fast_pooling (default "
                                   "3x3 keys + 5x5 others: 47 visual tokens per frame, 1.7x fewer than uniform). "
                                   "Off = Molmo2's released uniform 3x3 (81 tokens per frame). RISK: the released "
                                   "models never saw 5x5 (or 2x2) video pooling nor mixed poolings in training; "
                                   "compare on your data with `molmo2-ros replay` + `eval`. Always off with engine vllm (the "
                                   "server pools every frame alike)."),
    "slowfast.slow_pooling": Spec(3, "Pooling (NxN patches) of key frames (3 = released, 81 tokens; 2 = the "
                                     "'detail' plan, 196 tokens). Poolings other than 3 were never trained.", 1, 9),
    "slowfast.fast_pooling": Spec(5, "Pooling (NxN patches) of other frames (5 = 36 tokens, never trained; 3 = "
                                     "released, 81 tokens).", 1, 9),
    "slowfast.key_every": Spec(4, "Every Nth sampled frame is a key frame.", 1, 128),
    "qos": Spec("auto", "Input QoS: sensor_data (best effort) | reliable | auto (match the publishers' "
                        "reliability, re-checked until a publisher appears)."),
    "input_depth": Spec(15, "Input queue (KEEP_LAST depth): frames held while the executor is busy (15 = 0.5 s at "
                            "30 Hz). For bag replay under use_sim_time, where every frame counts, raise it (e.g. 100).",
                        1, 1000),
    "gil_switch_interval_ms": Spec(5.0, "Python's GIL switch interval for the node process (5 ms is Python's "
                                        "default; smaller values cost engine time with several cameras, "
                                        "bench/README.md). Set at start-up.", 0.05, 100.0, read_only=True),
    "heap_trim_period_s": Spec(2.0, "Give freed heap memory back to the OS this often (glibc malloc_trim; 0 = "
                                    "never, and no shared-page release either; rounded to the node's 1 s tick): "
                                    "glibc keeps freed frame buffers otherwise. A call takes ~5 ms and delays image "
                                    "callbacks meanwhile; longer periods let RSS saw-tooth (bench/README.md). Under "
                                    "a preloaded tcmalloc (the launch's default) or jemalloc there is nothing to "
                                    "trim; the period still paces release_dds_shared_pages.", 0.0, 3600.0),
    "release_dds_shared_pages": Spec(True, "Every heap_trim_period_s, drop the node's page-table entries of the "
                                           "Fast DDS shared-memory segments it maps (madvise MADV_DONTNEED on shared "
                                           "mappings: no data is lost or freed, the pages stay in the publishers' "
                                           "segments). Without it RSS counts every segment page the node ever read "
                                           "and rises over hours up to the segments' size (bench/README.md; "
                                           "molmo2_ros/core/shared_pages.py)."),
    "intake_deserialize_all": Spec(False, "Deserialize every camera message (a comparison mode for bench_node). "
                                          "Default: read the stamp from the serialized message and deserialize "
                                          "only the frames the clip buffer keeps (2 of every 30 at 30 Hz)."),
    "input_compressed": Spec(False, "Subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image."),
    "no_frame_warn_s": Spec(5.0, "Warn when no frame arrived for this many seconds.", 0.5, 3600.0),
    "max_query_chars": Spec(500, "Longest query text accepted.", 1, 10000),
    "max_points": Spec(256, "Points kept per answer.", 1, 10000),
    "track.gate_frac": Spec(0.05, "Track association gate as a fraction of the image diagonal.", 0.001, 1.0),
    "track.lost_timeout_s": Spec(2.0, "A track unseen for this long ends (its id is never reused).", 0.0, 3600.0),
    "event.max_gap_s": Spec(1.0, "Moments of an event at most this far apart form one event.", 0.0, 3600.0),
    "autostart": Spec(True, "Configure and activate by itself at start-up (false: wait for a lifecycle "
                            "manager).", read_only=True),
    "overlay.max_trail": Spec(32, "Trajectory points drawn per track on ~/overlay.", 1, 4096),
    "overlay.marker_lifetime_s": Spec(2.0, "Lifetime of the image markers on ~/markers: what the node stops "
                                           "reporting disappears after this long (0 = never).", 0.0, 3600.0),
    "depth.enabled": Spec(False, "Lift grounded points to 3D from the aligned depth image `<camera>/depth` (16UC1 "
                                 "mm or 32FC1 m) and `<camera>/camera_info`; outputs ~/points3d/<id>, "
                                 "~/tracks3d/<id>, ~/events3d/<id>, ~/markers3d (README: 3D for planners)."),
    "depth.max_dt_s": Spec(0.02, "Largest |depth stamp - colour stamp| matched when the stamps differ (0 = exact).",
                           0.0, 1.0),
    "depth.min_m": Spec(0.1, "Depth below this (metres) is invalid.", 0.0, 1000.0),
    "depth.max_m": Spec(10.0, "Depth above this (metres) is invalid.", 0.001, 1000.0),
    "depth.wait_s": Spec(0.1, "How long lifting a clip waits for the depth frame of its newest colour frame (a depth "
                              "topic trails its colour image; a fast answer may come first). 0 = no wait.",
                         0.0, 1.0),
    "depth.window_px": Spec(5, "Side of the square depth look-up window around a point, in colour pixels (scaled to "
                               "the depth resolution).", 1, 101),
    "history.enabled": Spec(False, "Record a bounded on-disk video history of every camera (sampled frames, aligned "
                                   "depth, and every grounded output of the standing queries as sightings) so the "
                                   "Query action can ask about the past and ~/recall can say where and when a thing "
                                   "was last seen. Off by default: it records video (README 'Rewind').",
                            read_only=True),
    "history.path": Spec("", "Folder of the history (created 0700, files 0600). Empty = $ROS_HOME/molmo2_history/"
                             "<node name> (ROS_HOME defaults to ~/.ros).", read_only=True),
    "history.max_age_s": Spec(3600.0, "Frames older than this (source time, behind the newest stored frame) are "
                                      "evicted, oldest first.", 1.0, 30 * 86400.0),
    "history.max_gb": Spec(2.0, "Largest size of the stored frames on disk; the oldest frames are evicted above it.",
                           0.001, 10000.0),
    "history.fps": Spec(2.0, "Stored frames per second of source time per camera (at most sample_fps: only sampled "
                             "frames are stored).", 0.05, 30.0),
    "history.max_side_px": Spec(640, "Longest side of a stored frame (larger frames are scaled down; answers still "
                                     "give pixel positions in the original image).", 64, 8192),
    "history.feature_cache_mb": Spec(256.0, "Vision features of frames the standing queries already encoded, kept "
                                            "in host memory for rewind questions (they are not encoded again while "
                                            "cached; exact as on the live path). The process grows by up to this "
                                            "much as it fills (diagnostics feature_cache_host_mb); 0 = only the "
                                            "live window's features.",
                                     0.0, 1e6),
    "vision_msgs.enabled": Spec(True, "Also publish vision_msgs/Detection2DArray (points and tracks) and "
                                      "Detection3DArray (lifted points) per query when vision_msgs is installed "
                                      "(README 'For planners')."),
    "vision_msgs.box_px": Spec(32.0, "Side of the square vision_msgs/Detection2D box centred on each grounded point, "
                                     "pixels of the original image (Molmo2 grounds points, not boxes; README "
                                     "'Standard outputs (vision_msgs)').", 1.0, 4096.0),
    "queries": Spec("", "Standing queries: YAML list of {id, task, text, topic} (see the package README). Shared "
                        "by every camera without its own <camera>.queries; reflects ManageQueries changes."),
}

def parse_cameras(value: object) -> list[str]:
    """Camera names from the `cameras` parameter (list or comma-separated string); [""] = one unnamed camera.
    ValueError says what is wrong."""
    if value is None or value == "" or value == [] or value == [""]:
        return [""]
    names = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else \
        [v.strip() for v in str(value).replace(";", ",").split(",") if v.strip()]
    for name in names:
        if not _CAMERA.match(name):
            raise ValueError(f"camera name '{name}' must start with a letter and hold only letters, digits and "
                             "'_' (it becomes a topic namespace)")
        if name in _RESERVED_CAMERAS:
            raise ValueError(f"camera name '{name}' is reserved (a parameter namespace of the node): rename it")
    if len(set(names)) != len(names):
        raise ValueError(f"cameras: duplicate names in {names}")
    return names or [""]


def check_value(name: str, value: object, values: Mapping[str, object]) -> str:
    """Reason why `value` is invalid for parameter `name` (given the other current values), or ''."""
    spec = SPECS.get(name)
    if spec is None:
        return ""
    if spec.low is not None and not spec.low <= value <= spec.high:  # type: ignore[operator]
        return f"{name} must be in [{spec.low}, {spec.high}], got {value}"
    if name == "device" and not _DEVICE.match(str(value)):
        return f"device must be auto, cpu, cuda or cuda:N, got '{value}'"
    if name == "dtype" and value not in DTYPE_CHOICES:
        return f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got '{value}'"
    if name == "quantization" and value not in QUANTIZATION_CHOICES:
        return f"quantization must be one of {', '.join(QUANTIZATION_CHOICES)}, got '{value}'"
    if name == "qos" and value not in QOS_CHOICES:
        return f"qos must be one of {', '.join(QOS_CHOICES)}, got '{value}'"
    if name == "engine" and value not in ENGINE_KINDS:
        return f"engine must be one of {', '.join(ENGINE_KINDS)}, got '{value}'"
    if name == "server_url" and values.get("engine") == "vllm":
        return check_server_url(str(value))
    if name == "engine_plugin" and value and not _PLUGIN.match(str(value)):
        return f"engine_plugin must be 'module:Class', got '{value}'"
    if name == "preset" and value and value not in preset_names():
        return f"unknown preset '{value}' (presets: {', '.join(preset_names())})"
    if name == "schedule" and value not in SCHEDULES:
        return f"schedule must be one of {', '.join(SCHEDULES)}, got '{value}'"
    if name == "queries":
        try:
            parse_queries(str(value), int(values["max_query_chars"]))
        except ValueError as error:
            return str(error)
    if name == "cameras":
        try:
            parse_cameras(value)
        except ValueError as error:
            return str(error)
    return ""


def check_all(values: Mapping[str, object]) -> str:
    """First problem across all parameters (including combinations), or ''."""
    for name, value in values.items():
        reason = check_value(name, value, values)
        if reason:
            return reason
    if values["window_s"] < values["stride_s"]:  # type: ignore[operator]
        return f"window_s ({values['window_s']}) must be >= stride_s ({values['stride_s']})"
    if values["history.enabled"] and values["history.fps"] > values["sample_fps"]:  # type: ignore[operator]
        return (f"history.fps ({values['history.fps']}) must be <= sample_fps ({values['sample_fps']}): only "
                "sampled frames are stored")
    if values["depth.min_m"] >= values["depth.max_m"]:  # type: ignore[operator]
        return f"depth.min_m ({values['depth.min_m']}) must be < depth.max_m ({values['depth.max_m']})"
    return ""


def engine_config(v: Mapping) -> EngineConfig:
    """The local engine's configuration; a shipped model's name becomes its folder (ValueError if not found). An
    engine plugin gets the model setting as it is."""
    model = str(v["model"]) if v["engine_plugin"] else resolve_model(str(v["model"]))
    return EngineConfig(model=model, revision=v["revision"], device=v["device"],
                        dtype=v["dtype"], attn_implementation=v["attn_implementation"],
                        quantization=v["quantization"], max_new_tokens=v["max_new_tokens"],
                        max_query_chars=v["max_query_chars"],
                        feature_cache_mb=float(v["history.feature_cache_mb"]) if v["history.enabled"] else 0.0)


def vllm_config(v: Mapping) -> VllmConfig:
    return VllmConfig(server_url=v["server_url"], model=v["model"], api_key_env=v["api_key_env"],
                      api_key_file=v["api_key_file"], request_timeout_s=v["request_timeout_s"],
                      max_inflight=v["max_inflight"], max_new_tokens=v["max_new_tokens"],
                      max_query_chars=v["max_query_chars"])


def grounding_config(v: Mapping) -> GroundingConfig:
    return GroundingConfig(max_points=v["max_points"], track_gate_frac=v["track.gate_frac"],
                           lost_timeout_s=v["track.lost_timeout_s"], event_max_gap_s=v["event.max_gap_s"])


def stream_config(v: Mapping) -> StreamConfig:
    slow, fast = v["slowfast.slow_pooling"], v["slowfast.fast_pooling"]
    return StreamConfig(
        buffer=BufferConfig(window_s=v["window_s"], stride_s=v["stride_s"], sample_fps=v["sample_fps"],
                            max_frames=v["max_frames"]),
        # engine vllm: the server pools every frame as its checkpoint says (uniform), so SlowFast is off there.
        slowfast=SlowFastConfig(enabled=v["slowfast.enabled"] and v["engine"] != "vllm", slow_pooling=(slow, slow),
                                fast_pooling=(fast, fast),
                                key_every=v["slowfast.key_every"]),
        grounding=grounding_config(v), max_new_tokens=v["max_new_tokens"], max_query_chars=v["max_query_chars"],
        depth=depth_config(v))


def depth_config(v: Mapping, enabled: bool | None = None) -> DepthConfig:
    """`enabled`: a camera's own depth.enabled (None: the global one)."""
    return DepthConfig(enabled=v["depth.enabled"] if enabled is None else enabled, max_dt_s=v["depth.max_dt_s"],
                       min_m=v["depth.min_m"], max_m=v["depth.max_m"], window_px=v["depth.window_px"],
                       wait_s=v["depth.wait_s"])


def memory_setting(v: Mapping, queries: int, cuda: bool = True, cameras: int = 1) -> memory_plan.Setting:
    """What the memory planner needs from the parameters (`queries`: standing queries per camera, at least one is
    planned; `cameras` served by the one model); dtype 'auto' is bfloat16 on CUDA, as the engine resolves it."""
    dtype = v["dtype"] if v["dtype"] != "auto" else ("bfloat16" if cuda else "float32")
    return memory_plan.Setting(
        dtype=dtype, quantization=v["quantization"], window_s=v["window_s"], sample_fps=v["sample_fps"],
        max_frames=v["max_frames"], queries=max(1, queries), max_new_tokens=v["max_new_tokens"],
        slowfast=v["slowfast.enabled"], slow_pooling=v["slowfast.slow_pooling"],
        fast_pooling=v["slowfast.fast_pooling"], key_every=v["slowfast.key_every"],
        attn_implementation=v["attn_implementation"] or "sdpa", cuda=cuda, cameras=cameras)


def history_config(v: Mapping, node_name: str = "molmo2"):
    """The history's configuration (core/history.py); an empty history.path is $ROS_HOME/molmo2_history/<node
    name> (ROS_HOME defaults to ~/.ros). The node name is a ROS name ([A-Za-z0-9_]), safe as a folder name."""
    import os
    from pathlib import Path

    from .history import HistoryConfig

    path = str(v["history.path"]) or str(Path(os.environ.get("ROS_HOME") or Path.home() / ".ros") / "molmo2_history"
                                         / re.sub(r"[^A-Za-z0-9_]", "_", node_name.strip("/")))
    # Frames are offered per emitted clip (HistoryStore.offer_clip), up to one stride of them at once: the write
    # queue holds at least that much, else every clip with a long stride would drop frames.
    return HistoryConfig(path=Path(path), max_age_s=float(v["history.max_age_s"]), max_gb=float(v["history.max_gb"]),
                         fps=float(v["history.fps"]), max_side_px=int(v["history.max_side_px"]),
                         queue_s=max(1.0, float(v["stride_s"])))


# ---- presets and explicit values -----------------------------------------------------------------------------
def typed(name: str, value: object) -> object:
    """`value` as the type of setting `name` (an int where a float is due is widened); ValueError otherwise."""
    spec = SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown setting '{name}'")
    if spec.dynamic_typing:
        return value
    kind = type(spec.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def preset_settings(name: str) -> dict[str, object]:
    """The typed settings of preset `name` ({} for ""); ValueError for an unknown preset or a bad setting in it."""
    if not name:
        return {}
    preset = load_preset(name)
    values = {}
    for key, value in preset.settings.items():
        if key in ("preset", "cameras", "queries"):
            raise ValueError(f"preset '{name}' sets '{key}', which a preset cannot set")
        try:
            values[key] = typed(key, value)
        except ValueError as error:
            raise ValueError(f"preset '{name}': {error}") from None
    return values


def defaults(preset: str = "") -> dict[str, object]:
    """Every setting's default under `preset`: the preset's value where it sets one, else SPECS'."""
    return {**{name: spec.default for name, spec in SPECS.items()}, **preset_settings(preset)}


def resolve(explicit: Mapping[str, object]) -> dict[str, object]:
    """Every setting: `explicit` values over the preset `explicit['preset']` names over SPECS' defaults, checked
    together (check_all). ValueError says what is wrong."""
    values = defaults(str(explicit.get("preset", "")))
    values.update({name: typed(name, value) for name, value in explicit.items()})
    reason = check_all(values)
    if reason:
        raise ValueError(reason)
    return values


# ---- the pipeline configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineConfig:
    """What a pipeline is built from, whichever door (node or command line) it came in by.

    engine: the engine kind (ENGINE_KINDS); engine_config: its configuration; engine_plugin: 'module:Class' made
    instead (testing/extension); streams and queries: per camera ("" = the one unnamed camera); schedule,
    max_pending_mb, batch_cameras: the runtime's scheduling (core/schedule.py, core/runtime.py)."""

    engine: str
    engine_config: EngineConfig | VllmConfig
    engine_plugin: str = ""
    streams: dict[str, StreamConfig] = field(default_factory=lambda: {"": StreamConfig()})
    queries: dict[str, list[Query]] = field(default_factory=lambda: {"": []})
    schedule: str = "live"
    max_pending_mb: float = 1024.0
    batch_cameras: bool = True

    @property
    def cameras(self) -> list[str]:
        return list(self.streams)


CAMERA_SETTINGS = ("queries", "depth.enabled")  # what a named camera may set for itself (empty queries = shared)


def camera_queries(values: Mapping[str, object], cameras: list[str],
                   camera_values: Mapping[str, Mapping[str, object]]) -> dict[str, list[Query]]:
    """Each camera's standing queries: its own `queries` text where it has one (not blank; "[]" = none), else the
    shared `queries`. ValueError names the setting that is wrong."""
    max_chars = int(values["max_query_chars"])
    shared = parse_queries(str(values["queries"]), max_chars)
    out = {}
    for camera in cameras:
        own = str(camera_values.get(camera, {}).get("queries") or "")
        out[camera] = parse_queries(own, max_chars, f"{camera}.queries") if own.strip() else shared
    return out


def pipeline_config(values: Mapping[str, object], cameras: list[str] | None = None,
                    camera_values: Mapping[str, Mapping[str, object]] | None = None) -> PipelineConfig:
    """The pipeline of checked settings `values` (resolve, or the node's parameters) for `cameras` ([""] = one
    unnamed camera), each camera's own CAMERA_SETTINGS in `camera_values`. ValueError says what is wrong."""
    cameras = cameras or [""]
    camera_values = camera_values or {}
    engine = vllm_config(values) if values["engine"] == "vllm" else engine_config(values)
    base = stream_config(values)
    streams = {c: replace(base, depth=depth_config(values, bool(camera_values.get(c, {}).get(
        "depth.enabled", values["depth.enabled"])))) for c in cameras}
    queries = camera_queries(values, cameras, camera_values)
    return PipelineConfig(engine=str(values["engine"]), engine_config=engine,
                          engine_plugin=str(values["engine_plugin"]), streams=streams, queries=queries,
                          schedule=str(values["schedule"]), max_pending_mb=float(values["max_pending_mb"]),
                          batch_cameras=bool(values["batch_cameras"]))
