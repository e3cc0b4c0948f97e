"""Node == replay (issue 26): a bag played into the live node (`molmo2-ros play` with /clock, `use_sim_time`,
`schedule: every_window`, reliable input with a deep `input_depth` so that no frame is lost) publishes the same
messages, field by field, as `molmo2-ros replay` of the same bag writes to its output bag (OUT/molmo2_bag), with the
same queries and clip settings (window 3 s, stride 0.5 s: 15 windows), the final ENDED track and event reports
included (the node's come when it is deactivated, the replay's at the end of the bag). Two cases: colour only, and
colour + aligned depth + CameraInfo (node `depth.enabled` with `depth` and `camera_info` remapped to the bag's
topics; `replay --depth`).

Engine: the offline oracle on both sides (test/helpers/oracle_plugin.py as the node's `engine_plugin`, `--oracle`
for the CLI): deterministic, no noise, fast. Queries: the scenario's own (point, count, track, event; the default
world has no caption or question) plus one caption and one question added here, so that an Answer as a query's
main output is compared too.

Compared (the query outputs; the replay bag's `/molmo2/...` is the node's `/<node name>/...`):
  points/<id>, counts/<id> (PointArray), tracks/<id> (TrackArray), events/<id> (Event), answers/<id> (Answer), and
  with depth points3d/<id>, counts3d/<id> (PointArray3D), tracks3d/<id> (TrackArray3D), events3d/<id> (Event3D),
  the standard outputs detections/<id> (vision_msgs/Detection2DArray) and with depth detections3d/<id>
  (Detection3DArray) of the point, count and track queries (vision_msgs: the test package scripts/with_ros sources):
  every message in order, every field (deserialised into nested dicts and tuples; NaN compared as NaN). The only
  field normalised is Answer.inference_time (wall time of the model call). A topic the node publishes that the
  replay never wrote (no message for it, e.g. an event query whose event never happens) must have no message.
Not compared (one side only, checked to be exactly these):
  node: overlay (sensor_msgs/Image, best effort, drawn only with a subscriber), markers (visualization_msgs/
  ImageMarker) and with depth markers3d (MarkerArray): RViz visuals with lifetimes, no replay counterpart; the
  lifecycle transition_event, the on-demand Query action's feedback and status topics, /diagnostics, /rosout,
  /parameter_events (node infrastructure; on-demand answers are not standing-query outputs).
  replay: image (foxglove_msgs/CompressedImage, the clip's newest frame as JPEG) and annotations (foxglove_msgs/
  ImageAnnotations): the bag's Foxglove visuals, no node counterpart.

With depth the node waits for the depth of a clip's newest frame before lifting (depth.wait_s) and both sides end
the 3D side of their tracks and events (the closing results are lifted): the 3D topics are equal too.

The comparison can fail: `compare` reports per topic the message counts and the first differing fields (path, node
value, replay value). Checked while writing this test with the node at stride 1 s against the replay at 0.5 s:
"points/ball_point: node 7 messages, replay 15; first difference in message 0: .header.stamp.sec: node 1700000001 !=
replay 1700000000; ...".
"""

from __future__ import annotations

import array
import dataclasses
import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.reliability import ORACLE, start_node, unique_names
from helpers.ros_client import Client, process_env, wait_until
from molmo2_ros.core.messages import bag_topic, full_name, output_topics
from molmo2_ros.core.queries import parse_queries
from molmo2_ros.offline.data.depth_world import CAMERA_INFO_TOPIC, DEPTH_TOPIC, DepthOptions
from molmo2_ros.offline.data.scenario import generate_scenario

CLI = Path(sys.executable).parent / "molmo2-ros"
NAME, _ = unique_names()
NODE = f"/{NAME}"
CAMERA_TOPIC = "/camera/image_raw"
# the clip settings of both sides (node parameters, CLI flags): 15 windows in the 8 s bag
WINDOW_S, STRIDE_S = 3.0, 0.5
EXTRA_QUERIES = [{"id": "scene", "task": "caption", "text": "describe the scene"},
                 {"id": "where_ball", "task": "question", "text": "where is the red ball"}]
# normalised on both sides: wall time
WALL_TIME_FIELDS = {"molmo2_ros/msg/Answer": ("inference_time",)}
NODE_ONLY = {"overlay", "markers", "transition_event", "query/_action/feedback", "query/_action/status"}
NODE_ONLY_DEPTH = NODE_ONLY | {"markers3d"}
REPLAY_ONLY = {"image", "annotations"}
INFRASTRUCTURE = {"/diagnostics", "/rosout", "/parameter_events"}


