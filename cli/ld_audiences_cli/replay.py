"""Post raw Segment payload fixtures to an ingest endpoint, as Segment would, and report per file.

A fixture file holds one raw payload: a single event object, a JSON array of events (Webhooks
(Actions) batching) or `{"batch": [...]}` (the HTTP Tracking API). It is sent byte for byte.

The URL is either a base (`http://127.0.0.1:3000`, `https://…/Prod`): `{"batch": …}` files go to
`/v1/batch`, everything else to `/events`; or a full endpoint ending in `/events` or `/v1/batch`
(for instance the deployed API's URL from the stack outputs), used for every file.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ENDPOINT_SUFFIXES = ("/events", "/v1/batch")
TIMEOUT = (3.05, 30.0)  # API Gateway REST gives up after 29 s
SHOWN_ERRORS = 10  # rejected events named per file


def find_fixtures(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and every `*.json` under given directories (recursively, sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


def is_endpoint(url: str) -> bool:
    return url.rstrip("/").endswith(ENDPOINT_SUFFIXES)


def endpoint_for(url: str, payload: Any) -> str:
    """Where one payload goes: `url` itself when it is an endpoint, else the route for its shape."""
    url = url.rstrip("/")
    if is_endpoint(url):
        return url
    is_batch = isinstance(payload, dict) and "batch" in payload
    return url + ("/v1/batch" if is_batch else "/events")


def authorization(secret: str, basic: bool) -> str:
    """`Bearer <secret>`, or Segment's write-key form `Basic base64("<secret>:")`."""
    if basic:
        return "Basic " + base64.b64encode(f"{secret}:".encode()).decode("ascii")
    return f"Bearer {secret}"


@dataclass
class FileResult:
    path: Path
    url: str
    status: int | None = None  # None: no HTTP answer
    accepted: int | None = None
    skipped: int | None = None
    rejected: int | None = None
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first ones, when many were rejected
    message: str = ""  # error code and message, or why there was no answer
    unreachable: bool = False  # no connection, or no answer in time: the endpoint is down or wrong

    @property
    def ok(self) -> bool:
        return self.status == 200

    def line(self) -> str:
        parts = [str(self.path), str(self.status) if self.status is not None else "---"]
        if self.accepted is not None:
            parts.append(f"accepted={self.accepted} skipped={self.skipped} rejected={self.rejected}")
        if self.message:
            parts.append(self.message)
        if self.skipped_reasons:
            parts.append(
                "skipped: " + ", ".join(f"{reason} ({n})" for reason, n in sorted(self.skipped_reasons.items()))
            )
        if self.errors:
            reasons = []
            for error in self.errors[:SHOWN_ERRORS]:
                reason = f"#{error.get('index')} {error.get('reason')}"
                if error.get("messageId"):
                    reason += f" ({error['messageId']})"
                reasons.append(reason)
            hidden = (self.rejected or len(self.errors)) - len(reasons)
            parts.append("rejected: " + ", ".join(reasons) + (f" … and {hidden} more" if hidden > 0 else ""))
        return "  ".join(parts)


def to_document(result: FileResult) -> dict[str, Any]:
    """One file of `replay --output json` (docs/CLI.md)."""
    return {
        "path": str(result.path),
        "url": result.url,
        "status": result.status,
        "accepted": result.accepted,
        "skipped": result.skipped,
        "rejected": result.rejected,
        "skipped_reasons": result.skipped_reasons,
        "errors": result.errors,
        "message": result.message,
    }


def post_payload(
    session: requests.Session,
    url: str,
    raw: bytes,
    secret: str,
    *,
    basic: bool = False,
    gzip: bool = False,
) -> requests.Response:
    headers = {
        "Authorization": authorization(secret, basic),
        "Content-Type": "application/json",
        "User-Agent": "ld-audiences-replay/1",
    }
    body = raw
    if gzip:
        body = gzip_module.compress(raw)
        headers["Content-Encoding"] = "gzip"
    return session.post(url, data=body, headers=headers, timeout=TIMEOUT)


def replay_file(
    session: requests.Session,
    path: Path,
    url: str,
    secret: str,
    *,
    basic: bool = False,
    gzip: bool = False,
) -> FileResult:
    raw = path.read_bytes()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None  # sent anyway: the endpoint's answer to broken JSON is part of the replay
    target = endpoint_for(url, payload)
    result = FileResult(path=path, url=target)
    try:
        response = post_payload(session, target, raw, secret, basic=basic, gzip=gzip)
    except requests.RequestException as exc:
        result.message = f"no answer: {type(exc).__name__}"
        result.unreachable = isinstance(exc, requests.ConnectionError | requests.Timeout)
        return result
    result.status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("accepted", "skipped", "rejected"):
            value = body.get(name)
            setattr(result, name, value if isinstance(value, int) else None)
        if "code" in body or "message" in body:
            result.message = f"{body.get('code', '')}: {body.get('message', '')}".strip(": ")
        errors, reasons = body.get("errors"), body.get("skipped_reasons")
        result.errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        if isinstance(reasons, dict):
            result.skipped_reasons = {str(k): v for k, v in reasons.items() if isinstance(v, int)}
    elif response.text:
        result.message = response.text.strip().replace("\n", " ")[:200]
    if result.accepted is None:
        result.skipped = result.rejected = None
    # The secret is never echoed by the endpoint, but a proxy error page could: never print it.
    result.message = result.message.replace(secret, "***") if secret else result.message
    return result


def iter_replay(
    paths: Sequence[str | Path],
    url: str,
    secret: str,
    *,
    basic: bool = False,
    gzip: bool = False,
) -> Iterator[FileResult]:
    """Post every fixture under `paths` in order, yielding each file's result as it comes back.

    Raises FileNotFoundError, before posting anything, when a path does not exist.
    """
    files = find_fixtures(paths)
    with requests.Session() as session:
        for path in files:
            yield replay_file(session, path, url, secret, basic=basic, gzip=gzip)


def replay(
    paths: Sequence[str | Path],
    url: str,
    secret: str,
    *,
    basic: bool = False,
    gzip: bool = False,
) -> list[FileResult]:
    """Post every fixture under `paths` in order; one result per file."""
    return list(iter_replay(paths, url, secret, basic=basic, gzip=gzip))
