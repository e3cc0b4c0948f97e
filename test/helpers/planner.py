"""A planner-side rclpy node for the client and behaviour tests: its own context, a Molmo2Client made before the
executor spins (molmo2_ros/client.py: Threads), then a MultiThreadedExecutor on a daemon thread, so the client's
blocking calls can wait while callbacks run."""

from __future__ import annotations

import threading

import rclpy
from rclpy.executors import MultiThreadedExecutor

from molmo2_ros.client import Molmo2Client


class Planner:
    def __init__(self, namespace: str, name: str = "planner", **client_kwargs) -> None:
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.client = Molmo2Client(self.node, namespace, **client_kwargs)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutting down
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.client.close()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)
