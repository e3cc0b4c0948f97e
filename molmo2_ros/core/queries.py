"""Standing queries in and out of text: the ONE loader and validator behind the `queries` parameter, a queries
file (`molmo2-ros replay --queries`), ManageQueries and the Query action, so each says the same thing about the
same mistake.

Text form: a YAML (or JSON) list of mappings with keys id, task, text, topic, e.g.

    - {id: ball, task: point, text: red ball}
    - {id: people, task: track, text: person, topic: /planner/people}

A file may also hold the list under a top-level `queries` key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from .prompts import MAX_QUERY_CHARS, sanitize_text
from .types import Query, TaskKind

QUERY_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
QUERY_KEYS = ("id", "task", "text", "topic")
TASKS_TEXT = ", ".join(t.value for t in TaskKind)


def validate_query(query: Query, max_chars: int = MAX_QUERY_CHARS) -> Query:
    """A clean copy of `query` (text sanitised for the prompt), or ValueError saying what is wrong with it."""
    if not query.id or not set(query.id) <= QUERY_ID_CHARS or len(query.id) > 64:
        raise ValueError(f"query id '{query.id}' must be 1-64 letters, digits or '_'")
    task = task_kind(query.task)
    text = sanitize_text(query.text, max_chars)
    if task != TaskKind.CAPTION and not text:
        raise ValueError(f"query '{query.id}': a {task.value} query needs a text")
    return Query(id=query.id, task=task, text=text, topic=query.topic)


def task_kind(value: object) -> TaskKind:
    """The TaskKind named by `value`, or ValueError listing the tasks."""
    try:
        return TaskKind(value if isinstance(value, TaskKind) else str(value))
    except ValueError:
        raise ValueError(f"unknown task '{value}' (use {TASKS_TEXT})") from None


def query_from_mapping(item: object, max_chars: int = MAX_QUERY_CHARS, where: str = "query") -> Query:
    """A validated Query from {id, task, text[, topic]}; ValueError prefixed with `where` (e.g. 'queries[2]')."""
    if not isinstance(item, Mapping) or set(item) - set(QUERY_KEYS):
        raise ValueError(f"{where} must be a mapping with keys {', '.join(QUERY_KEYS)}")
    try:
        return validate_query(Query(id=str(item.get("id") or ""), task=task_kind(item.get("task", "")),
                                    text=str(item.get("text") or ""), topic=str(item.get("topic") or "")),
                              max_chars)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def parse_queries(data: str | list | None, max_chars: int = MAX_QUERY_CHARS, where: str = "queries") -> list[Query]:
    """Validated queries from the YAML text (or the already parsed list); ValueError says what is wrong."""
    if isinstance(data, str):
        if not data.strip():
            return []
        try:
            data = yaml.safe_load(data)
        except yaml.YAMLError as error:
            raise ValueError(f"{where} is not valid YAML: {error}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError(f"{where} must be a YAML list of {{{', '.join(QUERY_KEYS)}}} mappings")
    queries: list[Query] = []
    for i, item in enumerate(data):
        query = query_from_mapping(item, max_chars, f"{where}[{i}]")
        if any(q.id == query.id for q in queries):
            raise ValueError(f"{where}: duplicate id '{query.id}'")
        queries.append(query)
    return queries


def load_queries(path: str | Path, max_chars: int = MAX_QUERY_CHARS) -> list[Query]:
    """Validated queries from a YAML/JSON file (a list, or a mapping with a `queries` list); ValueError names the
    file and the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"cannot read queries from '{path}': {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"queries file '{path}' is not valid YAML: {error}") from None
    if isinstance(data, dict) and "queries" in data:
        data = data["queries"]
    return parse_queries(data, max_chars, where=path.name)


def dump_queries(queries: list[Query]) -> str:
    """The YAML text of these queries (parse_queries reads it back); "[]" for none."""
    items = [{k: v for k, v in (("id", q.id), ("task", q.task.value), ("text", q.text), ("topic", q.topic)) if v}
             for q in queries]
    return yaml.safe_dump(items, default_flow_style=None, sort_keys=False, width=1000) if items else "[]"


def query_changes(current: list[Query], wanted: list[Query]) -> tuple[list[Query], list[str]]:
    """(queries to add, ids to remove) that turn `current` into `wanted`; a changed query is removed and added."""
    have = {q.id: q for q in current}
    want = {q.id: q for q in wanted}
    return [q for q in wanted if have.get(q.id) != q], [i for i, q in have.items() if want.get(i) != q]
