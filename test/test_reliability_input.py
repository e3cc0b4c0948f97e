"""Image and time input matrix through a live node process (scripted engine): every odd frame is dropped with a
counter on /diagnostics or handled, the node never dies, and the valid frames around the bad ones are all kept.

Frames are published from the test process (RELIABLE, paced) one second of stamp apart, so with window 2 s and
stride 1 s the buffer keeps every valid frame: `buffer_kept` must grow by exactly the number of valid frames.
"""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest
from rclpy.duration import Duration
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from helpers.reliability import SCRIPTED, FrameSender, delta, ns, rgb_image, stamp, start_node, unique_names
from helpers.ros_client import wait_until
from molmo2_ros.msg import Answer, PointArray

NAME, TOPIC = unique_names()
NODE = f"/{NAME}"
QUERIES = "- {id: what, task: question, text: what}\n- {id: ball, task: point, text: ball}"



@pytest.fixture
def node(ros_env, client, tmp_path):
    proc = start_node(client, ros_env, tmp_path, name=NAME, queries=QUERIES, topic=TOPIC, engine_plugin=SCRIPTED,
                      model="scripted", window_s=2.0, stride_s=1.0, qos="reliable")
    client.subscribe(Answer, f"{NODE}/answers/what")
    client.subscribe(PointArray, f"{NODE}/points/ball")
    client.wait_matched(f"{NODE}/answers/what")
    yield proc
    code, seconds = proc.stop()
    assert code == 0 and seconds < 5.0, proc.output()


def _raw(t: float, w: int = 64, h: int = 48, **fields) -> Image:
    msg = rgb_image(t, w, h)
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def _rgb16_big_endian(t: float, color=(10, 200, 30), w: int = 64, h: int = 48) -> Image:
    px = np.tile(np.array(color, ">u2") * 257, (h, w)).view(np.uint8)
    return Image(header=Header(stamp=stamp(t), frame_id="cam"), height=h, width=w, encoding="rgb16",
                 is_bigendian=1, step=w * 6, data=px.tobytes())


