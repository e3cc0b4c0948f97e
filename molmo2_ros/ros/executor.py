"""A multi-threaded rclpy executor that hands each ready callback to its pool exactly once.

rclpy's MultiThreadedExecutor (Kilted's rclpy 9.1.2 here) yields a task again while it still waits in the thread
pool queue (ros2/rclpy#1452, fixed in rolling's rclpy 10). Its spin thread then loops without waiting,
re-submitting the same task and building wait sets in Python; under a 1080p camera stream that loop took up to
half a core and competed with the inference thread for the GIL (windows 3-5x slower, outputs late). Here the
spin thread waits until the pool thread has picked the callback up before it looks for more work. It uses the
custom-executor API (`wait_for_ready_callbacks`, `spin_once`) and implements the two private hooks that newer
rclpy versions' spin loops call instead.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from rclpy.executors import (ConditionReachedException, Executor, ExternalShutdownException, ShutdownException,
                             TimeoutException)

START_WAIT_S = 1.0  # longest the spin thread waits for a pool thread to start a callback before it goes on


def _never() -> bool:
    return False


class HandOffExecutor(Executor):
    """Runs callbacks on `num_threads` pool threads; each ready callback is submitted once."""

    def __init__(self, num_threads: int, *, context=None) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ros_callback")
        self._running: list = []  # rclpy Tasks handed to the pool and not seen finished yet
        self.submitted = 0  # callbacks handed to the pool (tests compare it with the callbacks run)
        self._start_all_threads(num_threads)

    def _start_all_threads(self, num_threads: int) -> None:
        """Start every pool thread now (the pool starts them one by one on demand), so the process's thread count
        is fixed from start-up: a thread that appears later is a leak."""
        all_started = threading.Barrier(num_threads + 1)
        for _ in range(num_threads):
            self._pool.submit(all_started.wait)
        all_started.wait()

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future, timeout_sec: float | None = None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_until_future_complete(self, future, timeout_sec=None) -> None:
        """Called by spin_until_future_complete in newer rclpy (Kilted here); older ones call the public one."""
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_impl(self, timeout_sec=None, wait_condition=_never) -> None:
        """Hand one ready callback to the pool (rolling's spin() calls this; Kilted's calls spin_once)."""
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ShutdownException, ExternalShutdownException, TimeoutException, ConditionReachedException):
            return
        started = threading.Event()

        def run() -> None:
            started.set()
            handler()

        self.submitted += 1
        self._pool.submit(run)
        self._running.append(handler)
        started.wait(START_WAIT_S)
        self._raise_finished()

    def _raise_finished(self) -> None:
        """Forget finished callbacks; re-raise an exception from one, as rclpy's executors do."""
        done, running = [], []
        for task in self._running:
            (done if task.done() else running).append(task)
        self._running = running
        for task in done:
            task.result()

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        success = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=wait_for_threads)
        return success
