"""Ctrl-C during `molmo2-ros replay`: the replay stops after the window in progress and still ends every open event
and track, in results.jsonl and in the output bag; the summary says it was interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from molmo2_ros.core.types import EventState
from molmo2_ros.offline.data.scenario import generate_scenario

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

# `molmo2-ros replay` with an oracle that takes 0.3 s per window, so that a window is in progress when SIGINT comes.
SLOW_REPLAY = """
import sys, time
from molmo2_ros.cli import main
from molmo2_ros.offline.evaluation.oracle import OracleEngine

infer = OracleEngine.infer


def slow(self, *args, **kwargs):
    time.sleep(0.3)
    return infer(self, *args, **kwargs)


OracleEngine.infer = slow
sys.exit(main(sys.argv[1:]))
"""


def _lines(path: Path) -> list[dict]:
    """The complete lines of a results.jsonl being written."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def _open_events(lines: list[dict]) -> set[str]:
    state: dict[str, int] = {}
    for line in lines:
        state.update((e["id"], e["state"]) for e in line["events"])
    return {e for e, s in state.items() if s != EventState.ENDED}


def test_ctrl_c_ends_open_events_in_results_and_bag(tmp_path):
    from rosbags.highlevel import AnyReader

    bag = generate_scenario(tmp_path / "s", seconds=20.0, width=160, height=120)
    (tmp_path / "slow_replay.py").write_text(SLOW_REPLAY)
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow_replay.py"), "replay", str(bag), "--out", str(out),
                             "--oracle", str(tmp_path / "s" / "scenario.json"), "--window", "2", "--stride", "1",
                             "--quiet", "--no-gif"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            lines = _lines(out / "results.jsonl")
            open_events = _open_events(lines)
            if len({line["clip_index"] for line in lines}) >= 3 and open_events:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"no event open while the replay ran (exit {proc.poll()})")
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "INTERRUPTED" in stdout and "interrupted: stopping after this window" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["windows"] < 18  # it stopped early (19 windows in 20 s)
    lines = _lines(out / "results.jsonl")
    assert not _open_events(lines) and lines[-1]["closing"]
    events: dict[str, set[int]] = {}
    with AnyReader([out / "molmo2_bag"]) as reader:
        connections = [c for c in reader.connections if c.msgtype == "molmo2_ros/msg/Event"]
        for conn, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, conn.msgtype)
            events.setdefault(msg.id, set()).add(msg.state)
    assert open_events <= set(events)  # the events open when SIGINT came ...
    assert all(EventState.ENDED in states for states in events.values()), events  # ... and every other one ended
