"""The installed `molmo2-ros video2bag` on files OpenCV cannot open as video (missing, text, garbage or truncated
.mp4) and on an output it cannot write: one `error:` line that says what to do, exit status 2, no traceback, no
output left behind; a real video still converts frame for frame."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from molmo2_ros.offline.data.bags import decoded_frames

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

CLI = Path(sys.executable).parent / "molmo2-ros"
FRAMES = 12


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 12-frame 64x48 mp4 at 6 fps, written with OpenCV (the brightness steps with the frame index)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 6.0, (64, 48))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


def video2bag(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), "video2bag", *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_one_error(run: subprocess.CompletedProcess, *expected: str) -> None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr and not run.stdout, (run.stdout, run.stderr)
    for text in expected:
        assert text in lines[0], lines[0]


def _short_text(path: Path, _video: Path) -> None:
    path.write_text("hello\n")


def _long_text(path: Path, _video: Path) -> None:
    path.write_text("not a video\n" * 100)  # FFmpeg opens this one, with its ANSI-art decoder


def _garbage(path: Path, _video: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())


def _truncated(path: Path, video: Path) -> None:
    data = video.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name, make", [("notes.txt", _short_text), ("long.txt", _long_text),
                                        ("garbage.mp4", _garbage), ("truncated.mp4", _truncated)])
def test_a_file_that_is_no_video_is_one_error_line(name, make, video, tmp_path):
    source, out = tmp_path / name, tmp_path / "bag"
    make(source, video)
    assert_one_error(video2bag(source, out), f"cannot read '{source}' as a video", "pass a video such as")
    assert not out.exists()


def test_a_missing_file_is_one_error_line(tmp_path):
    assert_one_error(video2bag(tmp_path / "missing.mp4", tmp_path / "bag"), "does not exist",
                     "pass the path of a video file")
    assert not (tmp_path / "bag").exists()


def test_an_unwritable_output_is_one_error_line_and_leaves_nothing(video, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "bag"  # its parent is a file: the bag folder cannot be made
    assert_one_error(video2bag(video, out), f"cannot write bag '{out}'", "choose an output path")
    assert blocker.read_text() == "" and not out.exists()


@pytest.mark.parametrize("storage, encoding", [("mcap", "jpeg"), ("sqlite3", "rgb8")])
def test_a_real_video_converts_every_frame(storage, encoding, video, tmp_path):
    out = tmp_path / "bag"
    run = video2bag(video, out, "--storage", storage, "--encoding", encoding)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{FRAMES} frames -> {out}"
    frames = decoded_frames(out)
    assert len(frames) == FRAMES
    assert [f.stamp_ns - frames[0].stamp_ns for f in frames] == [round(i * 1e9 / 6) for i in range(FRAMES)]
    brightness = [round(f.image.mean()) for f in frames]
    assert brightness == pytest.approx([20 * i for i in range(FRAMES)], abs=8)  # in order; mp4v is lossy
