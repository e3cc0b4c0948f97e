"""Bags written the way other ROS distributions and recorders write them, from a list of camera messages.

- `write_humble_sqlite3`: Humble's rosbag2 (0.15) sqlite3 storage: schema version 3 (tables schema, metadata,
  topics with offered_qos_profiles, messages; no message_definitions table, no type hashes) and metadata.yaml
  version 5 (ros2/rosbag2, humble branch: sqlite_storage.cpp `initialize`, bag_metadata.hpp, metadata_io.cpp).
- `write_with_service_events`: an mcap bag (rosbags' writer, version 9) that also holds a service-introspection
  topic whose schema is the raw .srv text, as Jazzy and newer record `<service>/_service_event` topics.
- `write_ros1`: a ROS 1 bag file.
Each writes the topic given, a sensor_msgs Image or CompressedImage topic as (topic, msgtype, [(log_ns, raw CDR
bytes)]), and any `more` topics after it (an RGB-D bag's depth Image and CameraInfo topics: `read_topics`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

# rosbag2's QoS dump of a default reliable, volatile, keep-last publisher (what Humble writes into the topic row)
HUMBLE_QOS = ("- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 2147483647\n"
              "    nsec: 4294967295\n  lifespan:\n    sec: 2147483647\n    nsec: 4294967295\n  liveliness: 1\n"
              "  liveliness_lease_duration:\n    sec: 2147483647\n    nsec: 4294967295\n"
              "  avoid_ros_namespace_conventions: false")
SERVICE_EVENT_TOPIC = "/molmo2/manage_queries/_service_event"
SERVICE_EVENT_TYPE = "molmo2_ros/srv/ManageQueries_Event"
Topic = tuple[str, str, list[tuple[int, bytes]]]  # (topic, msgtype, [(log_ns, raw CDR)])


def read_topics(bag: Path) -> list[Topic]:
    """Every topic of a rosbag2 bag written by rosbags (one connection each), by name."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return [(conn.topic, conn.msgtype, [(log_ns, bytes(raw)) for _, log_ns, raw in reader.messages([conn])])
                for conn in sorted(reader.connections, key=lambda c: c.topic)]


def read_camera(bag: Path) -> Topic:
    """(topic, msgtype, [(log_ns, raw)]) of the only topic of a rosbag2 bag written by rosbags."""
    (topic,) = read_topics(bag)
    return topic


def write_humble_sqlite3(folder: Path, topic: str, msgtype: str, messages: list[tuple[int, bytes]],
                         *more: Topic) -> Path:
    """A rosbag2 folder as Humble's `ros2 bag record -s sqlite3` leaves it; returns the folder."""
    topics = [(topic, msgtype, messages), *more]
    folder.mkdir(parents=True)
    db_name = f"{folder.name}_0.db3"
    db = sqlite3.connect(folder / db_name)
    db.executescript(
        "CREATE TABLE schema(schema_version INTEGER PRIMARY KEY,ros_distro TEXT NOT NULL);"
        "CREATE TABLE metadata(id INTEGER PRIMARY KEY,metadata_version INTEGER NOT NULL,metadata TEXT NOT NULL);"
        "CREATE TABLE topics(id INTEGER PRIMARY KEY,name TEXT NOT NULL,type TEXT NOT NULL,"
        "serialization_format TEXT NOT NULL,offered_qos_profiles TEXT NOT NULL);"
        "CREATE TABLE messages(id INTEGER PRIMARY KEY,topic_id INTEGER NOT NULL,timestamp INTEGER NOT NULL, "
        "data BLOB NOT NULL);"
        "CREATE INDEX timestamp_idx ON messages (timestamp ASC);"
        "INSERT INTO schema (schema_version, ros_distro) VALUES (3, 'humble');")
    db.executemany("INSERT INTO topics (name, type, serialization_format, offered_qos_profiles) VALUES (?, ?, ?, ?)",
                   [(name, type_, "cdr", HUMBLE_QOS) for name, type_, _ in topics])
    rows = sorted((t, topic_id, raw) for topic_id, (_, _, msgs) in enumerate(topics, 1) for t, raw in msgs)
    db.executemany("INSERT INTO messages (timestamp, topic_id, data) VALUES (?, ?, ?)", rows)  # as recorded
    start = rows[0][0]
    duration = rows[-1][0] - start
    info = {
        "version": 5, "storage_identifier": "sqlite3", "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start}, "message_count": len(rows),
        "topics_with_message_count": [{"topic_metadata": {
            "name": name, "type": type_, "serialization_format": "cdr", "offered_qos_profiles": HUMBLE_QOS},
            "message_count": len(msgs)} for name, type_, msgs in topics],
        "compression_format": "", "compression_mode": "", "relative_file_paths": [db_name],
        "files": [{"path": db_name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": len(rows)}],
    }
    text = yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False)
    db.execute("INSERT INTO metadata (metadata_version, metadata) VALUES (5, ?)", (text,))
    db.commit()
    db.close()
    (folder / "metadata.yaml").write_text(text)
    return folder


def write_with_service_events(folder: Path, topic: str, msgtype: str, messages: list[tuple[int, bytes]],
                              *more: Topic, srv_text: str) -> Path:
    """An mcap bag with the camera topic and a service-event topic whose schema is `srv_text` (a .srv file)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    with Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        events = writer.add_connection(SERVICE_EVENT_TOPIC, SERVICE_EVENT_TYPE, msgdef=srv_text,
                                       rihs01="RIHS01_" + "ab" * 32)
        camera = writer.add_connection(topic, msgtype, typestore=store)
        for i, (log_ns, raw) in enumerate(messages):
            if i % 10 == 0:  # a recorded service call now and then: opaque bytes for this reader
                writer.write(events, log_ns, b"\x00\x01\x00\x00" + bytes(range(32)))
            writer.write(camera, log_ns, raw)
        for name, type_, msgs in more:
            conn = writer.add_connection(name, type_, typestore=store)
            for log_ns, raw in msgs:
                writer.write(conn, log_ns, raw)
    return folder


def write_ros1(path: Path, topic: str, msgtype: str, messages: list[tuple[int, bytes]], *more: Topic) -> Path:
    """A ROS 1 bag file with the same messages (header stamps, frame ids, pixels, intrinsics), converted from CDR
    (ROS 1 field names that differ are the ROS 2 ones in capitals: CameraInfo's D, K, R, P)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ros2, ros1 = get_typestore(Stores.ROS2_HUMBLE), get_typestore(Stores.ROS1_NOETIC)
    header_cls = ros1.types["std_msgs/msg/Header"]
    with Writer(path) as writer:
        for name, type_, msgs in [(topic, msgtype, messages), *more]:
            conn = writer.add_connection(name, type_, typestore=ros1)
            msg_cls = ros1.types[type_]
            for seq, (log_ns, raw) in enumerate(msgs):
                msg = ros2.deserialize_cdr(raw, type_)
                fields = {k: getattr(msg, k.lower()) for k in msg_cls.__dataclass_fields__ if k != "header"}
                header = header_cls(seq=seq, stamp=msg.header.stamp, frame_id=msg.header.frame_id)
                writer.write(conn, log_ns, ros1.serialize_ros1(msg_cls(header=header, **fields), type_))
    return path
