"""The ingest decision, free of Lambda and AWS: authenticate, decode, validate, normalize, enqueue, answer.

Answers follow what Segment's senders understand (DESIGN.md): 200 once the valid events are queued,
4xx only when the request is wrong as a whole (they are not retried), 503 when the queue is
unavailable (retried for up to four hours). Every error body has `code` and `message`.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ld_audiences.auth import WebhookCredentials, is_authorized, signature_valid
from ld_audiences.change import MembershipChange
from ld_audiences.config import IngestSettings
from ld_audiences.limits import MAX_LISTED_ERRORS
from ld_audiences.normalize import Rejected, Skipped, normalize

JSON_CONTENT_TYPES = ("application/json", "text/json")


class QueueUnavailable(Exception):
    """Changes could not be queued; the sender must retry the whole request."""


class ChangeQueue(Protocol):
    def send(self, changes: Sequence[MembershipChange]) -> None: ...


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: dict[str, Any]


@dataclass(slots=True)
class IngestReport:
    """What happened to each event of one request; the response body and the metrics come from it."""

    queued: list[str] = field(default_factory=list)  # Segment messageIds of the accepted events
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.queued)

    def as_body(self) -> dict[str, Any]:
        listed = self.errors[:MAX_LISTED_ERRORS]
        return {
            "accepted": self.accepted,
            "skipped": sum(self.skipped.values()),
            "rejected": len(self.errors),
            "skipped_reasons": dict(self.skipped),
            "errors": listed,
            "errors_omitted": len(self.errors) - len(listed),
        }


class RequestError(Exception):
    """The request as a whole is unacceptable: answered with `status` and nothing is queued."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    return Response(status, {"code": code, "message": message, **extra})


def handle(
    *,
    method: str,
    headers: Mapping[str, str],
    body: str | None,
    is_base64: bool,
    settings: IngestSettings,
    credentials: Callable[[], WebhookCredentials],
    queue: ChangeQueue,
) -> tuple[Response, IngestReport | None]:
    """One HTTP request in, one answer out. `headers` must have lower-case names."""
    if method.upper() != "POST":
        return error(405, "method_not_allowed", "only POST is accepted"), None
    try:
        # Authentication comes before any parsing: an unauthenticated caller reaches no decoder.
        creds = credentials()
        if not is_authorized(headers, creds):
            return error(401, "unauthorized", "missing or invalid credentials"), None
        raw = read_body(body, is_base64, settings.max_body_bytes)
        if creds.signing_key is not None and not signature_valid(raw, headers, creds.signing_key):
            return error(401, "invalid_signature", "missing or invalid X-Signature"), None
        check_content_type(headers)
        events = parse_events(decompress(raw, headers, settings.max_body_bytes), settings.max_events)
    except RequestError as exc:
        return error(exc.status, exc.code, exc.message), None

    changes, report = normalize_all(events, settings)
    try:
        queue.send(changes)
    except QueueUnavailable:
        return error(503, "queue_unavailable", "could not queue the events; retry later"), report

    if report.errors and not report.accepted and not report.skipped:
        return Response(
            400, {"code": "all_events_rejected", "message": "no event was valid", **report.as_body()}
        ), report
    return Response(200, report.as_body()), report


def read_body(body: str | None, is_base64: bool, max_bytes: int) -> bytes:
    """The body's bytes as the sender sent them (what a signature covers)."""
    if not body:
        raise RequestError(400, "empty_body", "the request has no body")
    if len(body) > max_bytes * 4 // 3 + 4:
        raise RequestError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    if is_base64:
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:  # binascii.Error, or characters outside ASCII
            raise RequestError(400, "invalid_body", "the body is not valid base64") from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        raise RequestError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    return raw


def decompress(raw: bytes, headers: Mapping[str, str], max_bytes: int) -> bytes:
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return raw
    if encoding not in _COMPRESSED:
        raise RequestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported")
    magic, wbits = _COMPRESSED[encoding]
    # API Gateway inflates a gzip or deflate body itself and passes the header on: only a body that is
    # still compressed is inflated here (JSON never starts with these bytes).
    if not raw.startswith(magic):
        return raw
    return _inflate(raw, encoding, wbits, max_bytes)


# Content coding -> the first bytes of a body still in it, and zlib's window bits to inflate it.
_COMPRESSED = {
    "gzip": (b"\x1f\x8b", 16 + zlib.MAX_WBITS),
    "deflate": (b"\x78", zlib.MAX_WBITS),  # the zlib format, which HTTP's "deflate" names
}


def _inflate(raw: bytes, encoding: str, wbits: int, max_bytes: int) -> bytes:
    # Bounded inflate: a small gzip bomb must not expand past the body limit.
    inflater = zlib.decompressobj(wbits=wbits)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error:
        raise RequestError(400, "invalid_body", f"the body is not valid {encoding}") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise RequestError(413, "body_too_large", f"the decompressed body is larger than {max_bytes} bytes")
    return data


def check_content_type(headers: Mapping[str, str]) -> None:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in JSON_CONTENT_TYPES and not media_type.endswith("+json"):
        raise RequestError(415, "unsupported_media_type", "Content-Type must be application/json")


def parse_events(raw: bytes, max_events: int) -> list[Any]:
    """A single event, a JSON array (Webhooks (Actions) batching) or `{"batch": [...]}` (Tracking API)."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested JSON is refused rather than crashing the function.
        raise RequestError(400, "invalid_json", "the body is not valid JSON") from None
    if isinstance(payload, dict) and "batch" in payload:
        payload = payload["batch"]
        if not isinstance(payload, list):
            raise RequestError(400, "invalid_batch", "batch must be a JSON array of events")
    events = payload if isinstance(payload, list) else [payload]
    if not events:
        raise RequestError(400, "empty_batch", "the request holds no events")
    if len(events) > max_events:
        raise RequestError(413, "too_many_events", f"at most {max_events} events per request")
    return events


def normalize_all(events: Sequence[Any], settings: IngestSettings) -> tuple[list[MembershipChange], IngestReport]:
    report = IngestReport()
    changes: list[MembershipChange] = []
    for index, event in enumerate(events):
        outcome = normalize(event, settings.normalize)
        if isinstance(outcome, Skipped):
            report.skipped[outcome.reason] += 1
        elif isinstance(outcome, Rejected):
            report.errors.append(
                {
                    "index": index,
                    "messageId": _message_id(event),
                    "reason": outcome.reason,
                    "field": outcome.field,
                    "message": outcome.message,
                }
            )
        else:
            changes.append(outcome)
            report.queued.append(outcome.message_id)
    return changes, report


def _message_id(event: Any) -> str | None:
    value = event.get("messageId") if isinstance(event, dict) else None
    # Echo the id back only when it is a plausible id, never a large or foreign value.
    return value if isinstance(value, str) and len(value) <= 255 else None
