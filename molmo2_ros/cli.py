"""`molmo2-ros` command line: generate, replay, eval, convert, video2bag, play, demo, plan, ask, recall,
history-wipe."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from molmo2_ros.offline.evaluation.targets import targets_arg

SHIPPED_NOTE = ("NOTE: preset tiny: molmo2-tiny-synthetic, a 0.9 M-parameter Molmo2 trained by this project on the "
                "CPU in the synthetic world (8-frame clips; held-out means: point hit rate 0.45, recall 0.71, "
                "'There are none.' when due 0.18, exact counts 0.20, event F1 0.07). It is far from a real model: "
                "for real grounding pass --preset molmo2-4b (one CUDA GPU).")
ORACLE_NOTE = ("NOTE: --oracle is an EVALUATION INSTRUMENT that answers from the scenario's ground truth; "
               "it measures the pipeline after the model, it is not a model.")
LOCAL_VLLM_URL = "http://127.0.0.1:8000/v1"  # `vllm serve` on this host at its default port: --engine vllm's default
# Command-line flag (argparse dest) -> setting name (core/settings.py): the node's parameter of the same meaning.
FLAG_SETTINGS = {"preset": "preset", "model": "model", "device": "device", "engine": "engine",
                 "server_url": "server_url", "api_key_env": "api_key_env", "api_key_file": "api_key_file",
                 "request_timeout": "request_timeout_s", "max_inflight": "max_inflight",
                 "max_new_tokens": "max_new_tokens", "window": "window_s", "stride": "stride_s",
                 "sample_fps": "sample_fps", "depth": "depth.enabled", "depth_max_dt": "depth.max_dt_s"}

TARGETS_HELP = ("YAML/JSON mapping headline figure -> target (e.g. point_hit_rate: 0.9) to grade the report "
                "against (default: no targets, the figures alone)")


class CliError(Exception):
    """A command-line error: printed as one `error: ...` line that says what to do, exit status 2."""


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine and clip flags; left out, a flag takes the preset's value, else the node parameter's default."""
    from .core.presets import preset_names
    from .core.settings import SPECS

    p.add_argument("--preset", choices=preset_names(), default=None,
                   help="model preset (default: tiny, the model shipped with the package, unless --model, --oracle "
                        "or --engine vllm is given)")
    p.add_argument("--model", default=None, help="Hub id, model folder or shipped model name (overrides the preset)")
    p.add_argument("--device", default=None, help="auto|cpu|cuda[:N]")
    p.add_argument("--engine", choices=("transformers", "vllm"), default=None,
                   help="transformers: the model runs here (default); vllm: a vLLM server (--server-url; --model = "
                        "served model name, default the server's first)")
    p.add_argument("--server-url", default=None, help=f"vLLM server, http(s)://host:port/v1 (default {LOCAL_VLLM_URL})")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the vLLM server's API key")
    p.add_argument("--api-key-file", default=None, help="file holding the vLLM server's API key")
    p.add_argument("--request-timeout", type=float, default=None,
                   help=f"vLLM request limit, s (default {SPECS['request_timeout_s'].default:g})")
    p.add_argument("--max-inflight", type=int, default=None,
                   help=f"vLLM requests in flight at most (default {SPECS['max_inflight'].default})")
    p.add_argument("--oracle", default="", metavar="SCENARIO_JSON",
                   help="answer from ground truth (evaluation instrument, not a model)")
    p.add_argument("--noise", choices=("none", "default"), default="none", help="oracle noise")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"generation limit (default: the preset's, else {SPECS['max_new_tokens'].default})")
    p.add_argument("--window", type=float, default=None,
                   help=f"clip length, s (default: the preset's, else {SPECS['window_s'].default:g})")
    p.add_argument("--stride", type=float, default=None,
                   help=f"time between clips, s (default: the preset's, else {SPECS['stride_s'].default:g})")
    p.add_argument("--sample-fps", type=float, default=None,
                   help=f"frames per second kept for the model (default {SPECS['sample_fps'].default:g})")


