"""sensor_msgs/Image and CompressedImage payloads -> RGB uint8 arrays (pure numpy/cv2, no cv_bridge), and messages
-> Frames for the intake (core/intake.py) of the node and the replay alike (rclpy and rosbags messages have the same
fields).

Row padding (`step` > width * bytes per pixel) is honoured. 16-bit images keep their 8 most significant bits.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .intake import BadFrame
from .types import Frame

# encoding -> (channels, bytes per channel)
_LAYOUT: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1), "8uc1": (1, 1),
    "8uc3": (3, 1), "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2), "mono16": (1, 2),
    "16uc1": (1, 2), "yuv422": (2, 1), "uyvy": (2, 1), "yuv422_yuy2": (2, 1), "yuyv": (2, 1),
    "bayer_rggb8": (1, 1), "bayer_bggr8": (1, 1), "bayer_gbrg8": (1, 1), "bayer_grbg8": (1, 1),
    "bayer_rggb16": (1, 2), "bayer_bggr16": (1, 2), "bayer_gbrg16": (1, 2), "bayer_grbg16": (1, 2),
}

# OpenCV names Bayer patterns by the second row's first two pixels, so ROS "rggb" is OpenCV "BG".
_BAYER = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
          "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}

_TO_RGB = {"rgb": None, "bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB,
           "mono": cv2.COLOR_GRAY2RGB, "8uc1": cv2.COLOR_GRAY2RGB, "8uc3": None, "16uc1": cv2.COLOR_GRAY2RGB}


class BadImage(BadFrame):
    """The image cannot be decoded; `reason`: unsupported_encoding, empty_image, bad_step, truncated_data, empty_data,
    undecodable."""


SUPPORTED_ENCODINGS = tuple(sorted(_LAYOUT))


def _rows(width: int, height: int, step: int, bytes_per_pixel: int, data: bytes | bytearray | memoryview,
          encoding: str) -> np.ndarray:
    """(height, width * bytes_per_pixel) uint8 view of the pixel bytes without row padding."""
    if width <= 0 or height <= 0:
        raise BadImage("empty_image", f"{encoding} image has size {width}x{height}")
    row = width * bytes_per_pixel
    if step < row:
        raise BadImage("bad_step", f"{encoding} image: step {step} < width {width} * {bytes_per_pixel} bytes per pixel")
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size < step * (height - 1) + row:
        raise BadImage("truncated_data", f"{encoding} image {width}x{height} step {step} needs {step * height} bytes, "
                                         f"got {buf.size}")
    if buf.size >= step * height:
        return buf[:step * height].reshape(height, step)[:, :row]
    padded = np.zeros(step * height, np.uint8)
    padded[:buf.size] = buf
    return padded.reshape(height, step)[:, :row]


def decode_raw(encoding: str, width: int, height: int, step: int, is_bigendian: int | bool,
               data: bytes | bytearray | memoryview) -> np.ndarray:
    """RGB uint8 (height, width, 3) from a sensor_msgs/Image's fields. Raises BadImage."""
    enc = encoding.lower()
    if enc not in _LAYOUT:
        raise BadImage("unsupported_encoding",
                       f"unsupported encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, depth = _LAYOUT[enc]
    rows = _rows(width, height, step, channels * depth, data, encoding)
    if depth == 2:
        wide = rows.reshape(height, width * channels, 2)
        hi = wide[..., 0] if is_bigendian else wide[..., 1]
        pixels = np.ascontiguousarray(hi)
    else:
        pixels = np.ascontiguousarray(rows)
    if enc.startswith("bayer_"):
        return cv2.cvtColor(pixels.reshape(height, width), _BAYER[enc[6:10]])
    if channels == 2:
        if width % 2:
            raise BadImage("undecodable", f"{encoding} image needs an even width, got {width}")
        code = cv2.COLOR_YUV2RGB_UYVY if enc in ("yuv422", "uyvy") else cv2.COLOR_YUV2RGB_YUY2
        return cv2.cvtColor(pixels.reshape(height, width, 2), code)
    img = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    code = _TO_RGB[enc.rstrip("0123456789") if enc not in _TO_RGB else enc]
    return np.ascontiguousarray(img) if code is None else cv2.cvtColor(img, code)


def decode_compressed(format: str, data: bytes | bytearray | memoryview) -> np.ndarray:
    """RGB uint8 (height, width, 3) from a sensor_msgs/CompressedImage (jpeg, png, ...). Raises BadImage."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise BadImage("empty_data", f"compressed image ({format or 'no format'}) has no data")
    if "compressedDepth" in format:
        raise BadImage("undecodable", f"compressedDepth images are not colour images (format '{format}')")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise BadImage("undecodable", f"cannot decode compressed image with format '{format}' ({buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def frame_from_image(msg: Any, stamp_ns: int) -> Frame:
    """The Frame of a sensor_msgs/Image (any supported encoding, padded rows). Raises BadImage."""
    rgb = decode_raw(msg.encoding, int(msg.width), int(msg.height), int(msg.step), msg.is_bigendian, msg.data)
    return Frame(stamp_ns=stamp_ns, image=rgb, frame_id=str(msg.header.frame_id))


def frame_from_compressed(msg: Any, stamp_ns: int) -> Frame:
    """The Frame of a sensor_msgs/CompressedImage. Raises BadImage."""
    return Frame(stamp_ns=stamp_ns, image=decode_compressed(msg.format, msg.data), frame_id=str(msg.header.frame_id))
