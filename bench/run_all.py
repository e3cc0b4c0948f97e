"""`make bench`: every benchmark, one after the other, whatever the verdicts before it; then one table of verdicts.

Each bench prints its own table and writes its JSON result (bench/out/*.json) with a `targets` mapping
(name -> {..., "pass": bool}); it exits 1 on a missed target. A bench is
- PASS: exit 0 and every target passed;
- MISS: exit 1 and the targets its JSON lists as missed;
- ERROR: no fresh JSON (it crashed), a JSON without targets, or an exit status that disagrees with the targets.
Exit status 0 only when every bench passed.

Run: `.venv/bin/python -m bench.run_all [--seconds S]` (the ROS benches start under scripts/with_ros themselves).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"


@dataclass(frozen=True)
class Bench:
    """One benchmark of `make bench`: its module and options, where it writes its result."""

    name: str
    module: str
    out: Path  # the JSON result the bench writes
    seconds_option: str  # the option that sets its stream length
    seconds: float | None = None  # its stream length (None: the bench's default)
    args: tuple[str, ...] = ()
    ros: bool = True  # started under scripts/with_ros

    def command(self, seconds: float | None = None) -> list[str]:
        """The bench's command line; `seconds` replaces its stream length."""
        seconds = self.seconds if seconds is None else seconds
        length = [self.seconds_option, f"{seconds:g}"] if seconds is not None else []
        python = [sys.executable, "-m", self.module, *self.args, *length]
        return [str(REPO / "scripts" / "with_ros"), *python] if self.ros else python


BENCHES = (
    # torch on one thread: the engine bench's ratios stay stable when other work shares a 2-core machine
    Bench("engine", "bench.bench_engine", OUT_DIR / "engine.json", "--duration-s", args=("--threads", "1")),
    Bench("node", "bench.bench_node", OUT_DIR / "node.json", "--seconds", 60),
    Bench("multicam", "bench.bench_multicam", OUT_DIR / "multicam.json", "--seconds", 60),
    Bench("depth", "bench.bench_depth", OUT_DIR / "depth.json", "--seconds", 30, ros=False),
)


@dataclass(frozen=True)
class Verdict:
    """How one bench ended."""

    bench: Bench
    status: str  # PASS, MISS or ERROR
    detail: str  # the missed targets, or what went wrong
    wall_s: float


def judge(bench: Bench, returncode: int) -> tuple[str, str]:
    """(status, detail) of a finished bench from its exit status and the JSON it wrote."""
    if not bench.out.is_file():
        return "ERROR", f"exit {returncode}, no result written"
    try:
        targets = json.loads(bench.out.read_text())["targets"]
        missed = [name for name, target in targets.items() if not target["pass"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return "ERROR", f"exit {returncode}, result without targets ({type(error).__name__}: {error})"
    if returncode != (1 if missed else 0):
        return "ERROR", f"exit {returncode} disagrees with its targets (missed: {', '.join(missed) or 'none'})"
    return ("MISS", ", ".join(missed)) if missed else ("PASS", "")


def run(bench: Bench, seconds: float | None) -> Verdict:
    """Run one bench (its output goes straight to ours); a stale result of an earlier run is removed first."""
    bench.out.unlink(missing_ok=True)
    command = bench.command(seconds)
    print(f"\n=== bench {bench.name}: {' '.join(command)}", flush=True)
    started = time.monotonic()
    returncode = subprocess.run(command, cwd=REPO, check=False).returncode
    return Verdict(bench, *judge(bench, returncode), time.monotonic() - started)


def table(verdicts: list[Verdict]) -> str:
    rows = [("bench", "verdict", "wall s", "missed / error", "result")]
    rows += [(v.bench.name, v.status, f"{v.wall_s:.0f}", v.detail or "-",
              str(v.bench.out.relative_to(REPO) if v.bench.out.is_relative_to(REPO) else v.bench.out))
             for v in verdicts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="stream length of every bench (a quick check; default: each bench's own)")
    args = parser.parse_args(argv)
    verdicts = [run(bench, args.seconds) for bench in BENCHES]
    print(f"\n{table(verdicts)}")
    return 0 if all(v.status == "PASS" for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