def _settings(args) -> dict:
    """The settings the flags give (the node's parameter names and checks), over the preset."""
    from .core.settings import resolve

    explicit = {name: getattr(args, flag) for flag, name in FLAG_SETTINGS.items()
                if getattr(args, flag, None) is not None}
    if explicit.get("engine") == "vllm":
        explicit.setdefault("server_url", LOCAL_VLLM_URL)
    if not args.oracle and explicit.get("engine") != "vllm" and not {"preset", "model"} & explicit.keys():
        explicit["preset"] = "tiny"
    try:
        return resolve(explicit)
    except ValueError as error:
        flags = [f"--{flag.replace('_', '-')}" for flag, name in FLAG_SETTINGS.items() if name in str(error)]
        raise CliError(f"{error} ({'flags: ' + ', '.join(flags) if flags else 'see --help'})") from None


def _pipeline(values: dict):
    """The pipeline configuration of the settings (core/settings.py: the one the node builds from its parameters)."""
    from .core.settings import pipeline_config

    try:
        return pipeline_config(values)
    except ValueError as error:
        raise CliError(str(error)) from None


def _engine(args, values: dict, config):
    """(loaded engine, note to print with the results: what the shipped model can and cannot do, or "")."""
    if args.oracle:
        from molmo2_ros.offline.evaluation.oracle import NO_NOISE, NoiseConfig, OracleEngine
        from molmo2_ros.offline.data.scenario import GroundTruth

        print(ORACLE_NOTE, file=sys.stderr)
        return OracleEngine(GroundTruth.load(args.oracle), NoiseConfig() if args.noise == "default" else NO_NOISE), ""
    from .core.engine_factory import make_engine
    from .core.presets import SHIPPED_MODEL

    note = SHIPPED_NOTE if values["model"] == SHIPPED_MODEL and values["engine"] == "transformers" else ""
    if note:
        print(note, file=sys.stderr)
    try:
        engine = make_engine(config.engine, config.engine_config, config.engine_plugin)
        engine.load()
    except (ValueError, RuntimeError, OSError) as error:  # ModelLoadError, ServerUnavailableError: say what to do
        raise CliError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    return engine, note


def _scenario_next_to(bag: Path) -> Path | None:
    """scenario.json in the bag folder or next to it (what `generate` writes), else None."""
    return next((c for c in (bag / "scenario.json", bag.parent / "scenario.json") if c.is_file()), None)


def _queries(args, bag: Path, max_chars: int):
    """The standing queries of a replay, validated (core/queries.py) before any model is loaded."""
    from .core.queries import load_queries, parse_queries

    if args.queries:
        try:
            return load_queries(args.queries, max_chars)
        except ValueError as error:
            raise CliError(f"{error} (--queries takes a YAML list of {{id, task, text}})") from None
    scenario = _scenario_next_to(bag)
    if scenario is not None:
        truth = json.loads(scenario.read_text())["queries"]
        items = [{k: q[k] for k in ("id", "task", "text") if k in q} for q in truth]
        try:
            return parse_queries(items, max_chars, where=str(scenario))
        except ValueError as error:
            raise CliError(str(error)) from None
    raise CliError("no queries: pass --queries YAML (list of {id, task, text}) or put scenario.json next to the bag")


def cmd_generate(args) -> int:
    from molmo2_ros.offline.data.depth_world import DepthOptions
    from molmo2_ros.offline.data.scenario import generate_scenario

    try:
        depth = DepthOptions(encoding=args.depth_encoding, scale=args.depth_scale, distortion=args.distortion,
                             seed=args.seed) if args.depth else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bag = generate_scenario(args.out, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height,
                            encoding=args.encoding, seed=args.seed, storage=args.storage, world=args.world,
                            depth=depth)
    print(f"bag: {bag}\nground truth: {Path(args.out) / 'scenario.json'}")
    return 0


