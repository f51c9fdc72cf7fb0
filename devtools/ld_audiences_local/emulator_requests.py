"""What the LaunchDarkly emulator's endpoints take and give: a parsed request, an answer, LaunchDarkly's error
bodies, and the checks of a JSON body that name the field at fault as LaunchDarkly's 400s do."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSONValue = Any

# LaunchDarkly context kinds: letters, digits, ".", "_", "-"; "kind" and "multi" are reserved.
CONTEXT_KIND_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
RESERVED_CONTEXT_KINDS = frozenset({"kind", "multi"})


class ApiError(Exception):
    """An error answer: its status, LaunchDarkly's `code` and `message`, and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return Response(self.status, error_body(self.code, self.message), self.headers)


@dataclass
class Response:
    status: int
    body: JSONValue = None
    headers: dict[str, str] | None = None
    drop: bool = False  # close the connection without an answer
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class Request:
    method: str
    params: dict[str, str]  # the route template's {names}
    query: dict[str, str]
    headers: Mapping[str, str]  # lower-case names
    content_type: str
    body: bytes


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def bad(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message)


def parse_json_object(body: bytes) -> dict[str, JSONValue]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"invalid JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise bad("request body must be a JSON object")
    return doc


def required_string(doc: Mapping[str, JSONValue], name: str, where: str = "") -> str:
    path = f"{where}{name}"
    if name not in doc or doc[name] is None:
        raise bad(f"{path} is required")
    value = doc[name]
    if not isinstance(value, str):
        raise bad(f"{path} must be a string")
    if not value:
        raise bad(f"{path} must be a non-empty string")
    return value


def check_context_kind(kind: str, path: str) -> None:
    if not CONTEXT_KIND_RE.match(kind) or kind in RESERVED_CONTEXT_KINDS:
        raise bad(f"{path} is not a valid context kind: {kind!r}")


def key_list(doc: Mapping[str, JSONValue], name: str, where: str) -> list[str]:
    """An optional array of non-empty context keys (`included.add` and the like)."""
    path = f"{where}.{name}"
    if name not in doc or doc[name] is None:
        return []
    value = doc[name]
    if not isinstance(value, list):
        raise bad(f"{path} must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise bad(f"{path}[{i}] must be a non-empty string")
    return value


def keys_in(doc: JSONValue) -> int:
    """How many context keys a write carries: segment-audiences items, or included/excluded adds and removes."""
    if not isinstance(doc, dict):
        return 0
    if isinstance(doc.get("batch"), list):
        return len(doc["batch"])
    sections = [doc.get(target) for target in ("included", "excluded")]
    return sum(
        len(section.get(change) or [])
        for section in sections
        if isinstance(section, dict)
        for change in ("add", "remove")
    )
