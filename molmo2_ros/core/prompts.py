"""Prompts for each task kind, using the phrasings Molmo2 was trained on, and sanitising of user text."""

from __future__ import annotations

import re

from .types import Query, TaskKind

DEFAULT_TEMPLATES: dict[TaskKind, str] = {
    TaskKind.POINT: "Point to the {text}.",
    TaskKind.COUNT: 'How many "{text}" are there in the video?',
    TaskKind.TRACK: "Track the {text}.",
    TaskKind.EVENT: "Point to any {text} in the video",
    TaskKind.CAPTION: "Describe this video.",
    TaskKind.QUESTION: "{text}",
}

MAX_QUERY_CHARS = 500
_SPECIAL_TOKEN = re.compile(r"<\|?/?[A-Za-z_]{1,32}\|?>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


class QueryTextError(ValueError):
    """The query text is empty or too long."""


def sanitize_text(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """User text made safe for a prompt: no control characters, no model special tokens, bounded length.

    Raises QueryTextError when the text is longer than `max_chars` (refused, never silently cut)."""
    if len(text) > max_chars:
        raise QueryTextError(f"query text has {len(text)} characters, more than the limit of {max_chars}")
    text = _CONTROL.sub(" ", text)
    text = _SPECIAL_TOKEN.sub("", text)
    return " ".join(text.split())


def build_prompt(query: Query, templates: dict[TaskKind, str] | None = None,
                 max_chars: int = MAX_QUERY_CHARS) -> str:
    """The prompt for `query`. The text is substituted literally (never evaluated or `str.format`-ed)."""
    template = (templates or DEFAULT_TEMPLATES).get(query.task, DEFAULT_TEMPLATES[query.task])
    text = sanitize_text(query.text, max_chars)
    if query.task in (TaskKind.POINT, TaskKind.TRACK):
        text = _LEADING_ARTICLE.sub("", text)
    if "{text}" in template and not text:
        raise QueryTextError(f"a {query.task.value} query needs a text")
    return template.replace("{text}", text)
