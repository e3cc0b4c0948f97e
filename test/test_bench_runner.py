"""`make bench` (bench/run_all.py): every bench runs whatever the verdicts before it, and its verdict comes from its
exit status and the targets of the JSON it wrote (PASS, MISS with the missed targets, ERROR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run_all import Bench, judge, main, run, table

pytestmark = pytest.mark.ros_free


def bench_writing(tmp_path: Path, targets: object) -> Bench:
    out = tmp_path / "fake.json"
    if targets is not None:
        out.write_text(json.dumps({"targets": targets}))
    return Bench("fake", "bench.fake", out, "--seconds", ros=False)


def test_verdicts_from_exit_status_and_targets(tmp_path):
    met = {"frames": {"value": 10, "target": "= 10", "pass": True}}
    missed = {**met, "age_s": {"value": 3.0, "target": "<= 1", "pass": False}}
    assert judge(bench_writing(tmp_path, met), 0) == ("PASS", "")
    assert judge(bench_writing(tmp_path, missed), 1) == ("MISS", "age_s")
    assert judge(bench_writing(tmp_path, missed), 0)[0] == "ERROR"  # exit status disagrees with the targets
    assert judge(bench_writing(tmp_path, {"n": 1}), 0)[0] == "ERROR"  # no pass flags
    (tmp_path / "fake.json").unlink()
    assert judge(bench_writing(tmp_path, None), 1) == ("ERROR", "exit 1, no result written")


def test_a_crashing_bench_is_an_error_and_an_old_result_does_not_count(tmp_path):
    bench = bench_writing(tmp_path, {"frames": {"pass": True}})  # a stale result of an earlier run
    verdict = run(Bench("gone", "bench.no_such_bench", bench.out, "--seconds", ros=False), seconds=1)
    assert (verdict.status, verdict.detail) == ("ERROR", "exit 1, no result written") and not bench.out.exists()
    assert "gone" in table([verdict]) and "ERROR" in table([verdict])


def test_main_runs_every_bench_and_fails_at_the_end(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr("bench.run_all.BENCHES", tuple(Bench(n, "bench.no_such_bench", tmp_path / f"{n}.json",
                                                              "--seconds", ros=False) for n in ("a", "b")))
    monkeypatch.setattr("bench.run_all.run", lambda bench, seconds: ran.append(bench.name) or run(bench, seconds))
    assert main(["--seconds", "1"]) == 1 and ran == ["a", "b"]
