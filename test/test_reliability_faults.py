"""Engine faults through a live node. The engine is the real core Molmo2Engine (its out-of-memory detection,
free-and-retry with half the frames, and error reporting) with the model call scripted to fail
(test/helpers/fault_engine.py): an injected CUDA out-of-memory is retried and counted, a model that keeps
running out of memory or raises is reported (counter + last_error + throttled log) without a crash, and an
exception escaping a plugin's `infer` is caught by the node's worker; the next window always runs."""

from __future__ import annotations


from helpers.reliability import FAULT, FrameSender, delta, rgb_image, start_node, unique_names
from helpers.ros_client import Client, wait_until
from molmo2_ros.msg import Answer, StandingQuery
from molmo2_ros.srv import ManageQueries

NAME, TOPIC = unique_names()
NODE = f"/{NAME}"
REQ = ManageQueries.Request



class Stream:
    """Frames one second of stamp apart (window 2 s, stride 1 s: every frame ends a clip once one was kept)."""

    def __init__(self, client: Client) -> None:
        # 4 Hz: slower than one (fault-injected) inference, so no window is skipped for being late
        self.sender = FrameSender(client, TOPIC, rate_hz=4)
        self.t = 100.0

    def frames(self, n: int) -> None:
        msgs = []
        for _ in range(n):
            self.t += 1.0
            msgs.append(rgb_image(self.t))
        self.sender.send(msgs)


def _only_query(client: Client, qid: str, text: str) -> None:
    listed = client.call(ManageQueries, f"{NODE}/manage_queries", REQ(op=REQ.OP_LIST))
    for q in listed.queries:
        assert client.call(ManageQueries, f"{NODE}/manage_queries", REQ(op=REQ.OP_REMOVE, query=q)).success
    added = client.call(ManageQueries, f"{NODE}/manage_queries",
                        REQ(op=REQ.OP_ADD, query=StandingQuery(id=qid, task="question", text=text)))
    assert added.success, added.message
    client.subscribe(Answer, f"{NODE}/answers/{qid}")
    client.wait_matched(f"{NODE}/answers/{qid}")


def _diag_after(client: Client, before: dict, key: str, at_least: int) -> dict:
    """Wait until diagnostics show `key` grown by at least `at_least`; returns the counter deltas."""
    return wait_until(lambda: (d := delta(before, client.diagnostics(NODE))).get(key, 0) >= at_least and d, 10.0,
                      what=f"{key} +{at_least}")


def test_engine_faults_are_counted_and_the_next_window_runs(ros_env, client, tmp_path):
    node = start_node(client, ros_env, tmp_path, name=NAME, queries="", topic=TOPIC, engine_plugin=FAULT, model="fault",
                      window_s=2.0, stride_s=1.0, qos="reliable")
    try:
        stream = Stream(client)
        stream.frames(1)

        # 1. CUDA out of memory on the first attempt: retried with half the frames, answered, counted
        _only_query(client, "oom", "oom")
        before = client.diagnostics(NODE)
        stream.frames(3)
        wait_until(lambda: len(client.got(f"{NODE}/answers/oom")) >= 3, 10.0, what="answers after OOM retries")
        d = _diag_after(client, before, "oom_retries", 3)
        answers = client.got(f"{NODE}/answers/oom")
        assert all(a.text.startswith("frames=1 ") and a.num_frames == 1 for a in answers), [a.text for a in answers]
        assert d.get("windows_processed", 0) >= 3 and not d.get("inference_errors"), d

        # 2. out of memory on every attempt: the engine gives up; counted, last_error says so, no crash
        _only_query(client, "oomall", "oomall")
        before = client.diagnostics(NODE)
        stream.frames(3)
        d = _diag_after(client, before, "inference_errors", 3)
        after = client.diagnostics(NODE)
        assert "CUDA out of memory with 1 frames" in after["last_error"], after  # gave up after halving to 1
        assert not client.got(f"{NODE}/answers/oomall")

        # 3. another model fault: reported as an inference error
        _only_query(client, "boom", "boom")
        before = client.diagnostics(NODE)
        stream.frames(3)
        _diag_after(client, before, "inference_errors", 3)
        assert "injected model fault" in client.diagnostics(NODE)["last_error"]  # the log line is throttled

        # 4. an exception escaping the engine's infer: the worker logs and counts it and keeps running
        _only_query(client, "crash", "crash")
        before = client.diagnostics(NODE)
        stream.frames(3)
        _diag_after(client, before, "worker_errors", 3)
        assert "RuntimeError: fault_engine: injected crash inside infer" in client.diagnostics(NODE)["last_error"]

        # the next windows run normally
        _only_query(client, "fine", "what")
        stream.frames(3)
        wait_until(lambda: len(client.got(f"{NODE}/answers/fine")) >= 2, 10.0, what="answers after the faults")
        assert node.proc.poll() is None and client.state(NODE) == "active"
        assert node.output().count("inference failed") <= 4  # throttled (5 s per call site), not one per window
    finally:
        code, seconds = node.stop()
    assert code == 0 and seconds < 5.0, node.output()
