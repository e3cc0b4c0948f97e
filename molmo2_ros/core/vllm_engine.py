"""Molmo2 on a vLLM server: the `vllm` engine (OpenAI-compatible HTTP API, e.g. a shared GPU server).

Each clip is sent once per query as pre-sampled frames with their exact relative times: a `video_url` data URL
whose comma-separated parts are the frames (PNG, lossless, or JPEG), and `media_io_kwargs.video` with integer
`frames_indices` at `fps` 10, so the server prints every frame time with the same 0.1 s text as the local engine
(`molmo2_inputs.Molmo2InputBuilder.video_string`), `do_sample_frames` false (no re-sampling) and `num_frames` -1
(all frames: vLLM otherwise keeps the first 32). The server needs `--trust-request-mm-kwargs` for that, and the
project's plugin (vllm_plugin/) to serve Molmo2 the way the reference does. The prompt text is the local
engine's (`prompts.build_prompt`), so answers go through the same parser and grounding.

All queries of a clip are in flight together, and `infer_batch` sends the clips of several cameras at once,
at most `max_inflight` requests at a time (a semaphore: callers wait, nothing queues without bound). When the
server cannot be reached, requests fail fast for a back-off period that doubles up to `max_backoff_s`, then the
next request probes the server again; every failure is counted by kind (see `FAILURE_KINDS`).

No torch here: a robot that only talks to a server needs numpy, OpenCV and httpx.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import cv2
import httpx
import numpy as np

from .engine_config import VllmConfig, check_server_url, redact_url
from .engine_interface import Engine, EngineCapabilities, InferRequest, MemoryReport
from .prompts import QueryTextError, build_prompt
from .types import Clip, Generation, Inference, Query

# Frame times travel as integer indices at this rate: index = tenths of a second, printed back by the server as
# f"{index / fps:.1f}", the same text the local engine writes (0.1 s is Molmo2's time resolution).
TIME_FPS = 10
FAILURE_KINDS = ("timeout", "connect", "disconnect", "http_4xx", "http_5xx", "protocol", "unavailable",
                 "bad_query")
FRAME_FORMATS = ("png", "jpeg")
_LATENCY_WINDOW = 256  # requests kept for the latency percentiles


class ServerUnavailableError(RuntimeError):
    """The vLLM server could not be used at `load()`; the message names the URL and what to check."""


def read_api_key(config: VllmConfig) -> str:
    """The API key from the environment variable or file the config names ('' when neither is set).
    Errors name the variable or file, never the key."""
    if config.api_key_env and config.api_key_file:
        raise ServerUnavailableError("set either api_key_env or api_key_file, not both")
    if config.api_key_env:
        key = os.environ.get(config.api_key_env, "").strip()
        if not key:
            raise ServerUnavailableError(f"api_key_env names the environment variable '{config.api_key_env}', "
                                         "which is unset or empty in the node's environment")
        return key
    if config.api_key_file:
        try:
            key = open(os.path.expanduser(config.api_key_file), encoding="utf-8").read().strip()
        except OSError as error:
            raise ServerUnavailableError(f"cannot read api_key_file '{config.api_key_file}': "
                                         f"{error.strerror or type(error).__name__}") from None
        if not key:
            raise ServerUnavailableError(f"api_key_file '{config.api_key_file}' is empty")
        return key
    return ""


def frame_time_indices(relative_times: list[float]) -> list[int]:
    """Integer indices at TIME_FPS whose printed times equal the local engine's `f"{t:.1f}"` text (rounding
    through the same formatting, so a time like 0.35 s gives the same digit on both engines)."""
    return [int(round(float(f"{t:.1f}") * TIME_FPS)) for t in relative_times]


def encode_frames(clip: Clip, frame_format: str = "png", jpeg_quality: int = 95) -> str:
    """The clip's frames as one `data:video/jpeg;base64,<frame>,<frame>,...` URL (vLLM's pre-sampled frames
    format; each part is a PNG or JPEG image, the MIME type names the container, not the codec)."""
    if frame_format == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]  # lossless; level 1 is the fastest
    elif frame_format == "jpeg":
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    else:
        raise ValueError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}, got '{frame_format}'")
    parts = []
    for f in clip.frames:
        ok, data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(f.frame.image), cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise ValueError(f"cannot encode frame {f.stamp_ns} as {frame_format}")
        parts.append(base64.b64encode(data.tobytes()).decode("ascii"))
    return "data:video/jpeg;base64," + ",".join(parts)


def video_kwargs(clip: Clip) -> dict:
    """`media_io_kwargs.video` for the clip: exact frame times, no re-sampling, every frame."""
    indices = frame_time_indices(clip.relative_times())
    # Frames closer than 0.1 s share an index (and a printed time, as on the local engine); the server wants at
    # least as many source frames as it receives.
    return {"fps": TIME_FPS, "frames_indices": indices, "total_num_frames": max(indices[-1] + 1, len(indices)),
            "num_frames": -1, "do_sample_frames": False}


class _Failure(Exception):
    """A request failed; kind is one of FAILURE_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Link:
    """Whether the server is believed reachable. After a connection failure requests fail fast until the
    back-off ends; then one request probes (the others still fail fast) and success restores the link."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._lock = threading.Lock()
        self._initial, self._max = initial_s, max_s
        self.down_since: float | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._probing = False
        self.reconnects = 0

    def admit(self) -> bool:
        with self._lock:
            if self.down_since is None:
                return True
            if self._probing or time.monotonic() < self._retry_at:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            if self.down_since is not None:
                self.reconnects += 1
            self.down_since, self._backoff, self._probing = None, 0.0, False

    def lost(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self.down_since is None:
                self.down_since = now
            self._backoff = min(self._max, self._backoff * 2 if self._backoff else self._initial)
            self._retry_at = now + self._backoff
            self._probing = False

    def release_probe(self) -> None:
        """A probe ended without telling anything about the link (e.g. HTTP 4xx): let the next one through."""
        with self._lock:
            self._probing = False

    def state(self) -> str:
        with self._lock:
            if self.down_since is None:
                return "up"
            return (f"down for {time.monotonic() - self.down_since:.1f} s, next probe in "
                    f"{max(0.0, self._retry_at - time.monotonic()):.1f} s")


class VllmEngine(Engine):
    """Answers queries with a Molmo2 served by vLLM. Thread-safe: several threads may call `infer` at once;
    all their requests share the `max_inflight` limit."""

    capabilities = EngineCapabilities(batch_clips=True)

    def __init__(self, config: VllmConfig) -> None:
        reason = check_server_url(config.server_url)
        if reason:
            raise ServerUnavailableError(reason)
        if config.frame_format not in FRAME_FORMATS:
            raise ServerUnavailableError(f"frame_format must be one of {', '.join(FRAME_FORMATS)}")
        self.config = config
        self.url = redact_url(config.server_url.rstrip("/"))
        self.served_model = config.model
        self.server_version = ""
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(max(1, config.max_inflight))
        self._link = _Link(config.initial_backoff_s, config.max_backoff_s)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._latency_s: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._inflight = 0
        self._peak_inflight = 0
        self.last_error = ""

    # ---- Engine --------------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.served_model or self.config.model

    def load(self) -> None:
        """Connect: check the server answers and serves the model. Raises ServerUnavailableError that names the
        URL and what to check."""
        key = read_api_key(self.config)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(self.config.request_timeout_s, connect=self.config.connect_timeout_s)
        n = max(1, self.config.max_inflight)
        client = httpx.Client(base_url=self.config.server_url.rstrip("/"), headers=headers, timeout=timeout,
                              limits=httpx.Limits(max_connections=n, max_keepalive_connections=n,
                                                  keepalive_expiry=self.config.keepalive_s))
        try:
            models = self._probe(client)
        except ServerUnavailableError:
            client.close()
            raise
        if self.config.model and self.config.model not in models:
            client.close()
            raise ServerUnavailableError(
                f"the vLLM server at {self.url} does not serve model '{self.config.model}' (it serves: "
                f"{', '.join(models) or 'nothing'}): set the model parameter to one of these, or start the server "
                "with --served-model-name")
        self.served_model = self.config.model or models[0]
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="vllm_request")

    def _probe(self, client: httpx.Client) -> list[str]:
        """Served model names (GET /models) and the server's version (GET /version, vLLM's own route)."""
        hint = ("Check that the server runs (`make serve-vllm`, or the command in README 'Serving on vLLM'), that "
                "server_url has the right host, port and the /v1 suffix, and that this machine can reach it")
        try:
            response = client.get("/models", timeout=self.config.connect_timeout_s + 5.0)
        except httpx.HTTPError as error:
            raise ServerUnavailableError(f"cannot reach the vLLM server at {self.url}: {type(error).__name__}: "
                                         f"{error}. {hint}.") from None
        if response.status_code in (401, 403):
            raise ServerUnavailableError(f"the vLLM server at {self.url} refused the API key (HTTP "
                                         f"{response.status_code}): set api_key_env or api_key_file to the key the "
                                         "server was started with (--api-key)")
        if response.status_code != 200:
            raise ServerUnavailableError(f"the server at {self.url} answered GET /models with HTTP "
                                         f"{response.status_code}: is it an OpenAI-compatible server? {hint}.")
        try:
            models = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise ServerUnavailableError(f"the server at {self.url} answered GET /models with something that is "
                                         f"not an OpenAI model list. {hint}.") from None
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        try:
            version = client.get(root + "/version", timeout=self.config.connect_timeout_s + 5.0)
            self.server_version = str(version.json().get("version", "")) if version.status_code == 200 else ""
        except (httpx.HTTPError, ValueError, AttributeError):
            self.server_version = ""
        return models

    def unload(self) -> None:
        pool, client = self._pool, self._client
        self._pool = self._client = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()

    def infer(self, clip: Clip, queries: list[Query], max_new_tokens: int | None = None,
              stop: threading.Event | None = None) -> Inference:
        return self.infer_batch([InferRequest(clip, tuple(queries), max_new_tokens)], stop)[0]

    def infer_batch(self, requests: list[InferRequest], stop: threading.Event | None = None) -> list[Inference]:
        """Every query of every clip as its own HTTP request, all in flight together (at most max_inflight)."""
        started = time.perf_counter()
        pool = self._pool
        if pool is None:
            return [Inference(clip=r.clip, generations=[], error="vllm engine not loaded (call load())")
                    for r in requests]
        jobs: list[list[Future | str]] = []
        for r in requests:
            row: list[Future | str] = []
            if len({f.pooling for f in r.clip.frames}) > 1:
                # The server pools every frame alike (the checkpoint's video pooling); sending a SlowFast clip
                # would silently change what the model sees.
                jobs.append(["bad clip: mixed pooling (SlowFast) is not served by vLLM: set slowfast.enabled "
                             "false"] * max(1, len(r.queries)))
                continue
            try:
                video = encode_frames(r.clip, self.config.frame_format, self.config.jpeg_quality)
                media = {"video": video_kwargs(r.clip)}
            except ValueError as error:
                jobs.append([f"bad clip: {error}"] * max(1, len(r.queries)))
                continue
            for q in r.queries:
                try:
                    prompt = build_prompt(q, None, self.config.max_query_chars)
                except QueryTextError as error:
                    self._count_failure("bad_query", str(error))
                    row.append(f"bad_query: {error}")
                    continue
                body = self._body(video, media, prompt, r.max_new_tokens or self.config.max_new_tokens)
                row.append(pool.submit(self._request, body, stop))
            jobs.append(row)
        stopped = self._wait([j for row in jobs for j in row if isinstance(j, Future)], stop)
        return [self._collect(r, row, started, stopped) for r, row in zip(requests, jobs)]

    def memory_report(self) -> MemoryReport:
        return MemoryReport(device=self.url)

    def diagnostics(self) -> dict[str, str]:
        """Request accounting for /diagnostics (never the API key)."""
        s = self.stats()
        values = {
            "vllm.server": f"{self.url} ({self.served_model}, vLLM {self.server_version or '?'})",
            "vllm.link": self._link.state(),
            "vllm.reconnects": str(s["reconnects"]),
            "vllm.requests_ok": str(s["requests_ok"]),
            "vllm.requests_failed": str(s["requests_failed"]),
            "vllm.inflight": f"{s['inflight']}/{self.config.max_inflight}",
            "vllm.latency_s_p50": f"{s['latency_s_p50']:.3f}",
            "vllm.latency_s_max": f"{s['latency_s_max']:.3f}",
            "vllm.prompt_tokens": str(s["prompt_tokens"]),
            "vllm.completion_tokens": str(s["completion_tokens"]),
            "vllm.cached_prompt_tokens": (str(s["cached_prompt_tokens"]) if s["cached_reported"]
                                          else "not reported (server flag --enable-prompt-tokens-details)"),
        }
        for kind in FAILURE_KINDS:
            values[f"vllm.failed.{kind}"] = str(s["failures"].get(kind, 0))
        if self.last_error:
            values["vllm.last_error"] = self.last_error
        return values

    def stats(self) -> dict:
        """Numbers behind `diagnostics` (for benchmarks and tests)."""
        with self._lock:
            latency = sorted(self._latency_s)
            c = Counter(self._counts)
            inflight, peak = self._inflight, self._peak_inflight
        failures = {k[len("failed_"):]: v for k, v in c.items() if k.startswith("failed_")}
        return {
            "requests_ok": c["ok"], "requests_failed": sum(failures.values()), "failures": failures,
            "inflight": inflight, "peak_inflight": peak, "reconnects": self._link.reconnects,
            "latency_s_p50": latency[len(latency) // 2] if latency else 0.0,
            "latency_s_max": latency[-1] if latency else 0.0,
            "prompt_tokens": c["prompt_tokens"], "completion_tokens": c["completion_tokens"],
            "cached_prompt_tokens": c["cached_tokens"], "cached_reported": c["cached_reported"] > 0,
        }

    # ---- requests --------------------------------------------------------------------------------------------
    def _body(self, video: str, media: dict, prompt: str, max_new_tokens: int) -> dict:
        content = [{"type": "video_url", "video_url": {"url": video}}, {"type": "text", "text": prompt}]
        return {"model": self.served_model, "messages": [{"role": "user", "content": content}],
                "max_tokens": int(max_new_tokens), "temperature": 0.0, "n": 1,
                "skip_special_tokens": True, "media_io_kwargs": media}

    def _request(self, body: dict, stop: threading.Event | None) -> tuple[str, int, float]:
        """One chat completion: (text, completion tokens, seconds). Raises _Failure. Runs on the pool."""
        with self._slots:  # the pool has max_inflight threads too; the semaphore also covers direct callers
            if stop is not None and stop.is_set():
                raise _Failure("stopped", "stopped")
            if not self._link.admit():
                self._count_failure("unavailable", f"server {self.url} unreachable ({self._link.state()})")
                raise _Failure("unavailable", f"server {self.url} unreachable, retrying later")
            with self._lock:
                self._inflight += 1
                self._peak_inflight = max(self._peak_inflight, self._inflight)
            t0 = time.perf_counter()
            try:
                return self._post(body, t0)
            finally:
                with self._lock:
                    self._inflight -= 1

    def _post(self, body: dict, t0: float) -> tuple[str, int, float]:
        client = self._client
        if client is None:
            raise _Failure("unavailable", "engine unloaded")
        try:
            response = client.post("/chat/completions", json=body)
        except httpx.TimeoutException as error:
            self._link.release_probe()
            raise self._failed("timeout", f"no answer within {self.config.request_timeout_s} s "
                                          f"({type(error).__name__})")
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._link.lost()
            raise self._failed("connect", f"cannot connect to {self.url}: {error}")
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
            self._link.lost()
            raise self._failed("disconnect", f"connection to {self.url} lost: {type(error).__name__}")
        except httpx.HTTPError as error:
            self._link.release_probe()
            raise self._failed("protocol", f"{type(error).__name__}: {error}")
        if response.status_code >= 400:
            kind = "http_5xx" if response.status_code >= 500 else "http_4xx"
            # 5xx: the server is up but failing; 4xx: this request was refused. Neither cuts the link.
            self._link.succeeded() if kind == "http_4xx" else self._link.release_probe()
            raise self._failed(kind, f"HTTP {response.status_code}: {_error_text(response)}")
        self._link.succeeded()
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise self._failed("protocol", "the server's answer is not a chat completion") from None
        elapsed = time.perf_counter() - t0
        details = usage.get("prompt_tokens_details") or {}
        with self._lock:
            self._counts["ok"] += 1
            self._latency_s.append(elapsed)
            self._counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self._counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)
            if details.get("cached_tokens") is not None:
                self._counts["cached_reported"] += 1
                self._counts["cached_tokens"] += int(details["cached_tokens"])
        return text, int(usage.get("completion_tokens") or 0), elapsed

    def _failed(self, kind: str, message: str) -> _Failure:
        self._count_failure(kind, message)
        return _Failure(kind, message)

    def _count_failure(self, kind: str, message: str) -> None:
        with self._lock:
            self._counts[f"failed_{kind}"] += 1
            self.last_error = f"{kind}: {message}"

    def _wait(self, futures: list[Future], stop: threading.Event | None) -> bool:
        """Wait for all requests; True when `stop` was set first (running requests then finish on their own,
        within request_timeout_s, and requests not yet started are skipped)."""
        pending = set(futures)
        while pending:
            if stop is not None and stop.is_set():
                return True
            _, pending = wait(pending, timeout=0.05 if stop is not None else None, return_when=FIRST_COMPLETED)
        return False

    def _collect(self, request: InferRequest, row: list[Future | str], started: float,
                 stopped: bool) -> Inference:
        generations, errors = [], []
        for query, job in zip(request.queries, row):
            if isinstance(job, str):
                errors.append(job)
                continue
            if not job.done():
                errors.append("stopped")
                continue
            try:
                text, tokens, _ = job.result()
            except _Failure as failure:
                errors.append(f"{failure.kind}: {failure}")
                continue
            generations.append(Generation(query, text, tokens, time.perf_counter() - started))
        if stopped or any(e.startswith("stopped") for e in errors):
            return Inference(clip=request.clip, generations=[], error="stopped", stopped=True)
        if errors:
            return Inference(clip=request.clip, generations=[],
                             error=f"vLLM server {self.url}: {len(errors)} of {len(row)} requests failed; "
                                   f"first: {errors[0]}")
        return Inference(clip=request.clip, generations=generations)


def _error_text(response: httpx.Response) -> str:
    """The server's error message, short (vLLM: {"error": {"message": ...}} or {"message": ...})."""
    try:
        data = response.json()
        message = (data.get("error") or {}).get("message") if isinstance(data.get("error"), dict) else None
        message = message or data.get("message") or data.get("detail") or response.text
    except (ValueError, AttributeError):
        message = response.text
    return " ".join(str(message).split())[:300]
