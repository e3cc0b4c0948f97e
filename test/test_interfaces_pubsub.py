"""Every molmo2_ros message type travels between two processes over Fast DDS (shared memory, this host only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.ros_client import terminate
from helpers.sample_msgs import sample_messages, to_dict

HELPERS = Path(__file__).resolve().parent / "helpers"
TIMEOUT_S = 40.0


def test_all_message_types_between_processes(ros_env, tmp_path):
    prefix = "/molmo2_test"
    sub_out = tmp_path / "subscriber.out"
    with open(sub_out, "w") as out:
        sub = subprocess.Popen(
            [sys.executable, str(HELPERS / "pubsub_subscriber.py"), prefix, str(TIMEOUT_S)],
            env=ros_env, stdout=out, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        pub = subprocess.Popen(
            [sys.executable, str(HELPERS / "pubsub_publisher.py"), prefix],
            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        try:
            pub_out, pub_err = pub.communicate(timeout=TIMEOUT_S)
            _, sub_err = sub.communicate(timeout=TIMEOUT_S)
        finally:
            terminate(pub)
            terminate(sub)

    lines = sub_out.read_text().splitlines()
    assert pub.returncode == 0, f"publisher exit {pub.returncode}\n{pub_out}\n{pub_err}"
    assert sub.returncode == 0, f"subscriber exit {sub.returncode}\n{sub_err}\n" + "\n".join(lines)
    assert lines and lines[0] == "READY"

    got = {}
    for line in lines[1:]:
        record = json.loads(line)
        got[record["type"]] = record["msg"]
    expected = {name: to_dict(msg) for name, msg in sample_messages().items()}
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == expected[name], name
