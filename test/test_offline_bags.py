"""Replay of bags from every distribution and recorder (molmo2_ros/offline/data/bags.py), and replay faults: bad frames
are dropped and counted like the node does, frames that will not be sampled are never decoded, zero stamps and
damaged bags are reported in summary.json. ROS-free (rosbags only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.bag_variants import read_camera, write_humble_sqlite3, write_ros1, write_with_service_events
from molmo2_ros.core.clip_buffer import BufferConfig
from molmo2_ros.core.stream import StreamConfig
from molmo2_ros.core.types import Query, TaskKind
from molmo2_ros.offline.data.bags import BagError, CameraBag
from molmo2_ros.offline.evaluation.oracle import NO_NOISE, OracleEngine
from molmo2_ros.offline.replay import replay
from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario

REPO = Path(__file__).resolve().parents[1]
CONFIG = StreamConfig(buffer=BufferConfig(window_s=2.0, stride_s=1.0, sample_fps=2.0))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[Path, GroundTruth]:
    """A 6 s, 10 fps, 96x64 rgb8 scenario bag (mcap) and its ground truth."""
    out = tmp_path_factory.mktemp("scenario")
    bag = generate_scenario(out, seconds=6.0, fps=10.0, width=96, height=64)
    return bag, GroundTruth.load(out / "scenario.json")


def queries(truth: GroundTruth) -> list[Query]:
    return [Query(q["id"], TaskKind(q["task"]), q["text"]) for q in truth.data["queries"]]


def run(bag: Path, out: Path, truth: GroundTruth):
    """(summary, results without timing) of an oracle replay."""
    s = replay(bag, out, OracleEngine(truth, NO_NOISE), queries(truth), config=CONFIG, progress=False, gif=False)
    results = [{**json.loads(line), "inference_s": 0} for line in Path(s.results_path).read_text().splitlines()]
    return s, results


@pytest.fixture(scope="module")
def reference(scenario, tmp_path_factory):
    bag, truth = scenario
    summary, results = run(bag, tmp_path_factory.mktemp("reference"), truth)
    assert summary.windows >= 4 and results and summary.frames_dropped == {}
    return summary, results


def _open_with_anyreader(bag: Path) -> None:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]):
        pass


def test_humble_sqlite3_bag_without_definitions_in_a_folder_named_dot_bag(scenario, reference, tmp_path):
    bag, truth = scenario
    humble = write_humble_sqlite3(tmp_path / "camera_2023.bag", *read_camera(bag))
    with pytest.raises(Exception):  # what the replay used before: the folder is taken for a ROS 1 file
        _open_with_anyreader(humble)
    plain = shutil.copytree(humble, tmp_path / "camera_2023")
    with pytest.raises(Exception, match="no type definitions"):  # and without the suffix: no definitions
        _open_with_anyreader(plain)
    for folder in (humble, plain):
        summary, results = run(folder, tmp_path / f"out_{folder.name}", truth)
        assert results == reference[1] and summary.frames == reference[0].frames


def test_bag_with_service_event_topic_reads_only_the_camera(scenario, reference, tmp_path):
    bag, truth = scenario
    srv = (REPO / "srv" / "ManageQueries.srv").read_text()
    events = write_with_service_events(tmp_path / "with_events", *read_camera(bag), srv_text=srv)
    with pytest.raises(Exception, match="Could not parse"):  # rosbags parses every schema, the .srv text fails
        _open_with_anyreader(events)
    with CameraBag(events) as camera:
        assert camera.topic == "/camera/image_raw" and camera.count == reference[0].frames
    summary, results = run(events, tmp_path / "out", truth)
    assert results == reference[1] and summary.frames == reference[0].frames


def test_ros1_bag_file_still_replays(scenario, reference, tmp_path):
    bag, truth = scenario
    ros1 = write_ros1(tmp_path / "camera.bag", *read_camera(bag))
    summary, results = run(ros1, tmp_path / "out", truth)
    assert results == reference[1]


def _rewrite(bag: Path, out: Path, change) -> Path:
    """A copy of the scenario bag with change(index, msg) -> msg | bytes applied to each message."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    topic, msgtype, messages = read_camera(bag)
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for i, (log_ns, raw) in enumerate(messages):
            new = change(i, store.deserialize_cdr(raw, msgtype))
            writer.write(conn, log_ns, new if isinstance(new, bytes) else store.serialize_cdr(new, msgtype))
    return out


