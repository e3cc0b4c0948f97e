"""`molmo2-ros replay --history`, `recall` and `history-wipe` on a synthetic scenario (oracle, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli_errors import one_error_line
from molmo2_ros.cli import main
from molmo2_ros.core.history import HistoryConfig, HistoryStore
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario

pytestmark = pytest.mark.ros_free


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """(scenario folder, replay output folder, history folder) of a 12 s 320x240 scenario replayed with --history."""
    root = tmp_path_factory.mktemp("history_cli")
    bag = generate_scenario(root / "scenario", seconds=12.0, fps=10.0, width=320, height=240)
    assert main(["replay", str(bag), "--oracle", str(root / "scenario" / "scenario.json"), "--out",
                 str(root / "out"), "--history", str(root / "history"), "--quiet", "--no-gif"]) == 0
    return root / "scenario", root / "out", root / "history"


def test_replay_stores_every_sampled_frame(replayed):
    scenario, out, history = replayed
    summary = json.loads((out / "summary.json").read_text())
    truth = GroundTruth.load(scenario / "scenario.json")
    with HistoryStore(HistoryConfig(history), read_only=True) as store:
        stored = store.frames("", 0, 2**62)
        assert len(stored) == summary["counters"]["buffer_kept"] == 24  # 12 s at 2 fps, the tail window included
        assert {f.stamp_ns for f in stored} <= set(truth.frames)  # exact source stamps
        assert [f.sample_index for f in stored] == list(range(24))
        assert all((f.width, f.height) == (320, 240) for f in stored)
        assert all(store.load(f) is not None for f in stored)
    assert summary["history"] == str(history)


def test_recall_gives_the_last_sighting_of_a_query(replayed, tmp_path, capsys):
    _, out, history = replayed
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    points = [p for r in results if r["query"]["id"] == "ball_point" for p in r["points"]]
    last = max(p["stamp_ns"] for p in points)
    capsys.readouterr()
    assert main(["recall", str(history), "", "--query-id", "ball_point", "--limit", "50",
                 "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows[0]["stamp_ns"] == last and rows[0]["query_id"] == "ball_point"
    assert {(p["x"], p["y"]) for p in points if p["stamp_ns"] == last} == {
        (r["x"], r["y"]) for r in rows if r["stamp_ns"] == last}
    assert [r["stamp_ns"] for r in rows] == sorted((r["stamp_ns"] for r in rows), reverse=True)
    assert {"stamp_ns", "camera", "x", "y", "label", "query_id", "object_id", "position", "t_s"} <= rows[0].keys()
    printed = capsys.readouterr().out
    assert "newest first" in printed and str(last) in printed
    # by label text, case-insensitively; a time range in seconds after the first frame
    assert main(["recall", str(history), "RED BALL", "--from", "2", "--to", "3", "--limit", "100",
                 "--json", str(tmp_path / "range.json")]) == 0
    ranged = json.loads((tmp_path / "range.json").read_text())
    assert ranged and all(2.0 <= r["t_s"] <= 3.0 and "red ball" in r["label"] for r in ranged)
    assert main(["recall", str(history), "a purple elephant"]) == 0
    assert "no sightings" in capsys.readouterr().out


def test_recall_and_wipe_errors_are_one_line(replayed, tmp_path, capsys):
    _, _, history = replayed
    one_error_line(capsys, ["recall", str(tmp_path / "none"), "ball"], "not a history")
    one_error_line(capsys, ["recall", str(history), "ball", "--limit", "0"], "--limit")
    one_error_line(capsys, ["recall", str(history), "ball", "--from", "5", "--to", "1"], "--from <= --to")
    one_error_line(capsys, ["recall", str(history), "ball", "--camera", "left"], "not in the history")
    one_error_line(capsys, ["recall", str(history), "ball", "--json", str(tmp_path / "no" / "r.json")],
                   "does not exist")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    one_error_line(capsys, ["history-wipe", str(folder)], "not a history folder")
    assert (folder / "notes.txt").exists()
    scenario = replayed[0]
    one_error_line(capsys, ["replay", str(scenario / "bag"), "--oracle", str(scenario / "scenario.json"), "--out",
                            str(tmp_path / "out"), "--history", str(folder), "--quiet", "--no-gif"],
                   "--history", "not empty and not a history")


def test_history_wipe_removes_it(replayed, tmp_path, capsys):
    scenario, _, _ = replayed
    history = tmp_path / "history"
    assert main(["replay", str(scenario / "bag"), "--oracle", str(scenario / "scenario.json"), "--out",
                 str(tmp_path / "out"), "--history", str(history), "--quiet", "--no-gif"]) == 0
    capsys.readouterr()
    assert main(["history-wipe", str(history)]) == 0
    assert "MB freed" in capsys.readouterr().out and not history.exists()
    one_error_line(capsys, ["recall", str(history), "ball"], "not a history")