def _run_replay(args, bag: Path, out: Path):
    from molmo2_ros.offline.data.bags import BagError, CameraBag
    from molmo2_ros.offline.replay import replay

    if (out / "molmo2_bag").exists():
        raise CliError(f"'{out}' already holds a replay's output bag (molmo2_bag): pass a new --out folder or "
                       f"delete it")
    values = _settings(args)
    pipeline = _pipeline(values)
    config = pipeline.streams[""]
    queries = _queries(args, bag, config.max_query_chars)
    history = None
    try:
        with CameraBag(bag, args.topic):  # a bag that cannot be read fails before the model is loaded
            pass
        history = _open_history(getattr(args, "history", ""), values)
        engine, note = _engine(args, values, pipeline)
        summary = replay(bag, out, engine, queries, config=config, topic=args.topic,
                         gif=not args.no_gif, progress=not args.quiet, depth_topic=getattr(args, "depth_topic", ""),
                         camera_info_topic=getattr(args, "camera_info_topic", ""), history=history)
    except BagError as error:
        raise CliError(str(error)) from error
    finally:
        if history is not None:
            history.close()
    print(summary.table())
    if note:
        print(note)
    if getattr(args, "report", False):
        _write_report(args, bag, summary, out, config)
    return summary, note, config


def _write_report(args, bag: Path, summary, out: Path, config, truth_path: Path | None = None) -> dict:
    """Video (MP4 + GIF) and report.html of a replay in OUT, scored against scenario.json when there is one."""
    from molmo2_ros.offline.report.report import build_report
    from molmo2_ros.offline.data.scenario import GroundTruth

    truth_path = truth_path or (_scenario_next_to(bag) if not args.queries else None)
    truth = GroundTruth.load(truth_path) if truth_path else None
    slowfast = config.slowfast
    settings = {"model": summary.model_id, "bag": str(bag), "topic": summary.topic,
                "window": f"{config.buffer.window_s:g} s", "stride": f"{config.buffer.stride_s:g} s",
                "sample rate": f"{config.buffer.sample_fps:g} fps",
                "SlowFast": (f"key frames every {slowfast.key_every} at {slowfast.slow_pooling[0]}x"
                             f"{slowfast.slow_pooling[1]}, others {slowfast.fast_pooling[0]}x{slowfast.fast_pooling[1]}"
                             if slowfast.enabled else f"off ({slowfast.fast_pooling[0]}x{slowfast.fast_pooling[1]})"),
                "windows": summary.windows, "ground truth": str(truth_path) if truth_path else "none"}
    try:
        paths = build_report(bag, Path(summary.results_path), out, truth=truth, settings=settings,
                             title=f"molmo2_ros replay of {bag.name}", model_name=Path(summary.model_id).name,
                             topic=args.topic, progress=not args.quiet, targets=args.targets)
    except ValueError as error:  # e.g. a bag shorter than one window: no results to show
        print(f"report: not written: {error}")
        return {}
    print(f"report: {paths['report']}\nvideo:  {paths['video']}\ngif:    {paths['gif']}")
    return paths


def cmd_replay(args) -> int:
    summary, _, _ = _run_replay(args, Path(args.bag), Path(args.out))
    return 130 if summary.interrupted else 0


def cmd_eval(args) -> int:
    from molmo2_ros.offline.evaluation.evaluate import ResultsError, evaluate, format_table, load_results
    from molmo2_ros.offline.data.scenario import GroundTruth

    for path, what in ((args.results, "results.jsonl of a replay"), (args.scenario, "scenario.json ground truth")):
        if not Path(path).is_file():
            raise CliError(f"'{path}' does not exist: pass the {what}")
    try:
        results = load_results(args.results)
    except ResultsError as error:
        raise CliError(str(error)) from error
    report = evaluate(results, GroundTruth.load(args.scenario), radius_frac=args.radius)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_convert(args) -> int:
    from molmo2_ros.offline.evaluation.convert import convert_file

    for path in convert_file(args.annotations, args.out, width=args.width, height=args.height, coords=args.coords,
                             task=args.task):
        print(path)
    return 0


