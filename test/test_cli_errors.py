"""`molmo2-ros` command-line errors: one `error: ...` line with a remedy and exit status 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.cli_errors import one_error_line
from molmo2_ros.cli import main
from molmo2_ros.offline.data.scenario import generate_scenario


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 10-frame 64x48 mp4 written with OpenCV."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def queries(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "queries.yaml"
    path.write_text("- {id: scene, task: caption}\n")
    return path


def test_video2bag_errors(tmp_path, capsys, video):
    one_error_line(capsys, ["video2bag", str(tmp_path / "missing.mp4"), str(tmp_path / "a")], "does not exist",
                   "pass the path of a video file")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n" * 100)
    one_error_line(capsys, ["video2bag", str(notes), str(tmp_path / "b")], "cannot read", "as a video")
    assert not (tmp_path / "b").exists()  # nothing written for a failed conversion
    assert main(["video2bag", str(video), str(tmp_path / "bag")]) == 0
    assert "10 frames" in capsys.readouterr().out
    one_error_line(capsys, ["video2bag", str(video), str(tmp_path / "bag")], "already holds a bag",
                   "choose a new output path")
    (tmp_path / "empty").mkdir()  # an empty folder is taken over
    assert main(["video2bag", str(video), str(tmp_path / "empty"), "--storage", "sqlite3"]) == 0


def test_replay_errors(tmp_path, capsys, queries):
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "junk.mcap").write_bytes(b"\x89MCAP0\r\n and then nothing useful")
    for bag, text in ((tmp_path / "missing", "does not exist"), (tmp_path / "not_a_bag", "without metadata.yaml"),
                      (tmp_path / "junk.mcap", "damaged or incomplete")):
        one_error_line(capsys, ["replay", str(bag), "--queries", str(queries), "--out", str(tmp_path / "o"),
                                "--quiet"], text)
    bag = generate_scenario(tmp_path / "s", seconds=1.0, fps=5.0, width=32, height=32)
    one_error_line(capsys, ["replay", str(bag), "--topic", "/nope", "--queries", str(queries), "--quiet"],
                   "not an Image/CompressedImage topic", "/camera/image_raw")
    one_error_line(capsys, ["replay", str(bag), "--queries", str(tmp_path / "nope.yaml")], "cannot read queries")
    (tmp_path / "out" / "molmo2_bag").mkdir(parents=True)
    one_error_line(capsys, ["replay", str(bag), "--queries", str(queries), "--out", str(tmp_path / "out")],
                   "already holds", "pass a new --out folder")


def test_replay_settings_errors_come_before_the_model_loads(tmp_path, capsys, queries):
    """Queries and settings are checked first: a bad query is reported even with a model that cannot load."""
    bag = generate_scenario(tmp_path / "s", seconds=1.0, fps=5.0, width=32, height=32)
    missing = str(tmp_path / "no" / "model")
    for text, expected in (("- {id: my ball, task: point, text: ball}\n", "query id 'my ball' must be"),
                           ("- {id: ball, task: point}\n", "a point query needs a text"),
                           ("- {id: ball, task: look, text: x}\n", "unknown task 'look'")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        one_error_line(capsys, ["replay", str(bag), "--queries", str(bad), "--model", missing, "--quiet"],
                       "bad.yaml[0]", expected)
    run = ["replay", str(bag), "--queries", str(queries), "--out", str(tmp_path / "o"), "--quiet"]
    one_error_line(capsys, [*run, "--model", missing], f"model folder '{missing}' does not exist")
    one_error_line(capsys, [*run, "--model", "my-model"], "'my-model' is neither a folder nor a model shipped")
    one_error_line(capsys, [*run, "--window", "1", "--stride", "2"], "must be >= stride_s", "--window, --stride")
    one_error_line(capsys, [*run, "--engine", "vllm", "--server-url", "ftp://host"], "server_url must be http")
    assert not (tmp_path / "o").exists()


def test_play_and_eval_errors(tmp_path, capsys):
    one_error_line(capsys, ["play", str(tmp_path / "missing")], "does not exist")
    (tmp_path / "junk.db3").write_bytes(b"SQLite format 3\x00 broken")
    one_error_line(capsys, ["play", str(tmp_path / "junk.db3")], "damaged or incomplete")
    one_error_line(capsys, ["play", str(tmp_path / "junk.db3"), "--rate", "0"], "pass a rate > 0")
    one_error_line(capsys, ["eval", str(tmp_path / "results.jsonl"), str(tmp_path / "scenario.json")],
                   "does not exist", "results.jsonl of a replay")


def test_installed_command_prints_no_traceback(tmp_path):
    """The real console entry point (not main() in-process): one stderr line, exit status 2."""
    out = subprocess.run([sys.executable, "-m", "molmo2_ros.cli", "video2bag", str(tmp_path / "x.mp4"),
                          str(tmp_path / "bag")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr


def test_demo_shorter_than_one_window_reports_no_report_instead_of_crashing(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seconds", "1", "--use-oracle", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert "report: not written" in out and line["report"] == "" and line["output_bag"]
