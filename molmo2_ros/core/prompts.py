"""Prompts for each task kind, using the phrasings Molmo2 was trained on, and sanitising of user text."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection

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
# Only where no tokenizer is at hand (validating a query before a model is loaded); prompts strip the
# tokenizer's own list (special_tokens), which this pattern cannot know (e.g. `|<EXTRA_TOKENS_7>|`).
_SPECIAL_TOKEN_GUESS = re.compile(r"<\|?/?[A-Za-z_]{1,32}\|?>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+", re.IGNORECASE)


class QueryTextError(ValueError):
    """The query text is empty or too long."""


def special_tokens(tokenizer) -> frozenset[str]:
    """Every string the tokenizer turns into one token before it splits text: its special tokens
    (`all_special_tokens`) and every added token, special or not (`added_tokens_decoder`; in the released
    Molmo2 tokenizer e.g. `<|im_end|>`, `<im_patch>`, `<|video|>` and `|<EXTRA_TOKENS_0>|` ... `_266>|`)."""
    tokens = set(tokenizer.all_special_tokens)
    tokens.update(t.content for t in tokenizer.added_tokens_decoder.values())
    return frozenset(t for t in tokens if t)


@functools.lru_cache(maxsize=8)
def _token_pattern(tokens: frozenset[str]) -> re.Pattern:
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def _strip_tokens(text: str, pattern: re.Pattern) -> str:
    while True:  # removing one token can join its neighbours into another ("<im_<im_patch>patch>")
        stripped = pattern.sub("", text)
        if stripped == text:
            return text
        text = stripped


def sanitize_text(text: str, max_chars: int = MAX_QUERY_CHARS,
                  special: Collection[str] | None = None) -> str:
    """User text made safe for a prompt: no control characters, no model special tokens, bounded length.

    special: the tokenizer's tokens to remove (`special_tokens(tokenizer)`); without it a generic pattern of
    `<name>`/`<|name|>` tokens is removed (for checks made before a model is loaded).
    Raises QueryTextError when the text is longer than `max_chars` (refused, never silently cut)."""
    if len(text) > max_chars:
        raise QueryTextError(f"query text has {len(text)} characters, more than the limit of {max_chars}")
    text = _CONTROL.sub(" ", text)
    if special is None:
        text = _strip_tokens(text, _SPECIAL_TOKEN_GUESS)
    elif special:
        text = _strip_tokens(text, _token_pattern(frozenset(special)))
    return " ".join(text.split())


def build_prompt(query: Query, templates: dict[TaskKind, str] | None = None,
                 max_chars: int = MAX_QUERY_CHARS, special: Collection[str] | None = None) -> str:
    """The prompt for `query`. The text is substituted literally (never evaluated or `str.format`-ed); `special`
    as in sanitize_text (engines pass their tokenizer's `special_tokens`)."""
    template = (templates or DEFAULT_TEMPLATES).get(query.task, DEFAULT_TEMPLATES[query.task])
    text = sanitize_text(query.text, max_chars, special)
    if query.task in (TaskKind.POINT, TaskKind.TRACK):
        text = _LEADING_ARTICLE.sub("", text)
    if "{text}" in template and not text:
        raise QueryTextError(f"a {query.task.value} query needs a text")
    return template.replace("{text}", text)