def cmd_video2bag(args) -> int:
    from molmo2_ros.offline.data.video_bag import VideoError, video_to_bag

    try:
        n = video_to_bag(args.video, args.out, encoding=args.encoding, storage=args.storage)
    except VideoError as error:
        raise CliError(str(error)) from error
    print(f"{n} frames -> {args.out}")
    return 0


def cmd_play(args) -> int:
    from molmo2_ros.offline.data.bags import BagError
    from molmo2_ros.offline.data.player import play

    if args.rate <= 0:
        raise CliError(f"--rate {args.rate}: pass a rate > 0 (1 = recorded speed)")
    try:
        n = play(args.bag, rate=args.rate, clock=not args.no_clock, topics=args.topics or None,
                 wait_subscribers=args.wait_subscribers, match_timeout_s=args.match_timeout)
    except BagError as error:
        raise CliError(str(error)) from error
    print(f"published {n} messages")
    return 0


def cmd_demo(args) -> int:
    from molmo2_ros.offline.evaluation.answer_metrics import answer_metrics, headline
    from molmo2_ros.offline.evaluation.evaluate import evaluate, format_table, load_results
    from molmo2_ros.offline.data.scenario import GroundTruth, generate_scenario

    started = time.perf_counter()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"'{out}' is not empty: choose a new --out folder")
    bag = generate_scenario(out / "scenario", seconds=args.seconds, width=args.width, height=args.height)
    truth_path = out / "scenario" / "scenario.json"
    if args.use_oracle:
        args.oracle = str(truth_path)
    args.topic, args.no_gif, args.queries, args.report = "", True, "", False
    summary, note, config = _run_replay(args, bag, out / "replay")
    truth = GroundTruth.load(truth_path)
    results = load_results(summary.results_path)
    report = evaluate(results, truth)
    extra = answer_metrics(results, truth)
    head = headline(report, extra)
    print(format_table(report))
    (out / "eval.json").write_text(json.dumps({"headline": head, "report": report, "answer_metrics": extra},
                                              indent=1))
    paths = _write_report(args, bag, summary, out, config, truth_path)  # {} when there was nothing to report
    print(f"output bag: {summary.output_bag}\nevaluation: {out / 'eval.json'}")
    if note:
        print(note)
    line = {"model": summary.model_id,
            **{k: head[k] for k in ("point_hit_rate", "point_recall", "absence_correct", "count_exact", "count_mae",
                                    "mota", "id_switches_per_track_per_min", "event_f1", "event_start_error_s",
                                    "event_end_error_s")},
            **{k: str(paths.get(k, "")) for k in ("report", "video", "gif")},
            "output_bag": summary.output_bag, "wall_s": round(time.perf_counter() - started, 2)}
    print(json.dumps(line))
    return 0


def _open_history(folder: str, values: dict):
    """The history a replay writes (`--history DIR`, the node's history.* settings otherwise), or None."""
    if not folder:
        return None
    from dataclasses import replace

    from .core.history import HistoryError, HistoryStore
    from .core.settings import history_config

    try:
        return HistoryStore(replace(history_config(values), path=Path(folder)))
    except (HistoryError, OSError) as error:
        raise CliError(f"--history {folder}: {error}") from None


