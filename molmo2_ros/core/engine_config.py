"""The engines' configurations, importable without torch, httpx or OpenCV: a robot whose node talks to a vLLM
server never imports torch (the node's settings build these before any engine module is imported).

`ENGINE_KINDS` names the engines `engine_factory.make_engine` makes from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .prompts import MAX_QUERY_CHARS

ENGINE_KINDS = ("transformers", "vllm")


@dataclass(frozen=True)
class EngineConfig:
    """model: Hub id or local folder; revision: pinned Hub revision (commit or tag); device: auto|cuda|cpu
    (cuda[:N] accepted); dtype: auto (bf16 on CUDA, fp32 on CPU)|bfloat16|float16|float32;
    attn_implementation: e.g. sdpa, eager, flash_attention_2 (empty = transformers' default);
    quantization: none|int8|int4: the text model's linear layers through bitsandbytes (LLM.int8 / NF4 with double
    quantization, computing in dtype); the vision encoder, adapter and lm_head stay in dtype;
    max_new_tokens: default generation limit; feature_cache_frames: frames whose vision features are kept
    (least recently used go first; 0 = twice the largest clip seen, i.e. what sliding windows reuse);
    feature_cache_mb: features evicted from those frames are kept on in host memory up to this many MiB, least
    recently used first out (rewind questions over the history reuse them: core/rewind.py); 0 = none;
    reuse_prefix / cache_features: the two exact reuses (off = plain path, for comparison);
    batch_queries: decode all queries of a clip in one batch (same tokens; float rounding may differ);
    max_oom_retries: retries with half the frames after CUDA out-of-memory."""

    model: str
    revision: str = ""
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = ""
    quantization: str = "none"
    max_new_tokens: int = 256
    feature_cache_frames: int = 0
    feature_cache_mb: float = 0.0
    reuse_prefix: bool = True
    cache_features: bool = True
    batch_queries: bool = True
    max_oom_retries: int = 2
    max_query_chars: int = 500


@dataclass(frozen=True)
class VllmConfig:
    """server_url: the server's OpenAI-compatible base URL, http(s)://host:port/v1; model: served model name
    ("" = the only/first model the server lists); api_key_env / api_key_file: where the API key is (an
    environment variable's name, or a file holding it; both empty = no key); request_timeout_s: limit for one
    request (connect + prefill + decode); connect_timeout_s: limit for opening a connection; max_inflight: most
    requests in flight from this engine; max_new_tokens: default generation limit; frame_format: png (lossless)
    or jpeg; jpeg_quality: 1..100; initial/max_backoff_s: wait before probing a server that could not be reached,
    doubled after each failed probe up to the maximum; keepalive_s: an idle connection is closed after this, so it
    must stay below the server's keep-alive (vLLM's uvicorn: 5 s, `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`): a request sent
    on a connection the server is closing at that moment is lost (httpx's default, 5 s, races the server's)."""

    server_url: str
    model: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    request_timeout_s: float = 60.0
    connect_timeout_s: float = 3.0
    max_inflight: int = 8
    max_new_tokens: int = 256
    max_query_chars: int = MAX_QUERY_CHARS
    frame_format: str = "png"
    jpeg_quality: int = 95
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    keepalive_s: float = 2.0


def check_server_url(url: str) -> str:
    """Reason why `url` is not a usable server URL, or ''."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"server_url must be http(s)://host[:port]/v1, got '{redact_url(url)}'"
    return ""


def redact_url(url: str) -> str:
    """`url` without user:password (a key must never reach a log or diagnostics)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
