"""The example mission end to end (scripts/mission.py, `make mission ORACLE=1`): a synthetic RGB-D bag played with
/clock into a live node (depth on, oracle engine: answers from the scenario's ground truth), the example_mission
process waiting for "ball falling" and publishing a PoseStamped goal at the ball; the goal is checked against the
ground truth 3D position at its stamp. ~20-30 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mission_with_the_oracle_reaches_the_falling_ball():
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "mission.py"), "--oracle"], capture_output=True,
                         text=True, timeout=240)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(lines[-1])
    assert run.returncode == 0 and result["status"] == "SUCCESS", (result, run.stderr[-3000:])
    assert result["engine"] == "oracle" and result["goals_received"] == 1, result
    assert result["truth_object"] == "ball_2" and result["event_id"] == "ball_fall/e1", result
    assert result["goal_error_m"] <= 0.05, result
    assert result["event_stamp_error_s"] <= 0.5, result
    assert result["wall_s"] < 120, result
