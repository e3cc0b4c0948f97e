"""A video file -> a rosbag2 camera bag, stamped so that `molmo2-ros convert` ground truth lines up with it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2

from molmo2_ros.core.types import NS_PER_S
from molmo2_ros.offline.evaluation.convert import DEFAULT_START_NS
from molmo2_ros.offline.data.scenario import image_message


# FFmpeg opens any text file as a "video" rendered by its ANSI-art decoder: that is not camera footage.
_TEXT_CODECS = {b"ansi"}
# FFmpeg prints its own diagnostics to stderr when a file is no video ("moov atom not found"); VideoError says what
# is wrong and what to do instead. OpenCV reads this once, when it first opens a file with FFmpeg; a value set by
# the user wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


class VideoError(ValueError):
    """The video cannot be read or the bag cannot be written; the message says what to do."""


def _check_output(out_bag: Path) -> None:
    """The output must be a new path (rosbags never overwrites); an empty folder is taken over."""
    if not out_bag.exists():
        return
    if out_bag.is_dir() and not any(out_bag.iterdir()):
        out_bag.rmdir()
        return
    what = "already holds a bag" if (out_bag / "metadata.yaml").is_file() else "already exists"
    raise VideoError(f"output '{out_bag}' {what}: choose a new output path (the bag folder is created) or delete it")


def video_to_bag(video: str | Path, out_bag: str | Path, *, encoding: str = "jpeg", start_ns: int = DEFAULT_START_NS,
                 frame_id: str = "camera", storage: str = "mcap", jpeg_quality: int = 90) -> int:
    """Write every frame of `video` at stamp start_ns + frame_index / fps; returns the number of frames.

    encoding: jpeg (CompressedImage on /camera/image_raw/compressed) or rgb8/bgr8/mono8 (Image on
    /camera/image_raw). Raises VideoError when the video is missing or unreadable, or the output exists or cannot
    be written; nothing is left at out_bag then."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
    from rosbags.typesys import Stores, get_typestore

    video, out_bag = Path(video), Path(out_bag)
    if not video.is_file():
        raise VideoError(f"video '{video}' does not exist (or is not a file): pass the path of a video file")
    _check_output(out_bag)
    capture = cv2.VideoCapture(str(video))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        ok, bgr = capture.read() if _is_video(capture) else (False, None)
        if not ok or not fps > 0:  # `not >` also rejects a NaN frame rate
            raise VideoError(f"cannot read '{video}' as a video (not a video file, no frame rate, or a codec this "
                             f"OpenCV cannot decode): pass a video such as an H.264 .mp4")
        typestore = get_typestore(Stores.ROS2_HUMBLE)
        compressed = encoding == "jpeg"
        topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
        msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        count = 0
        try:
            with Writer(out_bag, version=9, storage_plugin=plugin) as writer:
                conn = writer.add_connection(topic, msgtype, typestore=typestore)
                while ok:
                    stamp = start_ns + round(count * NS_PER_S / fps)
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    _, msg = image_message(typestore, rgb, encoding, stamp, frame_id, jpeg_quality)
                    writer.write(conn, stamp, typestore.serialize_cdr(msg, msgtype))
                    count += 1
                    ok, bgr = capture.read()
        except BaseException as error:  # interrupted or failed: a bag cut short is no output
            shutil.rmtree(out_bag, ignore_errors=True)
            if isinstance(error, (OSError, WriterError)):
                raise VideoError(f"cannot write bag '{out_bag}' ({type(error).__name__}: {error}): choose an output "
                                 f"path in a writable folder with free space") from error
            raise
    finally:
        capture.release()
    return count


def _is_video(capture: cv2.VideoCapture) -> bool:
    """Whether OpenCV opened the file as camera-like video. An unopened capture reports -1 for every property, so
    its codec is only read once it is open."""
    if not capture.isOpened():
        return False
    codec = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    return codec not in _TEXT_CODECS