def _truncated(msg):
    msg.data = msg.data[: len(msg.data) // 2]
    return msg


def test_frames_that_will_not_be_sampled_are_not_decoded(scenario, reference, tmp_path):
    """10 fps in, 2 fps sampled: frames 0, 5, 10, ... are kept. Every other frame is corrupt; none is decoded,
    so nothing is dropped as bad and the results equal the clean bag's."""
    bag, truth = scenario
    corrupt = _rewrite(bag, tmp_path / "corrupt", lambda i, m: m if i % 5 == 0 else _truncated(m))
    summary, results = run(corrupt, tmp_path / "out", truth)
    assert results == reference[1]
    assert not any(k.startswith("bad_") for k in summary.frames_dropped), summary.frames_dropped
    assert summary.counters["buffer_decimated"] == reference[0].counters["buffer_decimated"] > 0


def test_bad_frames_are_dropped_counted_and_the_replay_goes_on(scenario, reference, tmp_path, capsys):
    """Sampled slots at 10 fps in, 2 fps out: 0, 5, 10 (refused) -> 11, 16, 21 (refused) -> 22, 27, 32 (refused)
    -> 33, ...: a refused frame is not pushed, so the next frame takes its slot, as in the node."""
    bag, truth = scenario

    def change(i, msg):
        if i in (10, 32):
            return _truncated(msg)
        if i == 21:
            msg.encoding = "32FC1"
            return msg
        if i == 40:
            return b"\x00\x01\x00\x00\x07"  # not CDR of an Image at all
        return msg

    damaged = _rewrite(bag, tmp_path / "damaged", change)
    summary, results = run(damaged, tmp_path / "out", truth)
    assert summary.frames_dropped == {"bad_truncated_data": 2, "bad_unsupported_encoding": 1,
                                      "bad_undeserializable": 1}
    assert summary.frames == reference[0].frames and not summary.error
    assert summary.windows >= reference[0].windows - 1 and results  # the windows after the bad frames are there
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["frames_dropped"] == summary.frames_dropped
    err = capsys.readouterr().err
    assert "warning: frame 10 " in err and "bad_truncated_data" in err and "bad_undeserializable" in err
    assert err.count("bad_truncated_data") == 1  # one line per reason, then only counted


def test_zero_stamps_give_a_warning_and_a_summary_entry(scenario, tmp_path, capsys):
    bag, truth = scenario

    def zero(i, msg):
        msg.header.stamp.sec, msg.header.stamp.nanosec = 0, 0
        return msg

    zeros = _rewrite(bag, tmp_path / "zeros", zero)
    summary, results = run(zeros, tmp_path / "out", truth)
    assert results == [] and summary.windows == 0
    assert summary.frames_dropped == {"buffer_dropped_zero_stamp": summary.frames} and summary.frames == 60
    assert len(summary.warnings) == 1 and "60 of 60 frames" in summary.warnings[0]
    assert "zero header stamp" in summary.warnings[0] and "no window was processed" in summary.warnings[0]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"] == summary.warnings
    assert "warning: 60 of 60 frames on /camera/image_raw have a zero header stamp" in capsys.readouterr().err


def _damage_last_chunk(bag: Path) -> None:
    """Overwrite the length of the first message record in the mcap file's last chunk (the chunk index still
    points at it: the reader fails there, mid-way)."""
    import struct

    from mcap.reader import make_reader

    path = next(bag.glob("*.mcap"))
    with open(path, "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) >= 2
    data = bytearray(path.read_bytes())
    # chunk record: opcode, length, start, end, uncompressed size (u64 each), crc (u32), compression (string)
    at = chunks[-1].chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4
    at += 4 + struct.unpack_from("<I", data, at)[0] + 8  # compression string, records length
    data[at + 1:at + 9] = b"\xff" * 8  # first record: opcode, then its length
    path.write_bytes(bytes(data))


def test_damaged_bag_keeps_outputs_and_records_the_error(tmp_path):
    out = tmp_path / "s"
    bag = generate_scenario(out, seconds=10.0, fps=10.0, width=96, height=64)  # 1.8 MB: two mcap chunks
    truth = GroundTruth.load(out / "scenario.json")
    _damage_last_chunk(bag)
    with pytest.raises(BagError, match="the bag is damaged") as raised:
        run(bag, tmp_path / "out", truth)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["error"] == str(raised.value) and "failed after" in saved["error"]
    assert saved["frames"] > 0 and saved["windows"] > 0
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == saved["results"] > 0


def test_unreadable_bags_raise_bag_errors_with_a_remedy(tmp_path):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    (tmp_path / "notes.txt").write_text("hello")
    cases = {tmp_path / "missing": "does not exist", tmp_path / "empty_folder": "without metadata.yaml",
             tmp_path / "junk.mcap": "damaged or incomplete", tmp_path / "notes.txt": "pass a rosbag2 folder"}
    for path, text in cases.items():
        with pytest.raises(BagError, match=text):
            CameraBag(path)
