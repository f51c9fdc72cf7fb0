"""The `filter` of LaunchDarkly's segment listing (`getSegments`), as its OpenAPI description gives it:
`field operator value` terms joined by "," (AND). The emulator refuses "|" and parentheses rather than
guess their precedence."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol


class Listed(Protocol):
    key: str
    name: str
    description: str | None
    tags: list[str]
    unbounded: bool

    @property
    def synced(self) -> bool: ...


class FilterError(ValueError):
    pass


_TERM = re.compile(r"^\s*(\w+)\s+(equals|anyOf|exists)\s*(.*?)\s*$", re.DOTALL)
_OPERATORS = {
    "tags": "anyOf",
    "includedKeys": "anyOf",
    "excludedKeys": "anyOf",
    "query": "equals",
    "unbounded": "equals",
    "external": "exists",
}


def _split(text: str) -> list[str]:
    """The terms of a filter: split at commas outside brackets and quotes."""
    terms, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char in "[(":
            depth += 1
        elif not quoted and char in "])":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            terms.append(text[start:i])
            start = i + 1
        elif not quoted and char in "|()":
            raise FilterError("the emulator supports only ',' (AND) between filter terms")
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise FilterError(f"invalid filter value {raw!r}") from None


def _strings(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise FilterError("expected a string or a list of strings")
    return values


def _term(text: str) -> Callable[[Listed], bool]:
    match = _TERM.match(text)
    if match is None:
        raise FilterError(f"invalid filter term {text.strip()!r}")
    field, operator, raw = match.groups()
    if _OPERATORS.get(field) != operator:
        raise FilterError(f"{field!r} cannot be filtered with {operator!r}")
    if field == "external":
        wanted = True if not raw else _value(raw) is True
        return lambda seg: seg.synced is wanted
    value = _value(raw)
    if field == "unbounded":
        if not isinstance(value, bool):
            raise FilterError("unbounded equals true or false")
        return lambda seg: seg.unbounded is value
    words = [w.lower() for w in _strings(value)]
    if field == "tags":
        return lambda seg: any(tag.lower() in words for tag in seg.tags)
    if field == "includedKeys":
        return lambda seg: seg.key.lower() in words
    if field == "excludedKeys":
        return lambda seg: seg.key.lower() not in words
    # "A fuzzy search across segment key, name, and description": a substring of any of them.
    return lambda seg: any(w in f"{seg.key}\n{seg.name}\n{seg.description or ''}".lower() for w in words)


def segment_filter(text: str) -> Callable[[Listed], bool]:
    terms = [_term(t) for t in _split(text)]
    return lambda seg: all(term(seg) for term in terms)


def query_int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise FilterError(f"{name} must be a non-negative integer")
    return int(raw)
