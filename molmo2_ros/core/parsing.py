"""Parse Molmo2 answers (points, tracks, counts, empty answers, prose) into a ParsedAnswer.

The parser scans by hand (no backtracking regex), runs in time linear in the answer's length and never
raises: malformed or out-of-range items are dropped and counted by reason in `ParsedAnswer.dropped`:

- "malformed_tag": a `<points`/`<tracks` tag with broken attributes or without `coords`;
- "truncated_tag": the answer ends inside a tag (complete groups before the cut are kept) or a tag is never
  closed (its points are kept, the label runs to the next tag or the end);
- "malformed_group": a group without a valid key or whose token count is not 1 + 3k (k >= 1);
- "duplicate_object": in a `<tracks>` element, an object id repeated at one time key (the first is kept, as
  Ai2's reference `extract_tracks` does: an object is at one place at one time);
- "malformed_point": an id, x or y that is not an integer;
- "coord_out_of_range": x or y negative or above 1000;
- "bad_number": a key, id or count with too many digits;
- "too_many_points": valid points beyond `max_points`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .types import ParsedAnswer, RawPoint

_TAG_NAMES = ("points", "tracks")
_NONE_ANSWERS = frozenset({"there are none", "no tracks available"})
_MAX_DIGITS = 9  # longer keys, ids and counts are rejected as "bad_number"
_COORD_MAX = 1000
_SPACE = frozenset(" \t\r\n")
# Group separators Ai2's reference accepts (its `frame_regex`): `;` (released models), tab (pre-training), and
# `:`/`,` (other formatter settings). Splitting on all of them keeps a point from landing on the previous
# group's time key.
_GROUP_SEPARATORS = str.maketrans({"\t": ";", ":": ";", ",": ";"})
_NAME_STOP = frozenset(" \t\r\n=>\"")


@dataclass
class _Tag:
    name: str
    start: int
    end: int
    label: str
    points: list[RawPoint] = field(default_factory=list)


class _Finder:
    """Next occurrence of a needle at or after a position; amortised linear for non-decreasing starts."""

    def __init__(self, text: str, needle: str) -> None:
        self._text = text
        self._needle = needle
        self._pos = text.find(needle)

    def next(self, start: int) -> int:
        if 0 <= self._pos < start:
            self._pos = self._text.find(self._needle, start)
        return self._pos


def _is_digits(tok: str) -> bool:
    return tok.isascii() and tok.isdigit()


def _uint(tok: str) -> int | str:
    """A small non-negative integer, or the drop reason."""
    if not _is_digits(tok):
        return "malformed_point"
    if len(tok) > _MAX_DIGITS:
        return "bad_number"
    return int(tok)


def _coord(tok: str) -> int | str:
    """A coordinate in 0..1000, or the drop reason."""
    negative = tok.startswith("-")
    digits = tok[1:] if negative else tok
    if not _is_digits(digits):
        return "malformed_point"
    digits = digits.lstrip("0") or "0"
    if negative and digits != "0":
        return "coord_out_of_range"
    if len(digits) > 4 or int(digits) > _COORD_MAX:
        return "coord_out_of_range"
    return int(digits)


def _key(tok: str) -> tuple[float, bool] | str:
    """(key, key_is_index) from `S` or `S.D`, or the drop reason."""
    parts = tok.split(".")
    if len(parts) > 2 or not all(_is_digits(p) for p in parts):
        return "malformed_group"
    if len(parts[0]) > _MAX_DIGITS or len(parts[-1]) > _MAX_DIGITS:
        return "bad_number"
    return float(tok), len(parts) == 1


def _parse_coords(value: str, truncated: bool, max_points: int, points: list[RawPoint],
                  total: list[int], dropped: Counter, seen: set[tuple[float, bool, int]] | None) -> None:
    """Append the valid points of a coords value; total[0] counts points kept over the whole answer.

    seen: for track elements, the (key, key_is_index, id) already kept in the answer (a repeat is dropped)."""
    groups = value.translate(_GROUP_SEPARATORS).split(";")
    if truncated:
        groups.pop()  # the last group may be cut anywhere, even inside a number
    for group in groups:
        tokens = group.split()
        if not tokens:
            continue
        if len(tokens) < 4 or (len(tokens) - 1) % 3:
            dropped["malformed_group"] += 1
            continue
        key = _key(tokens[0])
        if isinstance(key, str):
            dropped[key] += 1
            continue
        for k in range(1, len(tokens), 3):
            pid, x, y = _uint(tokens[k]), _coord(tokens[k + 1]), _coord(tokens[k + 2])
            reason = next((v for v in (pid, x, y) if isinstance(v, str)), None)
            if reason is not None:
                dropped[reason] += 1
            elif seen is not None and (key[0], key[1], pid) in seen:
                dropped["duplicate_object"] += 1
            elif total[0] >= max_points:
                dropped["too_many_points"] += 1
            else:
                if seen is not None:
                    seen.add((key[0], key[1], pid))
                points.append(RawPoint(key=key[0], object_id=pid, x=float(x), y=float(y), key_is_index=key[1]))
                total[0] += 1


def _read_attrs(text: str, j: int) -> tuple[dict[str, str], int, str, str]:
    """Attributes of a tag from position j: (attrs, position after the tag or where it broke, status, cut).

    status: "ok", "empty" (a self-closing `.../>` element, no label), "malformed" or "truncated" (the text ended
    inside the tag); cut names the attribute whose value the end of the text cut off ("" if none).
    """
    n = len(text)
    attrs: dict[str, str] = {}
    while True:
        while j < n and text[j] in _SPACE:
            j += 1
        if j >= n:
            return attrs, n, "truncated", ""
        if text[j] == ">":
            return attrs, j + 1, "ok", ""
        if text[j] == "/":  # the self-closing form the reference's coord_regex accepts: <points coords="..."/>
            if j + 1 >= n:
                return attrs, n, "truncated", ""
            return (attrs, j + 2, "empty", "") if text[j + 1] == ">" else (attrs, j + 1, "malformed", "")
        k = j
        while k < n and text[k] not in _NAME_STOP:
            k += 1
        name = text[j:k]
        while k < n and text[k] in _SPACE:
            k += 1
        if k >= n:
            return attrs, n, "truncated", ""
        if not name or text[k] != "=":
            return attrs, max(k, j + 1), "malformed", ""
        k += 1
        while k < n and text[k] in _SPACE:
            k += 1
        if k >= n:
            return attrs, n, "truncated", ""
        if text[k] != '"':
            return attrs, k, "malformed", ""
        q = text.find('"', k + 1)
        if q < 0:
            attrs[name] = text[k + 1:]
            return attrs, n, "truncated", name
        attrs[name] = text[k + 1:q]
        j = q + 1


def _scan_tags(text: str, max_points: int, dropped: Counter) -> list[_Tag]:
    """All `<points>`/`<tracks>` elements, in order."""
    n = len(text)
    opens = {name: _Finder(text, "<" + name) for name in _TAG_NAMES}
    closes = {name: _Finder(text, f"</{name}>") for name in _TAG_NAMES}
    total = [0]
    seen: set[tuple[float, bool, int]] = set()
    tags: list[_Tag] = []

    def next_open(start: int) -> tuple[int, str]:
        found = [(p, name) for name, f in opens.items() if (p := f.next(start)) >= 0]
        return min(found) if found else (-1, "")

    pos = 0
    while True:
        i, name = next_open(pos)
        if i < 0:
            return tags
        j = i + 1 + len(name)
        if j < n and text[j] not in _SPACE and text[j] != ">":
            pos = j  # e.g. "<pointsfoo": not a tag
            continue
        attrs, end, status, cut = _read_attrs(text, j)
        coords = attrs.get("coords")
        if status == "malformed" or (status in ("ok", "empty") and coords is None):
            dropped["malformed_tag"] += 1
            pos = end
            continue
        tag = _Tag(name=name, start=i, end=end, label=attrs.get("alt", ""))
        if coords is not None:
            _parse_coords(coords, cut == "coords", max_points, tag.points, total, dropped,
                          seen if name == "tracks" else None)
        tags.append(tag)
        if status == "truncated":
            dropped["truncated_tag"] += 1
            return tags
        if status == "empty":
            pos = end
            continue
        close = closes[name].next(end)
        nxt, _ = next_open(end)
        if close >= 0 and (nxt < 0 or close < nxt):
            label, pos = text[end:close], close + len(name) + 3
        else:
            dropped["truncated_tag"] += 1
            pos = nxt if nxt >= 0 else n
            label = text[end:pos]
        tag.label = label.strip() or tag.label
        tag.end = pos


def _count_token(tok: str, dropped: Counter) -> int | None:
    """A count written as digits (trailing punctuation allowed); too many digits count as "bad_number"."""
    tok = tok.rstrip(".,!")
    if not _is_digits(tok):
        return None
    if len(tok) > _MAX_DIGITS:
        dropped["bad_number"] += 1
        return None
    return int(tok)


def _count_around(text: str, tags: list[_Tag], dropped: Counter) -> int | None:
    """N of `There are N <points..>` or `Counting the <points..> shows a total of N.`"""
    before = text[:tags[0].start].split()
    if before and _is_digits(before[-1]):
        return _count_token(before[-1], dropped)
    after = text[tags[-1].end:]
    i = after.find("total of")
    if i >= 0:
        rest = after[i + len("total of"):].split(None, 1)
        if rest:
            return _count_token(rest[0], dropped)
    return None


def parse_answer(text: str, *, max_points: int = 1000) -> ParsedAnswer:
    """Parse one Molmo2 answer; never raises, linear in len(text).

    kind is "points" or "tracks" (after the first tag element; the points of all elements are kept, the label
    is the first element's), "count" (the whole answer is a number; count is None if it was too large),
    "none" (`There are none.` / `No tracks available.`) or "prose". count is set for the counting forms;
    for points without a number it stays None.
    """
    dropped: Counter = Counter()
    tags = _scan_tags(text, max(0, max_points), dropped)
    if tags:
        return ParsedAnswer(
            text=text, kind=tags[0].name, label=tags[0].label,
            points=[p for t in tags for p in t.points],
            count=_count_around(text, tags, dropped), dropped=dropped,
        )
    stripped = text.strip()
    bare = stripped[:-1] if stripped.endswith(".") else stripped
    if _is_digits(bare):
        return ParsedAnswer(text=text, kind="count", count=_count_token(bare, dropped), dropped=dropped)
    if len(stripped) < 64 and " ".join(stripped.split()).lower().rstrip(".") in _NONE_ANSWERS:
        return ParsedAnswer(text=text, kind="none", dropped=dropped)
    return ParsedAnswer(text=text, kind="prose", dropped=dropped)