def cmd_recall(args) -> int:
    from dataclasses import asdict

    from .core.history import HistoryConfig, HistoryError, HistoryStore

    if args.limit < 1:
        raise CliError(f"--limit {args.limit}: pass a number of sightings >= 1")
    if (args.from_s is not None and args.from_s < 0) or (args.to_s is not None and args.to_s < 0):
        raise CliError("--from/--to are seconds after the history's first frame: pass values >= 0")
    if args.from_s is not None and args.to_s is not None and args.from_s > args.to_s:
        raise CliError(f"--from {args.from_s:g} is after --to {args.to_s:g}: pass --from <= --to")
    if args.json and not Path(args.json).parent.is_dir():
        raise CliError(f"--json {args.json}: its folder does not exist; create it or pass another path")
    try:
        store = HistoryStore(HistoryConfig(Path(args.history)), read_only=True)
    except HistoryError as error:
        raise CliError(str(error)) from None
    with store:
        cameras = store.cameras()
        if args.camera is not None and args.camera not in cameras:
            raise CliError(f"camera '{args.camera}' is not in the history (cameras: "
                           f"{', '.join(map(repr, cameras)) or 'none'}): pass one of them or leave --camera out")
        span = store.span()
        if span is None and (args.from_s is not None or args.to_s is not None):
            raise CliError(f"'{args.history}' holds no frames to count --from/--to from: leave them out")
        first = span[0] if span else 0
        start = first + round(args.from_s * 1e9) if args.from_s is not None else 0
        end = first + round(args.to_s * 1e9) if args.to_s is not None else 0
        found = store.sightings(args.label, args.query_id, args.camera, start, end, args.limit)
    rows = [{**asdict(s), "position": list(s.position) if s.position else None,
             "t_s": round((s.stamp_ns - first) / 1e9, 6) if span else None} for s in found]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    what = " and ".join(x for x in (f"'{args.label}'" if args.label else "", f"query {args.query_id}"
                                    if args.query_id else "") if x) or "anything"
    if not rows:
        print(f"no sightings of {what} in {args.history}")
        return 0
    print(f"sightings of {what} in {args.history}, newest first (t = seconds after the first stored frame):")
    print(f"  {'t_s':>9} {'stamp_ns':>20} {'camera':<10} {'query_id':<16} {'label':<24} {'x':>7} {'y':>7} "
          f"{'object_id':<14} position")
    for r in rows:
        t = f"{r['t_s']:9.3f}" if r["t_s"] is not None else f"{'?':>9}"
        pos = "" if r["position"] is None else "(" + ", ".join(f"{v:.3f}" for v in r["position"]) + ")"
        print(f"  {t} {r['stamp_ns']:>20} {r['camera'] or '-':<10} {r['query_id']:<16} {r['label'][:24]:<24} "
              f"{r['x']:7.1f} {r['y']:7.1f} {r['object_id'] or '-':<14} {pos}")
    return 0


def cmd_history_wipe(args) -> int:
    from .core.history import HistoryError, wipe_history

    try:
        freed = wipe_history(Path(args.history))
    except (HistoryError, OSError) as error:
        raise CliError(str(error)) from None
    print(f"wiped {args.history}: {freed / 1e6:.1f} MB freed")
    return 0


ASK_TASKS = ("point", "count", "track", "event", "answer", "caption")