def test_image_and_time_input_matrix(node, client):
    sender = FrameSender(client, TOPIC, rate_hz=20)
    t = 100.0
    frames: list[tuple[Image, str]] = []  # (message, what the node should do with it)

    def add(msg: Image, what: str) -> None:
        frames.append((msg, what))

    def nxt() -> float:
        nonlocal t
        t += 1.0
        return t

    add(_raw(nxt()), "keep")
    add(_raw(nxt()), "keep")
    add(_raw(nxt(), width=0, data=b""), "bad_empty_image")
    add(_raw(nxt(), height=0), "bad_empty_image")
    short = _raw(nxt())
    short.data = bytes(short.data)[: len(short.data) // 2]
    add(short, "bad_truncated_data")
    longer = _raw(nxt())
    longer.data = bytes(longer.data) + b"\xff" * 1000  # longer than step * height: the extra bytes are ignored
    add(longer, "keep")
    be_stamp = nxt()
    add(_rgb16_big_endian(be_stamp), "keep")
    add(_raw(nxt(), encoding="32FC1"), "bad_unsupported_encoding")
    add(_raw(nxt(), encoding="no_such_encoding"), "bad_unsupported_encoding")
    add(_raw(nxt()), "keep")
    add(_raw(t), "buffer_dropped_duplicate")            # same stamp as the previous frame
    add(_raw(t - 0.3), "buffer_dropped_out_of_order")   # a little behind
    add(_raw(nxt()), "keep")
    t -= 50.0
    add(_raw(t), "keep+buffer_reset_backward_jump")     # looping bag / sim-time reset: buffer restarts
    add(_raw(nxt()), "keep")
    t += 300.0
    add(_raw(t), "keep")                                # a gap of five minutes
    add(_raw(nxt()), "keep")
    add(_raw(0.0), "buffer_dropped_zero_stamp")
    add(_raw(nxt(), w=80, h=60), "keep+buffer_reset_resolution_change")  # camera changes resolution
    add(_raw(nxt(), w=80, h=60), "keep")
    last_stamp = t
    add(_raw(nxt(), w=80, h=60), "keep")
    last_stamp = t

    before = client.diagnostics(NODE)
    started = time.monotonic()
    sent = sender.send(m for m, _ in frames)
    last_ns = int(round(last_stamp * 1e9))
    wait_until(lambda: any(ns(a.header.stamp) == last_ns for a in client.got(f"{NODE}/answers/what")), 10.0,
               what="the answer on the last frame")
    after = wait_until(lambda: (d := client.diagnostics(NODE)) and int(d.get("frames_received", 0)) - int(
        before.get("frames_received", 0)) == sent and d, 10.0, what="all frames counted")
    elapsed = time.monotonic() - started
    d = delta(before, after)
    expected: dict[str, int] = {}
    for _, what in frames:
        for key in what.split("+"):
            expected[key] = expected.get(key, 0) + 1
    kept = expected.pop("keep")
    print(f"input matrix: sent {sent}, counter deltas {d}")
    assert node.proc.poll() is None
    assert d.get("frames_received", 0) == sent
    assert d.get("buffer_kept", 0) == kept, d  # no valid frame around the bad ones is lost
    for key, n in expected.items():
        assert d.get(key, 0) == n, (key, d)
    dropped = sum(n for k, n in expected.items() if k.startswith(("bad_", "buffer_dropped_")))
    assert d.get("frames_dropped", 0) == dropped
    # decoding: big-endian 16-bit keeps the most significant byte (10, 200, 30)
    be = [a for a in client.got(f"{NODE}/answers/what") if ns(a.header.stamp) == int(round(be_stamp * 1e9))]
    assert be and be[0].text.endswith("rgb=10,200,30"), [a.text for a in be]
    # after the resolution change, outputs have the new size; the buffer restarted (only new-size frames)
    last = [p for p in client.got(f"{NODE}/points/ball") if ns(p.header.stamp) == int(round(last_stamp * 1e9))]
    assert last and (last[0].image_width, last[0].image_height) == (80, 60)
    assert all(ns(p.stamp) > int(round((last_stamp - 2.5) * 1e9)) for p in last[0].points)
    # warnings are rate limited (5 s per kind)
    warnings = len(re.findall("dropping bad frame", node.output()))
    assert 1 <= warnings <= 1 + int(elapsed // 5) + 1, warnings
    sender.close()


def _jpeg(color, w=64, h=48, fmt=".jpg") -> bytes:
    ok, buf = cv2.imencode(fmt, np.full((h, w, 3), color, np.uint8))
    assert ok
    return buf.tobytes()


def test_corrupt_compressed_frames(node, client):
    assert client.transition(NODE, "deactivate")
    assert client.set_params(NODE, input_compressed=True)[0].successful
    assert client.transition(NODE, "activate")
    sender = FrameSender(client, TOPIC, compressed=True, rate_hz=20)
    png, jpg = _jpeg((50, 100, 200), fmt=".png"), _jpeg((50, 100, 200))
    rng = np.random.default_rng(0)
    cases = [("png", png, "keep"), ("jpeg", jpg, "keep"),
             ("png", png[: len(png) // 2], "?"),                       # truncated png
             ("jpeg", jpg[:40], "?"),                                   # jpeg cut inside the header
             ("jpeg", jpg[:200] + rng.integers(0, 256, 400, np.uint8).tobytes(), "?"),  # garbage after the header
             ("jpeg", rng.integers(0, 256, 2000, np.uint8).tobytes(), "bad"),
             ("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "bad"),
             ("jpeg", b"", "bad"), ("png", png, "keep"), ("jpeg", jpg, "keep")]
    msgs = [CompressedImage(header=Header(stamp=stamp(3000.0 + i), frame_id="cam"), format=fmt, data=data)
            for i, (fmt, data, _) in enumerate(cases)]
    before = client.diagnostics(NODE)
    sent = sender.send(msgs)
    after = wait_until(lambda: (d := client.diagnostics(NODE)) and int(d.get("frames_received", 0)) - int(
        before.get("frames_received", 0)) == sent and d, 10.0, what="all compressed frames counted")
    d = delta(before, after)
    print(f"compressed: sent {sent}, counter deltas {d}")
    bad = sum(n for k, n in d.items() if k.startswith("bad_"))
    assert d.get("buffer_kept", 0) + bad == sent, d  # each frame is either decoded and kept or counted as bad
    assert d.get("buffer_kept", 0) >= sum(1 for c in cases if c[2] == "keep")
    assert bad >= sum(1 for c in cases if c[2] == "bad")
    assert node.proc.poll() is None
    sender.close()
    assert client.transition(NODE, "deactivate")
    assert client.set_params(NODE, input_compressed=False)[0].successful
    assert client.transition(NODE, "activate")


def test_8k_frame(node, client):
    """An 8K rgb8 frame (7680x4320, 99.5 MB) over DDS with the project's SHM-only Fast DDS profile
    (config/fastdds_shm.xml: 64 MiB segment, 16 MiB max message). Measured: a RELIABLE publisher delivers it
    (fragmented) and the node decodes and keeps it (its resolution change restarts the buffer), then the next
    frames are processed normally. (BEST_EFFORT frames this large are not guaranteed: see docs.)"""
    sender = FrameSender(client, TOPIC, rate_hz=20)
    before = client.diagnostics(NODE)
    big = rgb_image(5000.0, 7680, 4320)
    sender.pub.publish(big)
    acked = sender.pub.wait_for_all_acked(Duration(seconds=5))
    del big
    sent = sender.send([rgb_image(5001.0 + i) for i in range(3)])
    wait_until(lambda: any(ns(a.header.stamp) == int(round(5003.0 * 1e9)) for a in client.got(f"{NODE}/answers/what")),
               15.0, what="answers after the 8K frame")
    after = client.diagnostics(NODE)
    d = delta(before, after)
    got_8k = d.get("frames_received", 0) - sent
    print(f"8K rgb8 frame: acked={acked}, received by the node={got_8k}, counter deltas {d}")
    assert node.proc.poll() is None
    assert acked and got_8k == 1, "the 8K frame did not pass DDS with the SHM profile"
    assert d.get("buffer_kept", 0) == sent + got_8k
    sender.close()
