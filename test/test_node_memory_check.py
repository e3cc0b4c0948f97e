"""configure refuses a setting that cannot fit the GPU, before loading anything, with the predicted peak and what
to lower (core/memory_plan.py). No GPU here: the seam (device resolution and the free-memory query) is replaced."""

from __future__ import annotations

import pytest
import rclpy
import torch
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

GIB = 2**30


@pytest.fixture
def node(ros_env, monkeypatch):
    import molmo2_ros.core.engine as engine_module
    from molmo2_ros.ros.node import Molmo2Node

    monkeypatch.setattr(engine_module, "resolve_device", lambda device: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (12 * GIB, 16 * GIB))
    rclpy.init(args=["--ros-args", "-p", "autostart:=false"])
    n = Molmo2Node()
    yield n
    n.destroy_node()
    rclpy.try_shutdown()


def configure(node, **params) -> TransitionCallbackReturn:
    node.set_parameters([Parameter(k.replace("__", "."), value=v) for k, v in params.items()])
    return node.on_configure(None)


def test_too_big_a_model_is_refused_with_the_remedy(node):
    assert configure(node, model="allenai/Molmo2-8B", queries="- {id: a, task: point, text: cup}") == \
        TransitionCallbackReturn.FAILURE
    assert "does not fit cuda:0" in node.error and "quantization to int8" in node.error
    assert node.model_state == "failed" and node.runtime is None


def test_too_long_a_window_is_refused_naming_what_to_lower(node):
    result = configure(node, model="allenai/Molmo2-4B", window_s=64.0, max_new_tokens=2048, quantization="int4",
                       queries="".join(f"- {{id: q{i}, task: track, text: thing {i}}}\n" for i in range(8)))
    assert result == TransitionCallbackReturn.FAILURE
    assert "predicted GPU memory" in node.error and ("max_frames" in node.error or "queries" in node.error)
