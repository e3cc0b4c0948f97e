"""The molmo2 node's process entry point (`ros2 run molmo2_ros molmo2_node`, scripts/molmo2_node)."""

from __future__ import annotations

import os
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from ..core.heap import log_memory_stats, trace_memory
from .executor import HandOffExecutor
from .node import Molmo2Node


def _with_default_image_remap(args: list[str]) -> list[str]:
    """Remap `image` to camera/image_raw (relative: a namespace applies) unless the command line remaps it already."""
    for i, arg in enumerate(args):
        if arg in ("-r", "--remap") and i + 1 < len(args) and args[i + 1].split(":=")[0].endswith("image"):
            return args
    return [*args, "--ros-args", "-r", "image:=camera/image_raw"]


def main(args: list[str] | None = None, executor_class=HandOffExecutor) -> int:
    """Run the node until SIGINT/SIGTERM; exit code 0 on a clean shutdown.

    executor_class: an rclpy executor class taking num_threads (bench_node --executor rclpy compares rclpy's
    MultiThreadedExecutor with the default HandOffExecutor).
    """
    if os.environ.get("MOLMO2_TRACEMALLOC_S"):  # memory investigation only (molmo2_ros/core/heap.py)
        trace_memory(float(os.environ["MOLMO2_TRACEMALLOC_S"]))
    if float(os.environ.get("MOLMO2_MEMSTATS_S") or 0) > 0:  # memory investigation, cheap enough for a soak
        log_memory_stats(float(os.environ["MOLMO2_MEMSTATS_S"]))
    rclpy.init(args=_with_default_image_remap(list(sys.argv if args is None else args)))
    node = Molmo2Node()
    name = node.get_fully_qualified_name()
    executor = executor_class(num_threads=max(6, (os.cpu_count() or 2) + 2) + len(node.cameras))
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # a wait set failing because the signal handler already shut the context down
        if rclpy.ok():
            raise
    finally:
        node.teardown()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"{name}: shut down cleanly", file=sys.stderr, flush=True)
    return 0


def run() -> None:
    """Process entry point: main(), then leave without the interpreter's finalization. Everything is already shut
    down and flushed; tearing down torch and transformers modules at interpreter exit takes 2-6 s on a loaded 2-core
    host, past the node's 5 s SIGINT/SIGTERM exit bound."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
