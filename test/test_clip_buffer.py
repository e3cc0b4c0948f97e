"""Clip buffer: decimation, stride, window, memory bound, bad stamps, resets."""

import numpy as np
import pytest

from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer, whole_clips
from molmo2_ros.core.sampling import SLOWFAST_PRESETS, SlowFastConfig
from molmo2_ros.core.types import NS_PER_S, Frame

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

T0 = 1_700_000_000 * NS_PER_S


def frame(t_s: float, size=(48, 64)) -> Frame:
    return Frame(T0 + round(t_s * NS_PER_S), np.zeros((*size, 3), np.uint8), "cam")


def feed(buf: ClipBuffer, times, **kw):
    return [c for c in (buf.push(frame(t, **kw)) for t in times) if c is not None]


def test_decimates_30hz_to_2fps_and_emits_every_stride():
    buf = ClipBuffer(BufferConfig(window_s=8, stride_s=1))
    clips = feed(buf, [i / 30 for i in range(30 * 20)])
    assert buf.counters["kept"] == 40 and buf.counters["decimated"] == 560
    assert len(clips) == 19
    ends = [c.end_ns for c in clips]
    assert all(b - a == NS_PER_S for a, b in zip(ends, ends[1:]))
    full = clips[-1]
    assert len(full.frames) == 16  # 8 s at 2 fps
    gaps = {b - a for a, b in zip(full.stamps_ns, full.stamps_ns[1:])}
    assert gaps == {NS_PER_S // 2}
    assert full.end_ns - full.start_ns == round(7.5 * NS_PER_S)
    assert buf.buffered_frames <= buf.config.max_buffered_frames()


@pytest.mark.parametrize("window_s, max_frames, expected", [(0.4, 128, 1), (3.9, 128, 8), (4.0, 128, 8),
                                                             (19.9, 128, 40), (60, 10, 10)])
def test_whole_clips_are_those_with_a_full_window(window_s, max_frames, expected):
    config = BufferConfig(window_s=window_s, stride_s=1.0, max_frames=max_frames)
    assert config.frames_per_window == expected
    times = [i / 10 for i in range(10 * 90)]
    frames = [frame(t) for t in times]
    every = feed(ClipBuffer(config), times)
    whole = whole_clips(frames, config)
    assert whole and all(len(c.frames) == expected for c in whole)
    assert [c.end_ns for c in whole] == [c.end_ns for c in every if len(c.frames) == expected]
    assert len(whole) < len(every) or window_s <= 1.0  # the first, shorter clips are left out
    assert [c.end_ns for c in whole_clips(frames, config, limit=2)] == [c.end_ns for c in whole[:2]]


def test_clip_keeps_newest_frame_and_max_frames():
    buf = ClipBuffer(BufferConfig(window_s=60, stride_s=5, max_frames=10))
    clip = None
    for i in range(400):
        f = frame(i * 0.25)
        new = buf.push(f)
        if new is not None:
            clip = new
            assert clip.end_ns == f.stamp_ns  # the newest frame is always in the clip
            assert len(clip.frames) <= 10
    assert len(clip.frames) == 10
    assert buf.buffered_frames <= buf.config.max_buffered_frames() <= 12


def test_duplicate_out_of_order_zero_are_dropped_and_counted():
    buf = ClipBuffer(BufferConfig())
    feed(buf, [0.0, 0.5, 1.0])
    buf.push(frame(1.0))
    buf.push(frame(0.8))
    buf.push(Frame(0, np.zeros((48, 64, 3), np.uint8)))
    assert buf.counters["dropped_duplicate"] == 1
    assert buf.counters["dropped_out_of_order"] == 1
    assert buf.counters["dropped_zero_stamp"] == 1
    assert buf.epoch == 0 and buf.buffered_frames == 3


def test_backward_jump_resets_buffer():
    buf = ClipBuffer(BufferConfig(window_s=4, stride_s=1))
    feed(buf, [i * 0.5 for i in range(20)])
    assert buf.buffered_frames > 0
    clips = feed(buf, [i * 0.5 for i in range(6)])  # bag loops back to the start
    assert buf.counters["reset_backward_jump"] == 1 and buf.epoch == 1
    assert all(c.epoch == 1 for c in clips)
    assert all(c.start_ns >= frame(0).stamp_ns for c in clips)
    assert clips[-1].frames[0].sample_index == 0


def test_resolution_change_restarts_buffer():
    buf = ClipBuffer(BufferConfig(window_s=4, stride_s=1))
    feed(buf, [i * 0.5 for i in range(8)])
    clips = feed(buf, [4 + i * 0.5 for i in range(8)], size=(96, 128))
    assert buf.counters["reset_resolution_change"] == 1
    assert all(c.width == 128 for c in clips)


def test_gap_of_minutes_gives_clip_with_real_stamps():
    buf = ClipBuffer(BufferConfig(window_s=8, stride_s=1))
    feed(buf, [i * 0.5 for i in range(10)])
    clips = feed(buf, [300 + i * 0.5 for i in range(6)])
    assert clips and all(c.start_ns >= frame(300).stamp_ns for c in clips)
    assert buf.epoch == 0


def test_key_frames_keep_role_across_windows():
    buf = ClipBuffer(BufferConfig(window_s=4, stride_s=1), SlowFastConfig(key_every=4))
    clips = feed(buf, [i * 0.5 for i in range(40)])
    roles = {}
    for c in clips:
        for f in c.frames:
            roles.setdefault(f.stamp_ns, set()).add((f.pooling, f.is_key))
            assert f.is_key == (f.sample_index % 4 == 0)
    assert all(len(r) == 1 for r in roles.values())


def test_visual_tokens_reported():
    uniform = feed(ClipBuffer(BufferConfig(), SlowFastConfig(enabled=False)), [i * 0.5 for i in range(20)])[-1]
    slowfast = feed(ClipBuffer(BufferConfig()), [i * 0.5 for i in range(20)])[-1]
    detail = feed(ClipBuffer(BufferConfig(), SLOWFAST_PRESETS["detail"]), [i * 0.5 for i in range(20)])[-1]
    assert uniform.num_visual_tokens == 16 * 81
    # Default plan: 4 key frames at the released 3x3 (81 tokens), 12 others at 5x5 (36): 1.71x fewer than uniform.
    assert slowfast.num_visual_tokens == 4 * 81 + 12 * 36
    assert detail.num_visual_tokens == 4 * 196 + 12 * 81


def test_clip_between_and_latest():
    buf = ClipBuffer(BufferConfig(window_s=8))
    feed(buf, [i * 0.5 for i in range(20)])
    clip = buf.clip_between(frame(6).stamp_ns, frame(8).stamp_ns)
    assert clip.start_ns == frame(6).stamp_ns and clip.end_ns == frame(8).stamp_ns
    assert buf.clip_between(frame(100).stamp_ns, frame(101).stamp_ns) is None
    assert buf.latest_clip().end_ns == frame(9.5).stamp_ns


@pytest.mark.parametrize("kw", [dict(sample_fps=3), dict(max_frames=129), dict(window_s=0), dict(max_frames=0)])
def test_config_validation(kw):
    with pytest.raises(ValueError):
        BufferConfig(**kw)