def cmd_ask(args) -> int:
    """A question about a time range of a stored history (core/rewind.py through the runtime's range job, the
    node's Query action code); results in the replay's results.jsonl format, scorable by `eval`."""
    from dataclasses import replace

    from .core.engine_config import EngineConfig
    from .core.history import HistoryConfig, HistoryError, HistoryStore, is_history
    from .core.runtime import Runtime
    from .core.schedule import EveryWindowPolicy
    from .core.serialization import result_to_dict
    from .core.stream import Stream
    from .core.types import NS_PER_S, Query, TaskKind

    folder = Path(args.history)
    if not is_history(folder):
        raise CliError(f"'{folder}' is not a history folder: pass the node's history.path or a `replay --history` "
                       "folder")
    try:
        store = HistoryStore(HistoryConfig(path=folder), read_only=True)
    except HistoryError as error:
        raise CliError(str(error)) from None
    try:
        cameras = store.cameras()
        camera = args.camera
        if camera is None:
            if len(cameras) > 1:
                raise CliError(f"the history holds several cameras: pass --camera ({', '.join(map(repr, cameras))})")
            camera = cameras[0] if cameras else ""
        span = store.span(camera)
        if span is None:
            raise CliError(f"the history holds no frames of camera '{camera}' (cameras: "
                           f"{', '.join(map(repr, cameras)) or 'none'})")
        start_ns = span[0] + round(args.from_s * NS_PER_S)
        end_ns = span[1] if args.to_s is None else span[0] + round(args.to_s * NS_PER_S)
        values = _settings(args)
        pipeline = _pipeline(values)
        if isinstance(pipeline.engine_config, EngineConfig):  # the history's feature cache, as the node's
            pipeline = replace(pipeline, engine_config=replace(
                pipeline.engine_config, feature_cache_mb=float(values["history.feature_cache_mb"])))
        config = pipeline.streams[""]
        task = TaskKind.QUESTION if args.task == "answer" else TaskKind(args.task)
        if end_ns < start_ns or not store.frames(camera, start_ns, end_ns):  # before any model is loaded
            raise CliError(f"no stored frames of camera '{camera}' in [{args.from_s:g}, "
                           f"{'end' if args.to_s is None else f'{args.to_s:g}'}] s: the history holds "
                           f"[0, {(span[1] - span[0]) / NS_PER_S:.1f}] s (--from/--to count seconds from its first "
                           "frame)")
        engine, note = _engine(args, values, pipeline)
        runtime = Runtime(engine, [Stream(camera, [], config)], EveryWindowPolicy(max_pending_bytes=2**30))
        try:
            job = runtime.make_range_job(camera, Query("ask", task, args.question), start_ns, end_ns, store,
                                         scan=args.scan)
        except ValueError as error:
            raise CliError(str(error)) from None
        started = time.perf_counter()
        runtime.run_job(job)
        wall = time.perf_counter() - started
    finally:
        store.close()
    if not hasattr(job.result, "result"):
        raise CliError(f"the question failed: {job.result}")
    r = job.result
    # A count holds over the frames of one clip: each clip is one answer; every other task is one merged answer.
    lines = r.clips if task == TaskKind.COUNT else [r.result]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(result_to_dict(x)) + "\n" for x in lines))
    m = r.result
    origin = span[0]
    print(f"ask [{camera or 'camera'}] {task.value} '{args.question}' over "
          f"[{(start_ns - origin) / NS_PER_S:.1f}, {(end_ns - origin) / NS_PER_S:.1f}] s ({args.scan} scan) "
          f"with {m.model_id}")
    print(f"  clips {r.clips_scanned}, frames {r.frames_scanned} (skipped {r.frames_skipped}, encoded "
          f"{r.frames_encoded}), engine calls {r.engine_calls}, wall {wall:.2f} s"
          + (f", failed clips {r.clips_failed}: {r.error}" if r.clips_failed else ""))
    print(f"  points {len(m.points)}, tracks {len(m.tracks)}, events {len(m.events)}"
          + (f", count {m.count} (largest of one clip)" if m.count is not None else ""))
    for e in m.events:
        print(f"  event {e.id}: {(e.start_ns - origin) / NS_PER_S:.1f} - {(e.end_ns - origin) / NS_PER_S:.1f} s")
    if task in (TaskKind.QUESTION, TaskKind.CAPTION) and m.text:
        print("  " + m.text.replace("\n", "\n  "))
    print(f"  results: {out}")
    if note:
        print(note)
    return 0