# ---- message -> plain data ---------------------------------------------------------------------------------
@functools.cache
def typestore():
    from molmo2_ros.offline.replay import project_typestore

    return project_typestore()


def plain(value):
    """A message (rclpy generated class or rosbags dataclass) as nested dicts of its fields (no constants) and
    tuples; NaN as the string 'NaN' (NaN != NaN), numpy and array.array sequences as tuples of Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # rosbags: fields as its typestore defines
        names = [name for name, _ in typestore().fielddefs[value.__msgtype__][1]]
        return {name: plain(getattr(value, name)) for name in names}
    if hasattr(type(value), "get_fields_and_field_types"):  # rclpy
        return {name: plain(getattr(value, name)) for name in type(value).get_fields_and_field_types()}
    if isinstance(value, (list, tuple, array.array, np.ndarray)):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else value
    return value


def normalised(msgtype: str, data: dict) -> dict:
    for name in WALL_TIME_FIELDS.get(msgtype, ()):
        data[name] = "<wall time>"
    return data


def differences(a, b, path: str = "", limit: int = 3) -> list[str]:
    """Paths and values of the first `limit` places (in field order) where a (node) and b (replay) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in [*a, *(k for k in b if k not in a)]:
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only on the {'node' if key in a else 'replay'} side")
            else:
                out += differences(a[key], b[key], f"{path}.{key}", limit - len(out))
            if len(out) >= limit:
                break
        return out[:limit]
    if isinstance(a, tuple) and isinstance(b, tuple):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{path}[{i}]", limit - len(out))
            if len(out) >= limit:
                return out[:limit]
        if len(a) != len(b):
            out.append(f"{path}: length node {len(a)} != replay {len(b)}")
        return out[:limit]
    return [] if a == b and type(a) is type(b) else [f"{path}: node {a!r} != replay {b!r}"]


def compare(node: dict[str, list[dict]], replay: dict[str, list[dict]]) -> list[str]:
    """One line per topic (relative name, e.g. points/ball_point) whose messages differ: the message counts and
    the first differing message's first differing fields (path: node value != replay value)."""
    problems = []
    for topic in sorted(node.keys() | replay.keys()):
        mine, theirs = node.get(topic, []), replay.get(topic, [])
        where = next((i for i, (x, y) in enumerate(zip(mine, theirs)) if x != y), None)
        if where is None and len(mine) == len(theirs):
            continue
        line = f"{topic}: node {len(mine)} messages, replay {len(theirs)}"
        if where is not None:
            line += f"; first difference in message {where}: {'; '.join(differences(mine[where], theirs[where]))}"
        else:
            extra, side = (mine, "node") if len(mine) > len(theirs) else (theirs, "replay")
            line += f"; the {side} has more, the first: {extra[min(len(mine), len(theirs))]}"
        problems.append(line)
    return problems


def is_3d(topic: str) -> bool:
    return topic.split("/")[0].endswith("3d")


# ---- the two sides -----------------------------------------------------------------------------------------
def queries_of(scenario: Path) -> list[dict]:
    own = [{k: q[k] for k in ("id", "task", "text")} for q in json.loads((scenario / "scenario.json").read_text())
           ["queries"]]
    return own + EXTRA_QUERIES


def queries_yaml(queries: list[dict]) -> str:
    return "\n".join(f"- {{id: {q['id']}, task: {q['task']}, text: {q['text']}}}" for q in queries)


def output_names(queries: list[dict], depth: bool) -> dict[str, str]:
    """Relative output topic (points/<id>, ...) -> message type of every output of the queries."""
    parsed = parse_queries(queries, 500, where="test")
    out = {}
    for q in parsed:
        for topic, type_name in output_topics(q).by_output(depth, vision=True).values():
            out[topic.removeprefix("~/")] = full_name(type_name)
    return out


def run_replay(scenario: Path, out: Path, queries_file: Path, depth: bool, stride_s: float = STRIDE_S) -> Path:
    cmd = [str(CLI), "replay", str(scenario / "bag"), "--out", str(out), "--oracle", str(scenario / "scenario.json"),
           "--queries", str(queries_file), "--window", str(WINDOW_S), "--stride", str(stride_s), "--no-gif",
           "--quiet", *(["--depth"] if depth else [])]
    rep = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-3000:]
    return out / "molmo2_bag"


