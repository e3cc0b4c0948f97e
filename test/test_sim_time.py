"""use_sim_time: the project's bag player (/clock + recorded timing) into the live node gives identical outputs
run after run, and the same points/tracks/counts/events per window as `molmo2-ros replay` of the same bag; without
a /clock publisher the node still runs (it schedules by image stamps) and reports on /diagnostics.

Engine: the offline oracle (test/helpers/oracle_plugin.py, deterministic, no noise) for the bag comparison, the
scripted engine for the no-clock case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile

from helpers.reliability import ORACLE, SCRIPTED, ns, start_node, unique_names
from helpers.ros_client import Client, process_env, run_camera, wait_until
from molmo2_ros.msg import Answer, Event, PointArray, TrackArray
from molmo2_ros.offline.data.scenario import generate_scenario

CLI = Path(sys.executable).parent / "molmo2-ros"
NAME, CAM = unique_names()
NODE = f"/{NAME}"
TOPICS = {"point": ("points", PointArray), "count": ("counts", PointArray), "track": ("tracks", TrackArray),
          "event": ("events", Event)}



@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenario")
    generate_scenario(folder, seconds=8.0, fps=10.0, width=160, height=120)
    return folder


def _f32(v: float) -> float:
    return float(np.float32(v))


def _pt(stamp_ns: int, x: float, y: float, label: str, object_id: str) -> tuple:
    return (stamp_ns, _f32(x), _f32(y), label, object_id)


# ---- normalised outputs: {query_id: [per window ...]} and {query_id: [events in order]} ---------------------
def from_messages(client: Client, queries: list[dict]) -> dict:
    out: dict = {}
    for q in queries:
        kind, _ = TOPICS[q["task"]]
        msgs = client.got(f"{NODE}/{kind}/{q['id']}")
        if q["task"] in ("point", "count"):
            out[q["id"]] = [(ns(m.clip_start), ns(m.clip_end), (m.image_width, m.image_height), m.count,
                             [_pt(ns(p.stamp), p.x, p.y, p.label, p.object_id) for p in m.points]) for m in msgs]
        elif q["task"] == "track":
            out[q["id"]] = [(ns(m.header.stamp), [(t.id, t.label, t.status, ns(t.first_seen), ns(t.last_seen),
                                                    [_pt(ns(p.stamp), p.x, p.y, p.label, p.object_id)
                                                     for p in t.trajectory]) for t in m.tracks]) for m in msgs]
        else:
            out[q["id"]] = [(m.id, m.state, ns(m.start), ns(m.end), m.description,
                             [_pt(ns(p.stamp), p.x, p.y, p.label, p.object_id) for p in m.evidence]) for m in msgs]
        out[f"{q['id']}/answers"] = [(ns(a.clip_start), ns(a.clip_end), a.text, a.num_frames)
                                     for a in client.got(f"{NODE}/answers/{q['id']}")]
    return out


def from_replay(results: Path, queries: list[dict]) -> dict:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    out: dict = {}
    for q in queries:
        # without the replay's closing reports: it ends the stream (open tracks/events ENDED), the live node's goes on
        mine = [r for r in rows if r["query"]["id"] == q["id"] and not r["closing"]]
        pts = lambda items: [_pt(p["stamp_ns"], p["x"], p["y"], p["label"], p["object_id"]) for p in items]  # noqa
        if q["task"] in ("point", "count"):
            out[q["id"]] = [(r["clip_start_ns"], r["clip_end_ns"], (r["width"], r["height"]),
                             -1 if r["count"] is None else r["count"], pts(r["points"])) for r in mine]
        elif q["task"] == "track":
            out[q["id"]] = [(r["clip_end_ns"], [(t["id"], t["label"], t["status"], t["first_ns"], t["last_ns"],
                                                 pts(t["trajectory"])) for t in r["tracks"]]) for r in mine]
        else:
            out[q["id"]] = [(e["id"], e["state"], e["start_ns"], e["end_ns"], e["description"], pts(e["evidence"]))
                            for r in mine for e in r["events"]]
        out[f"{q['id']}/answers"] = [(r["clip_start_ns"], r["clip_end_ns"], r["text"], r["num_frames"])
                                     for r in mine]
    return out


def live_run(client: Client, env: dict, folder: Path, scenario: Path, queries: list[dict], expected: dict) -> tuple:
    """Fresh node (use_sim_time, oracle) + the player with /clock; returns (outputs, sim stamps of diagnostics)."""
    folder.mkdir()
    qtext = "\n".join(f"- {{id: {q['id']}, task: {q['task']}, text: {q['text']}}}" for q in queries)
    node = start_node(client, env, folder, name=NAME, queries=qtext, topic="/camera/image_raw", engine_plugin=ORACLE,
                      model=str(scenario / "scenario.json"), use_sim_time=True, schedule="every_window",
                      no_frame_warn_s=60.0, qos="reliable", input_depth=200)
    try:
        client.clear()
        for q in queries:
            kind, msg_type = TOPICS[q["task"]]
            client.subscribe(msg_type, f"{NODE}/{kind}/{q['id']}")
            client.subscribe(Answer, f"{NODE}/answers/{q['id']}")
            client.wait_matched(f"{NODE}/answers/{q['id']}")
        client.subscribe(DiagnosticArray, "/diagnostics", QoSProfile(depth=10))
        # the bag's topic is fixed: wait for every subscriber on it (ours, and any other process on this domain)
        wait_until(lambda: any(i.node_name == NAME for i in client.node.get_subscriptions_info_by_topic(
            "/camera/image_raw")), 10.0, what="the node subscribing to the bag's topic")
        subscribers = client.node.count_subscribers("/camera/image_raw")
        play = subprocess.run([str(CLI), "play", str(scenario / "bag"), "--rate", "2.0", "--wait-subscribers",
                               str(subscribers)], env=process_env(env),
                              capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr[-3000:]
        assert "published 80 messages" in play.stdout, play.stdout
        try:
            def complete() -> bool:
                return all(len(client.got(f"{NODE}/{TOPICS[q['task']][0]}/{q['id']}")) >= len(expected[q["id"]])
                           and len(client.got(f"{NODE}/answers/{q['id']}")) >= len(expected[f"{q['id']}/answers"])
                           for q in queries)

            wait_until(complete, 30.0, what="every window of the bag")
        except AssertionError:
            pass  # the comparison below shows what is missing
        diag_stamps = [ns(m.header.stamp) for m in client.got("/diagnostics")]
        assert node.proc.poll() is None, node.output()
        return from_messages(client, queries), diag_stamps
    finally:
        code, _ = node.stop()
        assert code == 0, node.output()


def test_player_into_sim_time_node_is_deterministic_and_matches_offline_replay(ros_env, client, scenario, tmp_path):
    queries = json.loads((scenario / "scenario.json").read_text())["queries"]
    replay_out = tmp_path / "replay"
    rep = subprocess.run([str(CLI), "replay", str(scenario / "bag"), "--out", str(replay_out), "--oracle",
                          str(scenario / "scenario.json"), "--no-gif", "--quiet"],
                         env=process_env(ros_env), capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-3000:]
    offline = from_replay(replay_out / "results.jsonl", queries)
    windows = json.loads((replay_out / "summary.json").read_text())["windows"]
    assert windows >= 5 and sum(len(v) for k, v in offline.items() if not k.endswith("answers")) > 0

    first, diag1 = live_run(client, ros_env, tmp_path / "run1", scenario, queries, offline)
    second, _ = live_run(client, ros_env, tmp_path / "run2", scenario, queries, offline)
    for key in offline:
        assert first[key] == second[key], f"{key}: two plays of the same bag differ"
        assert first[key] == offline[key], f"{key}: live node (sim time) differs from offline replay"
    assert len(first["ball_point/answers"]) == windows  # every clip processed, in order
    # the node's clock followed the bag's /clock: diagnostics after the start carry bag time
    truth = json.loads((scenario / "scenario.json").read_text())
    bag_start, bag_end = truth["frames"][0], truth["frames"][-1]
    assert any(bag_start <= s <= bag_end + 10**9 for s in diag1), diag1


def test_sim_time_without_clock_still_runs_and_reports(ros_env, client, tmp_path):
    node = start_node(client, ros_env, tmp_path, name=NAME, queries="- {id: what, task: question, text: what}",
                      topic=CAM, engine_plugin=SCRIPTED, model="scripted", use_sim_time=True,
                      schedule="every_window", window_s=2.0, stride_s=1.0)
    try:
        client.subscribe(Answer, f"{NODE}/answers/what")
        client.wait_matched(f"{NODE}/answers/what")
        frames = run_camera({"topic": CAM, "qos": "reliable", "rate": 20, "count": 8, "t0": 500.0, "dt": 1.0,
                             "width": 64, "height": 48}, os.environ.copy())
        wait_until(lambda: len(client.got(f"{NODE}/answers/what")) >= 6, 15.0, what="answers without /clock")
        assert {ns(a.header.stamp) for a in client.got(f"{NODE}/answers/what")} <= {f["stamp"] for f in frames}
        d = client.diagnostics(NODE)
        assert d["state"] == "active" and int(d["windows_processed"]) >= 6 and d["_level"] == 0, d
        assert node.proc.poll() is None
    finally:
        code, seconds = node.stop()
    assert code == 0 and seconds < 5.0, node.output()
