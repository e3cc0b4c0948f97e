"""The node's `preset` parameter: the preset's values are the parameters' defaults, explicit parameters win, an
unknown preset leaves the node unconfigured with the reason, and preset tiny runs the shipped model."""

from __future__ import annotations

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from molmo2_ros.core.presets import SHIPPED_MODEL, resolve_model
from molmo2_ros.ros import convert


@pytest.fixture
def make_node(ros_env):
    made = []

    def make(*params: str):
        from molmo2_ros.ros.node import Molmo2Node

        args = ["--ros-args", "-p", "autostart:=false"]
        for param in params:
            args += ["-p", param]
        rclpy.init(args=args)
        made.append(Molmo2Node())
        return made[-1]

    yield make
    for node in made:
        node.teardown()
        node.destroy_node()
    rclpy.try_shutdown()


def values(node, *names: str) -> dict:
    return {name: node.get_parameter(name).value for name in names}


def test_preset_fills_the_defaults_and_explicit_parameters_win(make_node):
    node = make_node("preset:=molmo2-4b", "window_s:=6.0")
    assert values(node, "model", "dtype", "device", "window_s", "stride_s", "max_new_tokens") == {
        "model": "allenai/Molmo2-4B", "dtype": "bfloat16", "device": "cuda", "window_s": 6.0, "stride_s": 1.0,
        "max_new_tokens": 256}


def test_unknown_preset_leaves_the_node_unconfigured_with_the_reason(make_node):
    node = make_node("preset:=huge")
    assert node.on_configure(None) == TransitionCallbackReturn.FAILURE
    assert "unknown preset 'huge'" in node.error and "molmo2-4b" in node.error and node.runtime is None


def test_preset_tiny_runs_the_shipped_model(make_node):
    node = make_node("preset:=tiny", "device:=cpu")
    node.set_parameters([Parameter("queries", value="- {id: ball, task: point, text: red ball}")])
    assert node.on_configure(None) == TransitionCallbackReturn.SUCCESS, node.error
    assert node.runtime.engine.model_id == resolve_model(SHIPPED_MODEL)
    stream = node.runtime.streams[""]
    assert (stream.config.buffer.window_s, stream.config.max_new_tokens) == (4.0, 400)
    status = node._status.array(node, convert.header(0, "")).status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert values["device"] == "cpu" and "gpu_memory_mb" in values and "cached_frames" in values  # local memory
