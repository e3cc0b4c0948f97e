"""Depth and CameraInfo of a bag for `molmo2-ros replay --depth`: the replay feeds a stream's depth store from the
bag's aligned depth topic in stamp order, ahead of each colour frame, as the live node's depth subscription would.

Topics: `--depth-topic`, else the bag's Image topic with "depth" in its name (first by name); `--camera-info-topic`,
else the CameraInfo topic in the colour topic's namespace, else the first one. The first CameraInfo message is
used (intrinsics do not change while recording). Without a CameraInfo topic the replay is 2D only (one warning).
The bag is opened and read as the colour frames are (offline/data/bags.py), so every bag replay reads, it reads with
depth too: Humble sqlite3 bags without message definitions, bags with service-event topics, ROS 1 files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from molmo2_ros.core.depth import CameraModel, depth_from_msg
from molmo2_ros.core.intake import BadFrame, DepthGate
from molmo2_ros.core.stream import Stream
from molmo2_ros.offline.data.bags import deserialized, deserializer, header_stamp_ns, open_storage, read_messages

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def pick_depth_topics(connections, colour_topic: str, depth_topic: str = "", info_topic: str = "") -> tuple[str, str]:
    """(depth topic, CameraInfo topic or ""); ValueError when the bag has no such depth topic."""
    images = sorted({c.topic for c in connections if c.msgtype == IMAGE} - {colour_topic})
    infos = sorted({c.topic for c in connections if c.msgtype == CAMERA_INFO})
    known = ", ".join(sorted(f"{c.topic} [{c.msgtype}]" for c in connections))
    if depth_topic:
        if depth_topic not in images:
            raise ValueError(f"depth topic '{depth_topic}' is not an Image topic of the bag (topics: {known})")
    else:
        depth_topic = next((t for t in images if "depth" in t), "")
        if not depth_topic:
            raise ValueError(f"the bag has no depth Image topic (none with 'depth' in its name; topics: {known}): "
                             "pass --depth-topic")
    if info_topic:
        if info_topic not in infos:
            raise ValueError(f"'{info_topic}' is not a CameraInfo topic of the bag (topics: {known})")
    else:
        sibling = colour_topic.rsplit("/", 1)[0] + "/camera_info"
        info_topic = sibling if sibling in infos else (infos[0] if infos else "")
    return depth_topic, info_topic


class DepthFeeder:
    """Reads the depth and CameraInfo topics of a bag for one stream (with depth enabled). `feed_until(stamp)`
    adds every depth frame stamped up to `stamp + max_dt` that the stream can use; call it before pushing the
    colour frame of that stamp. Depth frames go through the node's depth gate (core/intake.py), counted in the
    stream's counters with the node's names (depth_frames_decoded, depth_frames_skipped, depth_bad_<reason>); the
    first bad frame of each reason is warned of."""

    def __init__(self, bag: str | Path, stream: Stream, colour_topic: str, depth_topic: str = "",
                 info_topic: str = "", warn=lambda message: print(f"warning: {message}", file=sys.stderr)) -> None:
        self.stream = stream
        self._warn = warn
        self._warned: set[str] = set()
        self._path = Path(bag)
        self._reader, self._ros1 = open_storage(self._path)
        self._deserialize = deserializer(self._ros1)
        try:
            self.depth_topic, self.info_topic = pick_depth_topics(self._reader.connections, colour_topic,
                                                                  depth_topic, info_topic)
            self._read_camera_info()
        except Exception:
            self._reader.close()
            raise
        conns = [c for c in self._reader.connections if c.topic == self.depth_topic]
        self._gate = DepthGate(lambda: stream, depth_from_msg, stream.counters, self._dropped, prefix="depth_")
        self._messages = deserialized(read_messages(self._reader, conns, self._path), self._deserialize,
                                      self._gate.drop)
        self._next: tuple[int, Any] | None = None
        self._done = False

    def _read_camera_info(self) -> None:
        if not self.info_topic:
            self._warn_once("no_info", "the bag has no CameraInfo topic: replaying 2D only (3D needs the colour "
                                       "camera's intrinsics; pass --camera-info-topic)")
            return
        conns = [c for c in self._reader.connections if c.topic == self.info_topic]
        for conn, _, raw in read_messages(self._reader, conns, self._path):
            msg = self._deserialize(raw, conn.msgtype)
            k, d = (msg.K, msg.D) if self._ros1 else (msg.k, msg.d)  # ROS 1 spells them in capitals
            try:
                self.stream.depth.set_camera(CameraModel.from_camera_info(
                    int(msg.width), int(msg.height), k, d, msg.distortion_model, msg.header.frame_id))
            except ValueError as error:
                self._warn_once("bad_info", f"CameraInfo on {self.info_topic} is unusable ({error}): 2D only")
            return
        self._warn_once("no_info", f"no CameraInfo message on {self.info_topic}: replaying 2D only")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._warn(message)

    def _dropped(self, error: BadFrame, _msg: Any) -> None:
        self._warn_once(error.reason, f"depth on {self.depth_topic}: {error}; such frames are dropped")

    def _peek(self) -> tuple[int, Any] | None:
        """(header stamp, message) of the next depth message, or None at the end."""
        if self._next is None and not self._done:
            item = next(self._messages, None)
            if item is None:
                self._done = True
            else:
                msg = item[2]
                self._next = (header_stamp_ns(msg), msg)
        return self._next

    def feed_until(self, colour_stamp_ns: int) -> None:
        store = self.stream.depth.store
        while (item := self._peek()) is not None and item[0] <= colour_stamp_ns + store.max_dt_ns:
            self._next = None
            depth = self._gate.take(*item)
            if depth is not None:
                store.add_depth(depth)

    def notices(self) -> None:
        """Warn about the lifter's problems (not aligned, CameraInfo of another size), once each."""
        for message in self.stream.depth.notices.take():
            self._warn_once(message, message)

    def close(self) -> None:
        self.notices()
        self._reader.close()