def read_replay_bag(bag: Path) -> tuple[dict[str, list[dict]], set[str]]:
    """({relative topic: [normalised messages]} of the molmo2_ros messages, every relative topic of the bag)."""
    from rosbags.rosbag2 import Reader

    store = typestore()
    prefix = bag_topic("~/")
    got: dict[str, list[dict]] = {}
    with Reader(bag) as reader:
        topics = {c.topic.removeprefix(prefix) for c in reader.connections}
        assert all(c.topic.startswith(prefix) for c in reader.connections), [c.topic for c in reader.connections]
        ours = [c for c in reader.connections if c.msgtype.startswith(("molmo2_ros/", "vision_msgs/"))]
        for conn, _, raw in reader.messages(connections=ours):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            got.setdefault(conn.topic.removeprefix(prefix), []).append(normalised(conn.msgtype, plain(msg)))
    return got, topics


def node_topics(client: Client, outputs: dict[str, str]) -> set[str]:
    """Every topic the node under test publishes, relative to it where it lies under it (once the graph shows the
    node with its query outputs: a fresh client may not know the node's name yet)."""
    def topics() -> set[str] | None:
        try:
            names = client.node.get_publisher_names_and_types_by_node(NAME, "/")
        except RuntimeError:  # rclpy's NodeNameNonExistentError (private module)
            return None
        found = {t.removeprefix(f"{NODE}/") for t, _ in names}
        return found if set(outputs) <= found else None

    return wait_until(topics, 10.0, what="the node's publishers in the ROS graph")


