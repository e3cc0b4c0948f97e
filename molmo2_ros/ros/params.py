"""Parameters of the molmo2 node: the settings of core/settings.py (names, defaults, ranges, checks) declared as ROS
parameters with descriptors, and when each takes effect.

Standing queries come from the string parameter `queries`: a YAML list of mappings, e.g. in a params file

    queries: |
      - {id: ball, task: point, text: red ball}
      - {id: people, task: track, text: person, topic: /planner/people}

(keys: id, task, text, topic; topic empty = default ~/<task>s/<id>). A YAML string works the same on
Humble, Jazzy and Kilted (typed empty arrays do not).

Cameras: `cameras` names the camera streams (a list, or a comma-separated string; default: one unnamed camera
with today's topics). Each named camera has its own input topic `<name>/image`, outputs under `~/<name>/...`, and
its own `<name>.qos`, `<name>.input_compressed`, `<name>.input_depth`, `<name>.depth.enabled` (defaults: the
global values) and `<name>.queries` (empty = the shared `queries`; "[]" = none).

When a parameter takes effect:
- CONFIGURE_TIME: read by the configure transition (model, engine, sampling). Set them while unconfigured.
- ACTIVATE_TIME: read by activate (input subscriptions). Set them while unconfigured or inactive.
- RUNTIME: applied at once, from the next window on, without reloading the model (tracker, events, max_points,
  max_new_tokens, schedule, overlay, queries, heap_trim_period_s, release_dds_shared_pages).
- read-only: set at start-up only (preset, cameras, engine_plugin, autostart, gil_switch_interval_ms). The preset's
  values are the declared defaults, so a params file or command line value overrides it.
"""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from molmo2_ros.core.settings import SPECS, defaults, parse_cameras

# Per-camera parameters `<camera>.<name>`; defaults come from the global parameter of the same name ("queries":
# empty = the shared list).
CAMERA_PARAMS = ("qos", "input_compressed", "input_depth", "queries", "depth.enabled")
ACTIVATE_TIME = frozenset({"qos", "input_compressed", "input_depth", "intake_deserialize_all"})
RUNTIME = frozenset({"no_frame_warn_s", "overlay.max_trail", "overlay.marker_lifetime_s", "track.gate_frac",
                     "track.lost_timeout_s", "event.max_gap_s", "max_points", "max_new_tokens", "schedule",
                     "max_pending_mb", "batch_cameras", "queries", "heap_trim_period_s",
                     "release_dds_shared_pages"})
READ_ONLY = frozenset(name for name, spec in SPECS.items() if spec.read_only)
CONFIGURE_TIME = frozenset(SPECS) - ACTIVATE_TIME - RUNTIME - READ_ONLY


def descriptor(name: str) -> ParameterDescriptor:
    spec = SPECS[name]
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only,
                            dynamic_typing=spec.dynamic_typing)
    if spec.dynamic_typing:
        d.type = ParameterType.PARAMETER_NOT_SET
    elif isinstance(spec.default, bool):
        d.type = ParameterType.PARAMETER_BOOL
    elif isinstance(spec.default, int):
        d.type = ParameterType.PARAMETER_INTEGER
        if spec.low is not None:
            d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    elif isinstance(spec.default, float):
        d.type = ParameterType.PARAMETER_DOUBLE
        if spec.low is not None:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                         step=0.0)]
    else:
        d.type = ParameterType.PARAMETER_STRING
    return d


def camera_descriptor(camera: str, name: str) -> ParameterDescriptor:
    """Descriptor of `<camera>.<name>`: the global parameter's, renamed."""
    d = descriptor(name)
    d.name = f"{camera}.{name}"
    d.read_only = False
    if name == "queries":
        d.description = (f"Standing queries of camera '{camera}' (YAML list as in `queries`); empty = the shared "
                         "`queries`, '[]' = none.")
    else:
        d.description = f"{d.description} (camera '{camera}'; default: the global {name})"
    return d




def declare_parameters(node) -> tuple[list[str], str]:
    """Declare every parameter of `node`: `preset` first, then every setting with the preset's value as its default
    (a params file or command line value still wins), then each named camera's own parameters. Returns (camera
    names, the first setup error or ''): an unknown preset or bad `cameras` is reported when the node configures."""
    error = ""
    try:
        initial = defaults(node.declare_parameter("preset", "", descriptor("preset")).value)
    except ValueError as problem:
        initial, error = defaults(), str(problem)
    for name in SPECS:
        if name != "preset":
            node.declare_parameter(name, initial[name], descriptor(name))
    try:
        cameras = parse_cameras(node.get_parameter("cameras").value)
    except ValueError as problem:
        cameras, error = [""], error or str(problem)
    for camera in filter(None, cameras):
        for name in CAMERA_PARAMS:
            default = "" if name == "queries" else node.get_parameter(name).value
            node.declare_parameter(f"{camera}.{name}", default, camera_descriptor(camera, name))
    return cameras, error