def cmd_plan(args) -> int:
    from .core import memory_plan as mp
    from .core.sampling import SLOWFAST_PRESETS

    sf = SLOWFAST_PRESETS[args.slowfast]
    try:
        setting = mp.Setting(dtype=args.dtype, quantization=args.quantization, window_s=args.window,
                             sample_fps=args.sample_fps, max_frames=args.max_frames, cameras=args.cameras,
                             queries=args.queries, max_new_tokens=args.max_new_tokens, slowfast=sf.enabled,
                             slow_pooling=sf.slow_pooling[0], fast_pooling=sf.fast_pooling[0], key_every=sf.key_every,
                             attn_implementation=args.attn, cuda=not args.cpu)
        plan = mp.plan(args.model, setting)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(plan.table())
    if args.json:
        print(json.dumps(plan.as_dict()))
    if args.gpu_gib:
        free = args.free_gib if args.free_gib else args.gpu_gib
        message = mp.refusal(args.model, setting, int(free * mp.GIB), int(args.gpu_gib * mp.GIB))
        print(f"fits {free:g} GiB free of {args.gpu_gib:g} GiB" if not message else f"refused: {message}")
        return 1 if message else 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="molmo2-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic scenario bag + scenario.json ground truth")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--encoding", choices=("rgb8", "bgr8", "mono8", "jpeg"), default="rgb8")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", choices=("default", "two_colours", "random"), default="default",
                   help="default: balls, squares, a triangle; two_colours: a red and a blue ball crossing; "
                        "random: objects, motions and events drawn from --seed")
    p.add_argument("--depth", action="store_true", help="also aligned depth, CameraInfo and 3D ground truth")
    p.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1")
    p.add_argument("--depth-scale", type=float, default=1.0, help="depth resolution / colour resolution (0 < s <= 1)")
    p.add_argument("--distortion", choices=("none", "plumb_bob", "rational_polynomial", "equidistant"),
                   default="none", help="lens distortion the CameraInfo declares (3D truth follows it)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("replay", help="run the pipeline over every window of a bag")
    p.add_argument("bag")
    p.add_argument("--out", default="replay_out")
    p.add_argument("--topic", default="", help="camera topic (default: first Image/CompressedImage topic)")
    p.add_argument("--queries", default="", help="YAML list of {id, task, text}")
    p.add_argument("--no-gif", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--depth", action="store_true", help="lift points to 3D from the bag's depth and CameraInfo")
    p.add_argument("--depth-topic", default="", help="aligned depth topic (default: the Image topic named *depth*)")
    p.add_argument("--camera-info-topic", default="", help="colour CameraInfo topic (default: next to the camera "
                                                            "topic, else the first)")
    p.add_argument("--depth-max-dt", type=float, default=0.02, help="largest depth-colour stamp difference, s")
    p.add_argument("--report", action="store_true",
                   help="also write OUT/report.html, OUT/demo.mp4 and OUT/demo.gif (scored against scenario.json "
                        "when it is next to the bag and no --queries is given)")
    p.add_argument("--targets", type=targets_arg, help=TARGETS_HELP)
    p.add_argument("--history", default="", metavar="DIR",
                   help="also build a history there (sampled frames and every result's sightings, as the node's "
                        "history.enabled) for `recall` and `ask`; a new or empty folder, or an existing history")
    _add_engine_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("eval", help="score results.jsonl against scenario.json")
    p.add_argument("results")
    p.add_argument("scenario")
    p.add_argument("--radius", type=float, default=0.05, help="hit radius as a fraction of the image diagonal")
    p.add_argument("--json", default="", help="also write the report here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", help="video point/track annotations -> scenario.json files")
    p.add_argument("annotations")
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, required=True, help="video width (when not in the annotations)")
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--coords", choices=("percent", "pixels"), default="percent")
    p.add_argument("--task", choices=("point", "track", "count"), default="track")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("video2bag", help="a video file -> a camera bag stamped like `convert` ground truth")
    p.add_argument("video")
    p.add_argument("out", help="bag folder to create")
    p.add_argument("--encoding", choices=("jpeg", "rgb8", "bgr8", "mono8"), default="jpeg")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.set_defaults(func=cmd_video2bag)

    p = sub.add_parser("play", help="publish a bag with recorded timing and /clock (needs ROS 2)")
    p.add_argument("bag")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--no-clock", action="store_true")
    p.add_argument("--topics", nargs="*")
    p.add_argument("--wait-subscribers", type=int, default=1)
    p.add_argument("--match-timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("demo", help="generate a scenario, replay it, evaluate; write a video and an HTML report")
    p.add_argument("--out", default="molmo2_demo")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--use-oracle", action="store_true", help="oracle (evaluation instrument) instead of a model")
    p.add_argument("--targets", type=targets_arg, help=TARGETS_HELP)
    p.add_argument("--topic", default="")
    p.add_argument("--quiet", action="store_true")
    _add_engine_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("recall", help="where and when was something last seen: sightings in a history, newest first")
    p.add_argument("history", help="history folder (replay --history DIR, or the node's history.path)")
    p.add_argument("label", nargs="?", default="",
                   help="text found case-insensitively in the label or query text (default: any)")
    p.add_argument("--query-id", default="", help="only this standing query's sightings")
    p.add_argument("--camera", default=None, help="only this camera ('' = the unnamed one; default: every camera)")
    p.add_argument("--from", dest="from_s", type=float, default=None, metavar="S",
                   help="seconds after the history's first frame (default: the start)")
    p.add_argument("--to", dest="to_s", type=float, default=None, metavar="S",
                   help="seconds after the history's first frame (default: the end)")
    p.add_argument("--limit", type=int, default=1, help="most sightings listed (default 1: the last one)")
    p.add_argument("--json", default="", metavar="OUT", help="also write them as a JSON list here")
    p.set_defaults(func=cmd_recall)

    p = sub.add_parser("history-wipe", help="delete a history folder (frames, depth and sightings)")
    p.add_argument("history", help="history folder; refused unless it holds only a history")
    p.set_defaults(func=cmd_history_wipe)

    p = sub.add_parser("ask", help="ask a question about a time range of a stored history (rewind)")
    p.add_argument("history", help="history folder (the node's history.path, or `replay --history DIR`)")
    p.add_argument("question", help="an object (point/count/track), an event (event) or a question (answer)")
    p.add_argument("--task", choices=ASK_TASKS, default="answer", help="answer = a free question")
    p.add_argument("--from", dest="from_s", type=float, default=0.0, metavar="S",
                   help="range start, seconds from the history's first frame (default 0)")
    p.add_argument("--to", dest="to_s", type=float, default=None, metavar="S",
                   help="range end, seconds from the history's first frame (default: its last frame)")
    p.add_argument("--camera", default=None, help="camera name (default: the history's only camera)")
    p.add_argument("--scan", choices=("dense", "sparse"), default="dense",
                   help="dense: every clip; sparse: clips of every other frame first, then dense clips only "
                        "where something was found")
    p.add_argument("--out", default="ask_results.jsonl", help="results (JSON lines; `molmo2-ros eval` scores them)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("plan", help="predicted GPU memory of a node setting (weights, KV cache, features, activations)")
    p.add_argument("--model", default="allenai/Molmo2-4B",
                   help="allenai/Molmo2-4B, allenai/Molmo2-8B, allenai/Molmo2-O-7B or a model folder / config.json")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--quantization", default="none", choices=("none", "int8", "int4"))
    p.add_argument("--window", type=float, default=8.0, help="window_s")
    p.add_argument("--sample-fps", type=float, default=2.0)
    p.add_argument("--max-frames", type=int, default=128)
    p.add_argument("--cameras", type=int, default=1, help="nodes (one per camera, each with its own model)")
    p.add_argument("--queries", type=int, default=4, help="standing queries")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--slowfast", choices=("default", "detail", "uniform"), default="default")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (eager adds L x L attention scores)")
    p.add_argument("--cpu", action="store_true", help="no CUDA context reserve")
    p.add_argument("--gpu-gib", type=float, default=0.0, help="check the setting against a GPU of this size")
    p.add_argument("--free-gib", type=float, default=0.0, help="free memory on it (default: all of --gpu-gib)")
    p.add_argument("--json", action="store_true", help="also print the plan as one JSON line")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