def live_run(client: Client, env: dict, folder: Path, scenario: Path, queries: list[dict], outputs: dict[str, str],
             replay: dict[str, list[dict]], depth: bool) -> tuple[dict[str, list[dict]], set[str]]:
    """Fresh node (use_sim_time, oracle, every_window), the bag played into it with /clock, then deactivated (its
    closing track/event reports); returns ({relative topic: [normalised messages]}, the node's topics)."""
    from molmo2_ros.ros.convert import message_class

    folder.mkdir()
    params = {"depth.enabled": True} if depth else {}
    extra = ["-r", f"depth:={DEPTH_TOPIC}", "-r", f"camera_info:={CAMERA_INFO_TOPIC}"] if depth else []
    node = start_node(client, env, folder, name=NAME, queries=queries_yaml(queries), topic=CAMERA_TOPIC,
                      engine_plugin=ORACLE, model=str(scenario / "scenario.json"), use_sim_time=True,
                      schedule="every_window", window_s=WINDOW_S, stride_s=STRIDE_S, no_frame_warn_s=60.0,
                      qos="reliable", input_depth=500, extra=extra, **params)
    try:
        client.clear()
        for topic, msgtype in outputs.items():
            client.subscribe(message_class(msgtype), f"{NODE}/{topic}")
        for topic in outputs:
            client.wait_matched(f"{NODE}/{topic}")
        topics = node_topics(client, outputs)
        inputs = [CAMERA_TOPIC, *([DEPTH_TOPIC, CAMERA_INFO_TOPIC] if depth else [])]
        for name in inputs:
            wait_until(lambda name=name: any(i.node_name == NAME for i in client.node.get_subscriptions_info_by_topic(
                name)), 10.0, what=f"the node subscribing to {name}")
        subscribers = min(client.node.count_subscribers(name) for name in inputs)
        play = subprocess.run([str(CLI), "play", str(scenario / "bag"), "--rate", "2.0", "--wait-subscribers",
                               str(subscribers)], env=process_env(env), capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr[-3000:]
        played = f"play: {play.stdout.strip()} {play.stderr.strip()[-1000:]}"
        # every window answered (closing results publish no Answer), then the closing reports of deactivation
        answers = [t for t in outputs if t.startswith("answers/")]

        def complete(names: list[str]) -> bool:
            return all(len(client.got(f"{NODE}/{t}")) >= len(replay.get(t, [])) for t in names)

        try:
            wait_until(lambda: complete(answers), 30.0, what="every window's answers")
        except AssertionError:  # some missing: the comparison shows which; none at all: nothing to compare
            assert any(client.got(f"{NODE}/{t}") for t in answers), \
                f"no answer from the node in 30 s ({played}); node log:\n{node.output()[-4000:]}"
        assert node.proc.poll() is None, node.output()[-4000:]
        assert client.transition(NODE, "deactivate", timeout=20.0), node.output()[-4000:]
        try:
            wait_until(lambda: complete(list(outputs)), 10.0, what="every message the replay wrote")
        except AssertionError:
            pass  # the comparison shows what is missing
        got = {t: [normalised(msgtype, plain(m)) for m in client.got(f"{NODE}/{t}")] for t, msgtype in outputs.items()}
    finally:
        code, _ = node.stop()
    assert code == 0, node.output()[-4000:]
    return {t: msgs for t, msgs in got.items() if msgs}, topics


@pytest.fixture(scope="module", params=[False, True], ids=["2d", "depth"])
def case(request, tmp_path_factory) -> dict:
    """A scenario bag (8 s, 10 fps, 160x120; with depth: aligned 16UC1 depth + CameraInfo), its queries, and the
    replay's output bag read back."""
    depth = request.param
    folder = tmp_path_factory.mktemp("depth" if depth else "plain")
    scenario = folder / "scenario"
    generate_scenario(scenario, seconds=8.0, fps=10.0, width=160, height=120, depth=DepthOptions() if depth else None)
    queries = queries_of(scenario)
    queries_file = folder / "queries.yaml"
    queries_file.write_text(queries_yaml(queries) + "\n")
    replay, topics = read_replay_bag(run_replay(scenario, folder / "replay", queries_file, depth))
    return {"depth": depth, "scenario": scenario, "queries": queries, "replay": replay, "replay_topics": topics}


def test_node_publishes_what_replay_writes(ros_env, client, case, tmp_path):
    depth, queries, replay = case["depth"], case["queries"], case["replay"]
    outputs = output_names(queries, depth)
    # the replay has something to compare: windows, points, tracks that end, events that end, and with depth 3D
    assert len(replay["answers/ball_point"]) >= 10
    assert any(t["status"] == 3 for m in replay["tracks/ball_track"] for t in m["tracks"])  # Track.STATUS_ENDED
    assert any(m["state"] == 2 for t, msgs in replay.items() if t.startswith("events/") for m in msgs)  # STATE_ENDED
    # ... and a track still open at the end of the bag: its closing report (ENDED) follows the last window's
    assert len(replay["tracks/ball_track"]) == len(replay["answers/ball_track"]) + 1
    assert all(t["status"] == 3 for t in replay["tracks/ball_track"][-1]["tracks"])
    if depth:
        assert {t.split("/")[0] for t in replay} >= {"points3d", "counts3d", "tracks3d", "events3d"}
        assert any(p["valid"] for m in replay["points3d/ball_point"] for p in m["points"])
    else:
        assert not any(is_3d(t) for t in case["replay_topics"])

    got, topics = live_run(client, ros_env, tmp_path / "node", case["scenario"], queries, outputs, replay, depth)

    # topics: the query outputs on both sides; the one-sided topics are exactly the documented ones
    node_only = (NODE_ONLY_DEPTH if depth else NODE_ONLY) | INFRASTRUCTURE
    assert topics - set(outputs) == node_only, f"node topics beyond the query outputs: {sorted(topics - set(outputs))}"
    assert case["replay_topics"] - set(outputs) == REPLAY_ONLY, sorted(case["replay_topics"])
    # messages: every one, field by field; 2D first (with depth too: the 3D side must not change them)
    problems = compare({t: m for t, m in got.items() if not is_3d(t)},
                       {t: m for t, m in replay.items() if not is_3d(t)})
    assert not problems, "node and replay differ:\n" + "\n".join(problems)
    if not depth:
        return
    problems = compare({t: m for t, m in got.items() if is_3d(t)}, {t: m for t, m in replay.items() if is_3d(t)})
    assert not problems, "node and replay differ in 3D:\n" + "\n".join(problems)


def test_3d_side_ends_tracks_and_events(case):
    """With depth the last TrackArray3D of a track query and the last Event3D of every event end them (ENDED), as
    their 2D messages do. Checked on the replay's bag (the node publishes the same, test above)."""
    if not case["depth"]:
        pytest.skip("3D only")
    replay = case["replay"]
    assert all(t["status"] == 3 for t in replay["tracks/ball_track"][-1]["tracks"])  # the 2D side ends them
    last2d = {m["id"]: m["state"] for t, msgs in replay.items() if t.startswith("events/") for m in msgs}
    last3d = {m["id"]: m["state"] for t, msgs in replay.items() if t.startswith("events3d/") for m in msgs}
    assert set(last2d.values()) == {2} and set(last3d) == set(last2d)
    tracks3d = replay["tracks3d/ball_track"]
    problems = []
    if not all(t["status"] == 3 for t in tracks3d[-1]["tracks"]):
        problems.append(f"tracks3d/ball_track: last statuses {[t['status'] for t in tracks3d[-1]['tracks']]}, "
                        f"{len(tracks3d)} messages vs {len(replay['tracks/ball_track'])} in 2D")
    if last3d != last2d:
        problems.append(f"events3d: last states {last3d} vs 2D {last2d}")
    assert not problems, "\n".join(problems)
