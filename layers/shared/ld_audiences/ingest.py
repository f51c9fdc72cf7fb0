"""The ingest decision, free of Lambda and AWS: authenticate, decode, validate, normalize, enqueue, answer.

Answers follow what Segment's senders understand (docs/DESIGN.md): 200 once the valid events are queued,
4xx only when the request is wrong as a whole (they are not retried), 503 when the queue is
unavailable (retried for up to four hours). Every error body has `code` and `message`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ld_audiences.auth import WebhookCredentials, is_authorized, signature_valid
from ld_audiences.change import MembershipChange
from ld_audiences.config import IngestSettings, NormalizeSettings
from ld_audiences.limits import MAX_LISTED_ERRORS
from ld_audiences.normalize import Rejected, Skipped, normalize

JSON_CONTENT_TYPES = ("application/json", "text/json")
# Content-Encoding values ingest reads; "" is a header present but empty.
IDENTITY_ENCODINGS = ("identity", "")
GZIP_MAGIC = b"\x1f\x8b"


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
    received_at: datetime,
    query: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Response, IngestReport | None]:
    """One HTTP request in, one answer out. `headers` must have lower-case names; `query` holds every value
    of each query parameter; `received_at` is when the request arrived (event times are checked against it)."""
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
        rules = dataclasses.replace(settings.normalize, context_kind=context_kind(query or {}, settings))
        check_content_type(headers)
        events = parse_events(decompress(raw, headers, settings.max_body_bytes), settings.max_events)
    except RequestError as exc:
        return error(exc.status, exc.code, exc.message), None

    changes, report = normalize_all(events, rules, received_at)
    try:
        queue.send(changes)
    except QueueUnavailable:
        return error(503, "queue_unavailable", "could not queue the events; retry later"), report

    if report.errors and not report.accepted and not report.skipped:
        return Response(
            400, {"code": "all_events_rejected", "message": "no event was valid", **report.as_body()}
        ), report
    return Response(200, report.as_body()), report


def context_kind(query: Mapping[str, Sequence[str]], settings: IngestSettings) -> str:
    """The LaunchDarkly context kind of this request's changes: `?context_kind=`, if the deployment allows
    it, else the default kind. One deployment can so serve a Segment subscription per context kind."""
    values = query.get("context_kind")
    if values is None:
        return settings.normalize.context_kind
    allowed = ", ".join(sorted(settings.context_kinds))
    # The value itself is never echoed: error bodies repeat nothing the caller sent.
    if len(values) != 1:
        raise RequestError(400, "context_kind_not_allowed", f"give context_kind once, one of: {allowed}")
    if values[0] not in settings.context_kinds:
        raise RequestError(400, "context_kind_not_allowed", f"context_kind must be one of: {allowed}")
    return values[0]


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
    if encoding in IDENTITY_ENCODINGS:
        return raw
    if encoding != "gzip":
        # The header's value is not repeated: error bodies echo nothing the caller sent.
        raise RequestError(415, "unsupported_encoding", "Content-Encoding must be gzip or identity")
    # API Gateway inflates a gzip body itself (MinimumCompressionSize) and passes the header on: only a body
    # that is still gzip is inflated here (JSON never starts with these bytes).
    if not raw.startswith(GZIP_MAGIC):
        return raw
    return _gunzip(raw, max_bytes)


def _gunzip(raw: bytes, max_bytes: int) -> bytes:
    """Exactly one complete gzip member: what a sender compressed is all that is read, or nothing is."""
    # Bounded inflate: a small gzip bomb must not expand past the body limit.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # zlib checks the trailer's CRC-32 and length when it reaches them.
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error:
        raise RequestError(400, "invalid_body", "the body is not valid gzip, or its CRC or length is wrong") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise RequestError(413, "body_too_large", f"the decompressed body is larger than {max_bytes} bytes")
    if not inflater.eof:
        raise RequestError(400, "invalid_body", "the gzip body is truncated: its trailer (CRC and length) is missing")
    if inflater.unused_data:
        # A second member or trailing bytes: gzip.decompress would read (or choke on) them, many servers
        # would drop them silently; either way sender and receiver would disagree on what was sent.
        raise RequestError(400, "invalid_body", "the gzip body holds more than one member or trailing bytes")
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


def normalize_all(
    events: Sequence[Any], rules: NormalizeSettings, received_at: datetime
) -> tuple[list[MembershipChange], IngestReport]:
    report = IngestReport()
    changes: list[MembershipChange] = []
    for index, event in enumerate(events):
        outcome = normalize(event, rules, received_at)
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
