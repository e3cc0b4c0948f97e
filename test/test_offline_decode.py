"""Image decoding of every supported encoding, padded rows, big-endian 16 bit, and bad input."""

import cv2
import numpy as np
import pytest

from molmo2_ros.core.image_decode import BadImage, decode_compressed, decode_raw

pytestmark = pytest.mark.ros_free  # imports nothing from ROS: CI runs it once (conftest.py)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _pad(rows: np.ndarray, extra: int) -> tuple[bytes, int]:
    flat = rows.reshape(rows.shape[0], -1)
    padded = np.concatenate([flat, np.full((flat.shape[0], extra), 77, np.uint8)], axis=1)
    return padded.tobytes(), padded.shape[1]


@pytest.mark.parametrize("extra", [0, 5])
@pytest.mark.parametrize("enc,pixels", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]), ("rgba8", np.dstack([RGB, np.full((6, 8), 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.full((6, 8), 9, np.uint8)]))])
def test_color_encodings(enc, pixels, extra):
    data, step = _pad(np.ascontiguousarray(pixels), extra)
    assert np.array_equal(decode_raw(enc, 8, 6, step, 0, data), RGB)


def test_mono8_and_mono16_endianness():
    gray = RGB[..., 0]
    out = decode_raw("mono8", 8, 6, 8, 0, gray.tobytes())
    assert out.shape == (6, 8, 3) and np.array_equal(out[..., 1], gray)
    wide = gray.astype(np.uint16) * 256 + 17
    le = decode_raw("mono16", 8, 6, 16, 0, wide.astype("<u2").tobytes())
    data, step = _pad(wide.astype(">u2").view(np.uint8).reshape(6, 16), 4)
    be = decode_raw("mono16", 8, 6, step, 1, data)
    assert np.array_equal(le[..., 0], gray) and np.array_equal(be[..., 0], gray)


def test_yuv_and_bayer():
    uyvy = np.full((6, 8, 2), 128, np.uint8)
    uyvy[..., 1] = 200  # luma
    for enc, arr in (("yuv422", uyvy), ("uyvy", uyvy), ("yuyv", uyvy[..., ::-1]), ("yuv422_yuy2", uyvy[..., ::-1])):
        out = decode_raw(enc, 8, 6, 16, 0, np.ascontiguousarray(arr).tobytes())
        assert out.shape == (6, 8, 3) and abs(int(out.mean()) - 200) <= 30, enc
    red = np.zeros((6, 8), np.uint8)
    red[0::2, 0::2] = 250  # R sites of an RGGB mosaic of a pure red scene
    out = decode_raw("bayer_rggb8", 8, 6, 8, 0, red.tobytes())
    assert out[2:4, 2:6, 0].mean() > 200 and out[2:4, 2:6, 1:].mean() < 50


def test_compressed_roundtrip_and_bad_inputs():
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    assert np.array_equal(decode_compressed("png", png.tobytes()), RGB)
    with pytest.raises(BadImage, match="no data"):
        decode_compressed("jpeg", b"")
    with pytest.raises(BadImage, match="cannot decode"):
        decode_compressed("jpeg", b"not a jpeg")
    with pytest.raises(BadImage, match="needs"):
        decode_raw("rgb8", 8, 6, 24, 0, RGB.tobytes()[:-30])
    with pytest.raises(BadImage, match="step"):
        decode_raw("rgb8", 8, 6, 10, 0, RGB.tobytes())
    with pytest.raises(BadImage, match="unsupported"):
        decode_raw("32FC1", 8, 6, 32, 0, bytes(6 * 32))
    with pytest.raises(BadImage, match="size"):
        decode_raw("rgb8", 0, 6, 0, 0, b"")
    assert issubclass(BadImage, ValueError)
