"""A video file -> a rosbag2 camera bag, stamped so that `molmo2-ros convert` ground truth lines up with it."""

from __future__ import annotations

from pathlib import Path

import cv2

from ..core.types import NS_PER_S
from .convert import DEFAULT_START_NS
from .scenario import _image_message


def video_to_bag(video: str | Path, out_bag: str | Path, *, encoding: str = "jpeg", start_ns: int = DEFAULT_START_NS,
                 frame_id: str = "camera", storage: str = "mcap", jpeg_quality: int = 90) -> int:
    """Write every frame of `video` at stamp start_ns + frame_index / fps; returns the number of frames.

    encoding: jpeg (CompressedImage on /camera/image_raw/compressed) or rgb8/bgr8/mono8 (Image on
    /camera/image_raw). Raises ValueError when the video cannot be read."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not capture.isOpened() or not fps or fps <= 0:
        raise ValueError(f"cannot read video '{video}' (or it has no frame rate)")
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    compressed = encoding == "jpeg"
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    count = 0
    try:
        with Writer(Path(out_bag), version=9, storage_plugin=plugin) as writer:
            conn = writer.add_connection(topic, msgtype, typestore=typestore)
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                stamp = start_ns + round(count * NS_PER_S / fps)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                _, msg = _image_message(typestore, rgb, encoding, stamp, frame_id, jpeg_quality)
                writer.write(conn, stamp, typestore.serialize_cdr(msg, msgtype))
                count += 1
    finally:
        capture.release()
    if not count:
        raise ValueError(f"video '{video}' has no readable frames")
    return count
