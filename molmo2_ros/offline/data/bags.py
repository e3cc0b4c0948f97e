"""Reading a camera topic from rosbag2 bags of every ROS 2 distribution (and ROS 1 bags), decoding on demand.

rosbags' AnyReader parses the message definition of every connection and guesses the bag format from the file
name. That fails on bags robots really record, so this module opens the storage reader itself:
- Humble's sqlite3 storage keeps no message definitions (AnyReader then needs a default type store);
- bags recorded with service introspection (Jazzy and newer) hold `*/srv/*_Event` topics whose schema is the raw
  `.srv` text, which rosbags cannot parse; other custom schemas may be unparsable too;
- a rosbag2 folder whose name ends in `.bag` is taken for a ROS 1 file.
Only the connections read are deserialized, with rosbags' built-in sensor_msgs definitions (`deserializer`:
Image, CompressedImage and CameraInfo are the same in every ROS 2 distribution), so the bag's own definitions are
never needed. Replay's depth reader (offline/data/depth_bag.py) reads through the same `open_storage`, `deserializer`
and `read_messages`, and `molmo2-ros play` opens bags with `open_storage`, so they take every bag this one takes.

Frames come out in log-time order as `BagFrame`s: the header stamp is read at once (deserializing CDR gives
zero-copy views of the pixel bytes), the pixels are decoded only by `BagFrame.decode()`, so that the replay's intake
(core/intake.py, the node's) asks the clip buffer first and skips frames that will not be sampled. A message that
cannot be deserialized is a dropped frame of the intake's vocabulary (BadFrame, undeserializable).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from molmo2_ros.core.image_decode import frame_from_compressed, frame_from_image
from molmo2_ros.core.intake import BadFrame
from molmo2_ros.core.types import NS_PER_S, Frame

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SERVICE_EVENT_SUFFIX = "/_service_event"
BAG_REMEDY = "pass a rosbag2 folder (with metadata.yaml), a .mcap or .db3 file of one, or a ROS 1 .bag file"
DAMAGED_REMEDY = "repair it (mcap: `mcap recover`; sqlite3: the sqlite3 shell's .recover) or record it again"


class BagError(RuntimeError):
    """The bag cannot be read; the message names the bag, topic or message and says what to do."""


def open_storage(path: str | Path):
    """An opened rosbags reader (rosbag2 folder or storage file, or ROS 1 file) and whether it is ROS 1.

    Raises BagError with a remedy when the path is missing or not a bag."""
    from rosbags.rosbag1 import Reader as Reader1
    from rosbags.rosbag2 import Reader as Reader2

    path = Path(path)
    if not path.exists():
        raise BagError(f"cannot open bag '{path}': it does not exist; {BAG_REMEDY}")
    ros1 = path.is_file() and path.suffix == ".bag"
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"cannot open bag '{path}': a folder without metadata.yaml is not a rosbag2 bag; {BAG_REMEDY}")
    try:
        reader = Reader1(path) if ros1 else Reader2(path)
        reader.open()
    except Exception as error:  # noqa: BLE001 - any storage failure becomes one clear error
        looks_like_bag = path.is_dir() or path.suffix in (".mcap", ".db3", ".bag")
        remedy = f"the bag is damaged or incomplete: {DAMAGED_REMEDY}" if looks_like_bag else BAG_REMEDY
        raise BagError(f"cannot open bag '{path}' ({type(error).__name__}: {error}); {remedy}") from error
    return reader, ros1


def deserializer(ros1: bool) -> Callable[[Any, str], Any]:
    """`deserialize(raw, msgtype)` with rosbags' built-in definitions (Noetic for ROS 1, Humble for rosbag2), not
    the bag's own: Humble's sqlite3 bags hold none, and other schemas in a bag may be unparsable."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    return store.deserialize_ros1 if ros1 else store.deserialize_cdr


def read_messages(reader, connections: list, path: Path) -> Iterator[tuple[Any, int, Any]]:
    """(connection, log time ns, raw message) of `connections` of an `open_storage` reader, in log-time order. The
    storage failing mid-way (a damaged chunk, ...) raises BagError with a remedy."""
    count = 0
    try:
        for item in reader.messages(connections=connections):
            yield item
            count += 1
    except Exception as error:  # noqa: BLE001 - any storage failure becomes one clear error
        topics = ", ".join(sorted({c.topic for c in connections}))
        raise BagError(f"reading bag '{path}' failed after {count} messages of {topics} "
                       f"({type(error).__name__}: {error}): the bag is damaged; {DAMAGED_REMEDY}") from error


