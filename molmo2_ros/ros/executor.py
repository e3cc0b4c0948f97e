"""A multi-threaded rclpy executor that hands each ready callback to one idle pool thread, once.

rclpy's MultiThreadedExecutor (Kilted's rclpy 9.1.2 here) yields a task again while it still waits in the thread
pool queue (ros2/rclpy#1452, fixed in rolling's rclpy 10). Its spin thread then loops without waiting,
re-submitting the same task and building wait sets in Python; under a 1080p camera stream that loop took up to
half a core and competed with the inference thread for the GIL (windows 3-5x slower, outputs late).

Here the spin thread gives a ready callback to an idle pool thread and waits until that thread has started it
before it looks for more work; with no thread idle it waits for one. The most recently idle thread is picked
first, so a camera stream's callbacks run on one or two threads: every thread that allocates frames keeps its own
malloc arena, and spreading 6 MB frames over all threads cost ~150 MB of RSS at 1080p. All threads start with
the executor (a fixed thread count; one appearing later is a leak). It uses the custom-executor API
(`wait_for_ready_callbacks`, `spin_once`) and implements the two private hooks that newer rclpy versions' spin
loops call instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from rclpy.executors import (ConditionReachedException, Executor, ExternalShutdownException, InvalidHandle,
                             ShutdownException, TimeoutException)

START_WAIT_S = 1.0  # longest the spin thread waits for a pool thread to start a callback before it goes on


def _never() -> bool:
    return False


@dataclass(eq=False)
class _PoolThread:
    """A pool thread's mailbox: the callback handed to it, and events for handing over and starting."""

    handler: object = None
    given: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)


class HandOffExecutor(Executor):
    """Runs callbacks on `num_threads` pool threads; each ready callback is handed to one idle thread once."""

    def __init__(self, num_threads: int, *, context=None) -> None:
        super().__init__(context=context)
        self._idle: list[_PoolThread] = []  # most recently idle last
        self._idle_changed = threading.Condition()
        self._stopping = False
        self._shutting_down = False
        self._running: list = []  # rclpy Tasks handed over and not seen finished yet
        self.submitted = 0  # callbacks handed over (tests compare it with the callbacks run)
        self.stale_handles = 0  # wait sets rebuilt because an entity was destroyed while one was built
        self._threads = [threading.Thread(target=self._serve, name=f"ros_callback_{i}", daemon=True)
                         for i in range(num_threads)]
        for thread in self._threads:
            thread.start()
        with self._idle_changed:
            self._idle_changed.wait_for(lambda: len(self._idle) == num_threads)

    def _serve(self) -> None:
        me = _PoolThread()
        while True:
            with self._idle_changed:
                if self._stopping:
                    return
                self._idle.append(me)
                self._idle_changed.notify_all()
            me.given.wait()
            me.given.clear()
            handler, me.handler = me.handler, None
            if handler is None:  # shutdown
                return
            me.started.set()
            handler()

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future, timeout_sec: float | None = None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_until_future_complete(self, future, timeout_sec=None) -> None:
        """Called by spin_until_future_complete in newer rclpy (Kilted here); older ones call the public one."""
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_impl(self, timeout_sec=None, wait_condition=_never) -> None:
        """Hand one ready callback to a pool thread (rolling's spin() calls this; Kilted's calls spin_once)."""
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ShutdownException, ExternalShutdownException, TimeoutException, ConditionReachedException):
            return
        except InvalidHandle:
            # A subscription's QoS event handler destroyed by another thread (deactivate, a qos re-subscribe) while
            # this thread built the wait set: rclpy (Jazzy 7.1, Kilted 9.1) skips it when entering the handles but
            # then adds it to the wait set anyway. The node has already forgotten it: wait again without it.
            self.stale_handles += 1
            return
        with self._idle_changed:
            self._idle_changed.wait_for(lambda: self._idle or self._stopping)  # both change under notify_all
            if self._stopping:
                return
            thread = self._idle.pop()
        thread.started.clear()
        thread.handler = handler
        thread.given.set()
        self.submitted += 1
        self._running.append(handler)
        thread.started.wait(START_WAIT_S)
        self._raise_finished()

    def _raise_finished(self) -> None:
        """Forget finished callbacks; re-raise an exception from one, as rclpy's executors do."""
        done, running = [], []
        for task in self._running:
            (done if task.done() else running).append(task)
        self._running = running
        for task in done:
            if self._shutting_down and isinstance(task.exception(), InvalidHandle):
                continue  # the callback ended after shutdown destroyed the guard condition its task wakes
            task.result()

    def shutdown(self, timeout_sec: float | None = None, *, wait_for_threads: bool = True) -> bool:
        """Stop spinning (rclpy's shutdown, waiting up to timeout_sec for callbacks), then end the pool threads;
        wait_for_threads: join them (busy ones end after their callback)."""
        self._shutting_down = True
        success = super().shutdown(timeout_sec)
        with self._idle_changed:
            self._stopping = True
            idle, self._idle = self._idle, []
            self._idle_changed.notify_all()
        for thread in idle:
            thread.given.set()  # handler None: end
        if wait_for_threads:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()
        return success