def deserialized(messages: Iterable[tuple[Any, int, Any]], deserialize: Callable[[Any, str], Any],
                 on_bad: Callable[[BadFrame], None] | None = None) -> Iterator[tuple[int, int, Any]]:
    """(index, log time ns, message) of `read_messages`' items; a message that cannot be deserialized is skipped,
    told to `on_bad` as BadFrame (undeserializable)."""
    for index, (conn, log_ns, raw) in enumerate(messages):
        try:
            msg = deserialize(raw, conn.msgtype)
        except Exception as error:  # noqa: BLE001 - a corrupt message is a counted drop
            if on_bad is not None:
                on_bad(BadFrame("undeserializable", f"message {index} (log time {log_ns} ns) cannot be deserialized "
                                                    f"as {conn.msgtype}: {error}"))
            continue
        yield index, log_ns, msg


def header_stamp_ns(msg: Any) -> int:
    """header.stamp of a deserialized message, in ns."""
    return int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec)


def is_service_event(connection) -> bool:
    """A service-introspection topic (`<service>/_service_event`, type `pkg/srv/Name_Event`)."""
    return connection.topic.endswith(SERVICE_EVENT_SUFFIX) or "/srv/" in connection.msgtype


def pick_camera_topic(connections, topic: str = "") -> tuple[str, str]:
    """(topic, msgtype): `topic` when given, else the first Image or CompressedImage topic (by name)."""
    # topics named *depth* last: they are rarely the colour camera (an RGB-D bag)
    image_topics = sorted({(c.topic, c.msgtype) for c in connections if c.msgtype in IMAGE_TYPES},
                          key=lambda t: ("depth" in t[0], t))
    known = ", ".join(sorted(f"{c.topic} [{c.msgtype}]" for c in connections)) or "none"
    if topic:
        match = [t for t in image_topics if t[0] == topic]
        if not match:
            raise BagError(f"topic '{topic}' is not an Image/CompressedImage topic of the bag: pass --topic with one "
                           f"of its image topics (topics: {known})")
        return match[0]
    if not image_topics:
        raise BagError(f"the bag has no sensor_msgs/Image or sensor_msgs/CompressedImage topic (topics: {known})")
    return image_topics[0]


class BagFrame:
    """One camera message: header stamp (ns) and log time known, pixels decoded by `decode()`."""

    __slots__ = ("index", "log_ns", "stamp_ns", "_msg", "_compressed")

    def __init__(self, index: int, log_ns: int, msg: Any, compressed: bool) -> None:
        self.index, self.log_ns = index, log_ns
        self.stamp_ns = header_stamp_ns(msg)
        self._msg, self._compressed = msg, compressed

    def decode(self) -> Frame:
        """The frame with RGB pixels. Raises BadImage."""
        return (frame_from_compressed if self._compressed else frame_from_image)(self._msg, self.stamp_ns)


class CameraBag:
    """One camera topic of a bag. Use as a context manager; `frames()` iterates once, in log-time order."""

    def __init__(self, path: str | Path, topic: str = "") -> None:
        self.path = Path(path)
        self._reader, self.ros1 = open_storage(self.path)
        try:
            self.topic, self.msgtype = pick_camera_topic(self._reader.connections, topic)
        except BagError:
            self._reader.close()
            raise
        self._connections = [c for c in self._reader.connections if c.topic == self.topic]
        self.count = sum(c.msgcount for c in self._connections)
        self._deserialize = deserializer(self.ros1)

    def __enter__(self) -> CameraBag:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def frames(self, on_bad: Callable[[BadFrame], None] | None = None) -> Iterator[BagFrame]:
        """The camera's frames; a message that cannot be deserialized is skipped, told to `on_bad`."""
        compressed = self.msgtype.endswith("CompressedImage")
        messages = read_messages(self._reader, self._connections, self.path)
        for index, log_ns, msg in deserialized(messages, self._deserialize, on_bad):
            yield BagFrame(index, log_ns, msg, compressed)


def decoded_frames(path: str | Path, topic: str = "") -> list[Frame]:
    """Every decodable frame of the bag's camera topic, decoded, in log-time order (benchmarks and tests that need
    the pixels of every frame; replay decodes on demand instead)."""
    with CameraBag(path, topic) as camera:
        out = []
        for item in camera.frames():
            try:
                out.append(item.decode())
            except BadFrame:
                continue
        return out
