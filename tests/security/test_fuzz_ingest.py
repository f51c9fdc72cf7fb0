"""Hypothesis drives the ingest endpoint with arbitrary bodies and headers.

Whatever arrives, ingest never raises, never answers 5xx unless the queue really is unavailable, answers
every error with JSON `code` + `message`, and queues only valid membership changes, each from an event
that itself validates, exactly as many as it reports accepted. Most examples run against the ingest core
(`ld_audiences.ingest.handle`) with a recording queue; fewer go through the real Lambda handler and SQS
in moto. Deterministic (`derandomize=True`, no example database) so CI sees the same examples every run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ld_audiences.auth import WebhookCredentials
from ld_audiences.change import MembershipChange
from ld_audiences.config import ContextKeyPolicy, IngestSettings, NormalizeSettings
from ld_audiences.ingest import QueueUnavailable, handle
from ld_audiences.segment_event import SegmentEvent
from tests.security.conftest import IngestStack, api_event, decode_response, error_shape_ok, sqs_safe, validate_queued

CURRENT = "fuzz-current-secret-8d2b"
PREVIOUS = "fuzz-previous-secret-51ce"
SIGNING = "fuzz-signing-key-c0a4"
MAX_BODY = 64_000
MAX_EVENTS = 40
STATUSES = {200, 400, 401, 405, 413, 415}
# When every request "arrives" (API Gateway's requestTimeEpoch), and how far ahead of it an event time may be
# (docs/OPERATIONS.md: "What ingest refuses").
RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ----------------------------------------------------------------------------------------- strategies

EDGE_CHARS = ["\x00", "\u202e", "\u200b", "\ufeff", "\uffff", "\ufffe", "\ud800", "\udfff", "\U0001f680", "\u0301"]
# Any code point, lone surrogates included (the default alphabet leaves them out). A list of one_of keeps
# the edge characters frequent; st.text() would merge them into one uniform range of code points.
any_char = st.one_of(st.characters(exclude_categories=()), st.sampled_from(EDGE_CHARS), st.sampled_from("ab@.: "))
any_text = st.lists(any_char, max_size=12).map("".join)
KNOWN_KEYS = [
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "timestamp",
    "traits",
    "properties",
    "context",
    "personas",
    "computation_key",
    "email",
    "batch",
    "__proto__",
    "constructor",
    "prototype",
]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KNOWN_KEYS) | any_text, children, max_size=4)
    ),
    max_leaves=12,
)


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in ten: each part of a request is right most of the time, so that examples get
    past authentication and content negotiation to the events, yet every part is also often wrong."""
    return draw(st.sampled_from([False] * 9 + [True]))


# Each part of an event: values that are right (edge cases that must still work included), and values
# that are wrong. An event draws the right kind most of the time, so most events reach the queue.
AUDIENCE_KEYS = (
    ["beta_testers", "vip_users", "\U0001f680_fans", "__proto__", "k" * 255],
    ["k" * 256, "", "beta\u202etesters", "vip\nusers"],
)
MEMBERSHIPS: tuple[list[Any], list[Any]] = (
    [True, False, "true", "FALSE"],
    ["MISSING", " true", "yes", 1, None, [], {}],
)
CLASSES = (["audience", "journey_step"], ["trait", "Audience", None])
AUDIENCE_IDS: tuple[list[Any], list[Any]] = (
    ["aud_1", "aud_\U0001f680", "i" * 128, 42, 7.0],
    ["i" * 129, "", "aud\u200b1", "aud_1 ", 4.5],
)
TIMESTAMPS = (
    [
        "2026-11-20T10:00:00.000Z",
        "2026-11-20T10:00:00.123456789Z",
        "2026-11-20T10:00:00+05:30",
        "2026-11-20 10:00:00-0800",
        "0999-01-01T00:00:00Z",
        "2026-11-20T10:00:00.000",
        "2026-11-20T12:04:59.999999Z",
    ],
    [
        "9999-12-31T23:59:59Z",
        "2026-11-20T12:05:00.000001Z",
        "2026-11-20T13:05:01+01:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-02-30T10:00:00Z",
        "2026-11-20T10:00:00+99:99",
        "yesterday",
        "",
        1700000000,
    ],
)
IDS: tuple[list[Any], list[Any]] = (
    ["user-1", "user-2", "jane doe", "user\uffff", "u" * 1024, 12345, 1.0, 2**53 - 1],
    [
        "",
        "u" * 1025,
        "us\ud800er",
        float("inf"),
        float("nan"),
        True,
        None,
        "\u202euser",
        "user\x00",
        " user",
        1.5,
        2**53,
    ],
)
EMAILS: tuple[list[Any], list[Any]] = (
    ["alice@example.com", " bob@example.com ", "c\uffff@example.com"],
    [
        "",
        "al\ud800ce@example.com",
        "x" * 1025 + "@example.com",
        None,
        42,
        "d\u200b@example.com",
        "e\u00a0f@example.com",
    ],
)
MESSAGE_IDS: tuple[list[Any], list[Any]] = (
    ["personas_2kQ1", "personas_2kQ2", "m" * 255, None],
    ["", "m" * 256, 7, "\x1b[2Jpersonas_3", "personas\u202e4", " personas_5"],
)
# Where a mutation may strike an otherwise plausible event.
PATHS = [
    ("type",),
    ("userId",),
    ("anonymousId",),
    ("messageId",),
    ("timestamp",),
    ("originalTimestamp",),
    ("traits",),
    ("properties",),
    ("context",),
    ("context", "personas"),
    ("context", "traits"),
    ("context", "personas", "computation_class"),
    ("context", "personas", "computation_id"),
    ("context", "personas", "computation_key"),
    ("__proto__",),
]


def mostly(draw: st.DrawFn, choices: tuple[list[Any], list[Any]]) -> Any:
    good, bad = choices
    return draw(st.sampled_from(bad if rarely(draw) else good))


@st.composite
def segment_event(draw: st.DrawFn) -> Any:
    """A Segment/Engage-shaped event: each part mostly right (edge cases included), sometimes wrong, then
    sometimes mutations that delete a part or replace it with anything at all."""
    if rarely(draw):
        return draw(json_values)
    audience_key = mostly(draw, AUDIENCE_KEYS)
    membership = mostly(draw, MEMBERSHIPS)
    identify = draw(st.booleans())
    email = mostly(draw, EMAILS)
    event: dict[str, Any] = {
        "type": "identify" if identify else "track",
        "timestamp": mostly(draw, TIMESTAMPS),
        "context": {
            "personas": {
                "computation_class": mostly(draw, CLASSES),
                "computation_id": mostly(draw, AUDIENCE_IDS),
                "computation_key": audience_key,
            }
        },
    }
    for name, choices in (("userId", IDS), ("anonymousId", IDS), ("messageId", MESSAGE_IDS)):
        value = mostly(draw, choices)
        if value is not None:
            event[name] = value
    flags = {} if membership == "MISSING" else {audience_key: membership}
    if identify:
        event["traits"] = {**flags, **({} if email is None else {"email": email})}
    else:
        event["properties"] = {**flags, "audience_key": audience_key}
        if email is not None:
            event["context"]["traits"] = {"email": email}
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 3]))):
        *parents, name = draw(st.sampled_from(PATHS))
        target: Any = event
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if draw(st.booleans()):
                target.pop(name, None)
            else:
                target[name] = draw(json_values)
    return event


@st.composite
def structured_body(draw: st.DrawFn) -> tuple[str, list[Any] | None]:
    """Segment-shaped JSON: one event, an array, or `{"batch": [...]}`; with the events it holds."""
    events = draw(st.lists(segment_event(), min_size=1, max_size=6))
    shape = draw(st.sampled_from(["single", "array", "batch"]))
    payload: Any = events[0] if shape == "single" else events if shape == "array" else {"batch": events}
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()))
    return text, parsed_events(text)


def parsed_events(text: str) -> list[Any] | None:
    """The events ingest sees in `text`, by the rule docs/DESIGN.md states (None if it holds no list of events)."""
    payload = json.loads(text)
    if isinstance(payload, dict) and "batch" in payload:
        payload = payload["batch"]
        if not isinstance(payload, list):
            return None
    return payload if isinstance(payload, list) else [payload]


nesting = st.builds(
    lambda n, brackets, balanced: brackets[0] * n + brackets[1] * (n if balanced else n // 2),
    st.integers(1, 6000),
    st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]),
    st.booleans(),
)
huge_numbers = st.sampled_from(["NaN", "-Infinity", "1e400", "-0", "1" * 5000, "0." + "0" * 5000 + "1"]) | st.builds(
    lambda digits: json.dumps({"userId": 0})[:-2] + digits + "}", st.text("0123456789", min_size=1, max_size=5000)
)
other_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    any_text,
    nesting,
    huge_numbers,
    st.sampled_from(
        [
            "",
            " ",
            "[]",
            "{}",
            '{"batch": {}}',
            '{"batch": []}',
            "[" * 100_000,
            "[" + " " * 70_000 + "]",
            json.dumps([{}] * (MAX_EVENTS + 1)),
        ]
    ),
)


@dataclass
class Request:
    method: str
    headers: dict[str, str]
    body: str | None
    is_base64: bool
    events: list[Any] | None  # the events a structured body holds, for the oracle
    signing: bool


@st.composite
def requests(draw: st.DrawFn, *, signing: bool | None = None) -> Request:
    events: list[Any] | None = None
    kind = draw(st.sampled_from(["structured"] * 7 + ["bytes", "other", "other"]))
    if kind == "structured":
        text, events = draw(structured_body())
        raw: bytes | None = text.encode("utf-8", "surrogatepass")
    elif kind == "bytes":
        raw = draw(st.binary(max_size=300))
    else:
        raw = draw(st.none() | other_bodies.map(lambda t: t.encode("utf-8", "surrogatepass")))

    headers: dict[str, str] = {}
    encoding = draw(st.sampled_from(["none"] * 6 + ["gzip", "gzip", "gzip-undeclared", "declared-only", "random"]))
    if raw is not None and encoding in ("gzip", "gzip-undeclared"):
        raw = gzip.compress(raw, mtime=0)
    if encoding in ("gzip", "declared-only"):
        headers["content-encoding"] = draw(st.sampled_from(["gzip", "GZIP", " gzip "]))
    elif encoding == "random":
        headers["content-encoding"] = draw(any_text | st.sampled_from(["br", "deflate", "identity", ""]))

    binary = kind == "bytes" or encoding in ("gzip", "gzip-undeclared")
    as_base64 = binary or rarely(draw)
    if raw is None:
        body = None
    elif as_base64:
        body = base64.b64encode(raw).decode()
    else:
        body = raw.decode("utf-8", "surrogatepass")
    is_base64 = not as_base64 if rarely(draw) else as_base64  # sometimes API Gateway's flag lies

    basic = base64.b64encode(f"{CURRENT}:".encode()).decode()
    if rarely(draw):
        authorization = draw(
            st.sampled_from(
                ["", f"Bearer {CURRENT}x", CURRENT, f"Basic {base64.b64encode(f':{CURRENT}'.encode()).decode()}"]
            )
            | any_text
            | any_text.map(lambda t: f"Bearer {t}")
            | any_text.map(lambda t: f"Basic {t}")
            | st.binary(max_size=20).map(lambda b: f"Basic {base64.b64encode(b).decode()}")
        )
    else:
        authorization = draw(st.sampled_from([f"Bearer {CURRENT}", f"Basic {basic}", f"bearer {PREVIOUS}"]))
    if authorization:
        headers["authorization"] = authorization
    if rarely(draw):
        content_type = draw(st.sampled_from(["", "text/plain", "application/jsonp", "multipart/form-data"]) | any_text)
    else:
        content_type = draw(
            st.sampled_from(
                ["application/json", "application/json; charset=utf-8", "text/json", "application/vnd.segment+json"]
            )
        )
    if content_type:
        headers["content-type"] = content_type

    signing = draw(st.booleans()) if signing is None else signing
    expected = hmac.new(SIGNING.encode(), raw or b"", hashlib.sha1).hexdigest()
    if rarely(draw):
        signature = draw(st.sampled_from(["", "0" * 40, expected[:-1], f"sha1={expected}"]) | any_text)
    else:
        signature = draw(st.sampled_from([expected, expected.upper()]))
    if signature:
        headers["x-signature"] = signature
    if rarely(draw):
        headers.update(draw(st.dictionaries(any_text.map(str.lower), any_text, max_size=2)))
    method = (
        draw(st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "post"])) if rarely(draw) else "POST"
    )
    return Request(method, headers, body, is_base64, events, signing)


# ----------------------------------------------------------------------------------------- the core


@dataclass
class RecordingQueue:
    fail: bool = False
    sent: list[MembershipChange] = field(default_factory=list)

    def send(self, changes: Sequence[MembershipChange]) -> None:
        if self.fail and changes:  # the real queue makes no call for nothing
            raise QueueUnavailable("down")
        self.sent.extend(changes)


SOURCES = {
    ContextKeyPolicy.USER_ID_ONLY: ("userId",),
    ContextKeyPolicy.USER_ID_THEN_EMAIL: ("userId", "email"),
    ContextKeyPolicy.USER_ID_THEN_ANONYMOUS_ID: ("userId", "anonymousId"),
    ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID: ("userId", "email", "anonymousId"),
    ContextKeyPolicy.EMAIL_ONLY: ("email",),
}


def expected_key(raw: dict[str, Any], event: SegmentEvent, policy: ContextKeyPolicy) -> str | None:
    """The context key docs/DESIGN.md's policy picks, worked out independently of `normalize`."""
    for source in SOURCES[policy]:
        if source == "email":
            for traits in (raw.get("traits"), (raw.get("context") or {}).get("traits")):
                email = traits.get("email") if isinstance(traits, dict) else None
                if isinstance(email, str) and email.strip():
                    return email.strip()
        else:
            sent = raw.get(source)
            if isinstance(sent, float) and not math.isfinite(sent):
                return "<NaN or infinity is no context key>"  # never equal to a queued key
            value = getattr(event, source)
            if value:
                return str(value)
    return None


def expected_membership(raw: dict[str, Any], event: SegmentEvent, audience_key: str) -> bool | None:
    values = raw.get("traits") if event.type == "identify" else raw.get("properties")
    value = values.get(audience_key) if isinstance(values, dict) else None
    if value is None:  # a journey step without a flag means the context entered the step
        personas = event.context.personas if event.context else None
        return True if personas is not None and personas.computation_class == "journey_step" else None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def invisible(value: str) -> bool:
    """docs/OPERATIONS.md's rule, worked out independently of `limits.key_defect`: no control, format or separator
    character, no space but U+0020, and none of those at either end."""
    refused = any(
        unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") or (unicodedata.category(c) == "Zs" and c != " ")
        for c in value
    )
    return refused or value != value.strip(" ")


def too_far_ahead(event: SegmentEvent) -> bool:
    """The event's time (timestamp, else originalTimestamp, else receivedAt) is beyond RECEIVED + SKEW."""
    for name in ("timestamp", "originalTimestamp", "receivedAt"):
        value = getattr(event, name)
        if value:
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                return False  # no timestamp at all: rejected for that
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) > RECEIVED + SKEW
    return False


def check_against_events(
    events: list[Any], body: dict[str, Any], changes: Sequence[MembershipChange], policy: ContextKeyPolicy
) -> None:
    """Each queued change comes from an event that validates, is an audience event, was not reported
    rejected, and carries what that event says; the counts add up."""
    rejected = {e["index"] for e in body["errors"]}
    assert all(0 <= i < len(events) for i in rejected)
    expected, skipped = [], 0
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            assert index in rejected
            continue
        try:
            event = SegmentEvent.model_validate(raw)
        except ValueError:
            assert index in rejected, f"event {index} does not validate but was not rejected"
            continue
        personas = event.context.personas if event.context else None
        if personas is None or personas.computation_class not in ("audience", "journey_step"):
            assert index not in rejected
            skipped += 1
            continue
        context_key = expected_key(raw, event, policy)
        identifiers = (personas.computation_key, personas.computation_id, context_key, event.messageId)
        if any(value and invisible(value) for value in identifiers) or too_far_ahead(event):
            assert index in rejected, f"event {index} has an invisible character or a future time"
        if index not in rejected:
            key = personas.computation_key or ""
            expected.append(
                (
                    personas.computation_id,
                    key,
                    context_key,
                    expected_membership(raw, event, key),
                    event.messageId or None,
                )
            )
    assert body["skipped"] == skipped
    assert body["accepted"] + body["skipped"] + body["rejected"] == len(events)
    assert body["accepted"] == len(expected) == len(changes)

    def fields(change: MembershipChange) -> tuple[Any, ...]:
        derived = change.message_id.startswith("sha256_")  # the fallback id of an event without messageId
        return (
            change.audience_id,
            change.audience_key,
            change.context_key,
            change.included,
            None if derived else change.message_id,
        )

    assert sorted(map(repr, map(fields, changes))) == sorted(map(repr, expected))


def check_change(change: MembershipChange) -> None:
    identifiers = (change.context_key, change.audience_key, change.audience_id, change.message_id)
    assert not any(invisible(value) for value in identifiers)
    assert datetime.fromisoformat(change.event_time[:26] + "Z") <= RECEIVED + SKEW
    assert MembershipChange.model_validate(change.model_dump()) == change
    message = change.to_message()
    assert sqs_safe(message) and len(message.encode()) < 256 * 1024
    assert MembershipChange.from_message(message) == change


@settings(FUZZ, max_examples=800)
@given(
    request=requests(),
    policy=st.sampled_from(list(ContextKeyPolicy)),
    queue_down=st.sampled_from([False] * 5 + [True]),
)
def test_ingest_core_survives_anything(request: Request, policy: ContextKeyPolicy, queue_down: bool) -> None:
    ingest_settings = IngestSettings(
        queue_url="q",
        webhook_secret_id="w",
        normalize=NormalizeSettings(policy=policy),
        max_body_bytes=MAX_BODY,
        max_events=MAX_EVENTS,
    )
    secret = {"current": CURRENT, "previous": PREVIOUS, **({"signing": SIGNING} if request.signing else {})}
    queue = RecordingQueue(fail=queue_down)
    response, report = handle(
        method=request.method,
        headers=request.headers,
        body=request.body,
        is_base64=request.is_base64,
        settings=ingest_settings,
        credentials=lambda: WebhookCredentials.from_secret(json.dumps(secret)),
        queue=queue,
        received_at=RECEIVED,
    )
    json.dumps(response.body)  # what the Lambda handler sends must serialize
    hypothesis.event(f"status {response.status} {response.body.get('code', '')}")
    hypothesis.event("some change queued" if queue.sent else "nothing queued")
    assert error_shape_ok(response.status, response.body), response
    if response.status >= 500:
        assert (response.status, response.body["code"], queue_down) == (503, "queue_unavailable", True)
        assert report is not None and report.accepted > 0
        return
    assert response.status in STATUSES, response
    for change in queue.sent:
        check_change(change)
    if report is None:
        assert queue.sent == []
        return
    assert response.body["accepted"] == report.accepted == len(queue.sent)
    if request.events is not None:
        check_against_events(request.events, response.body, queue.sent, policy)


# ----------------------------------------------------------------------------------------- the real handler


@pytest.fixture(scope="module")
def fuzz_stack(ingest_stack: IngestStack) -> IngestStack:
    secret = ingest_stack.secret(json.dumps({"current": CURRENT, "previous": PREVIOUS, "signing": SIGNING}))
    ingest_stack.base_env = {
        "WEBHOOK_SECRET_ARN": secret,
        "MAX_BODY_BYTES": str(MAX_BODY),
        "MAX_EVENTS_PER_REQUEST": str(MAX_EVENTS),
        "CONTEXT_KEY_POLICY": ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID.value,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    return ingest_stack


def header_case(name: str, style: int) -> str:
    return (name, name.title(), name.upper())[style % 3]


@settings(FUZZ, max_examples=150)
@given(request=requests(signing=True), style=st.integers(0, 2))
def test_real_handler_survives_anything(fuzz_stack: IngestStack, request: Request, style: int) -> None:
    handler = fuzz_stack.handler({})
    headers = {header_case(name, style): value for name, value in request.headers.items()}
    method = request.method.upper()  # API Gateway hands over the method upper-case
    event = api_event(body=request.body, headers=headers, is_base64=request.is_base64, method=method, received=RECEIVED)

    status, body = decode_response(fuzz_stack.call(handler, event))

    queued = validate_queued(fuzz_stack.drain())
    for change in queued:
        check_change(change)
    hypothesis.event(f"status {status} {body.get('code', '')}")
    hypothesis.event("some change queued" if queued else "nothing queued")
    assert status in STATUSES, body  # the queue is up: no 5xx
    assert error_shape_ok(status, body), body
    assert len(queued) == (body.get("accepted") or 0)
    if request.events is not None and "errors" in body:
        check_against_events(request.events, body, queued, ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID)


def test_nesting_just_below_the_parser_limit_never_crashes(fuzz_stack: IngestStack) -> None:
    """JSON nested as deep as the parser allows at the handler's stack depth is answered, not a crash: the
    event without messageId gets hashed for a fallback id, which needs more stack than parsing did."""
    handler = fuzz_stack.handler({})
    template = '{"type":"track","userId":"u","timestamp":"2026-11-20T10:00:00Z","properties":{"k":true,"deep":%s},'
    template += '"context":{"personas":{"computation_class":"audience","computation_id":"a","computation_key":"k"}}}'

    def answer(depth: int) -> tuple[int, Any]:
        raw = (template % ("[" * depth + "]" * depth)).encode()
        headers = {
            "Authorization": f"Bearer {CURRENT}",
            "Content-Type": "application/json",
            "X-Signature": hmac.new(SIGNING.encode(), raw, hashlib.sha1).hexdigest(),
        }
        return decode_response(fuzz_stack.call(handler, api_event(body=raw.decode(), headers=headers)))

    low, high = 1, 5000  # parses at `low`, not at `high`
    assert answer(low)[0] == 200 and answer(high)[1]["code"] == "invalid_json"
    while high - low > 1:
        middle = (low + high) // 2
        status, body = answer(middle)
        assert error_shape_ok(status, body) and status in (200, 400), body
        if status == 400 and body.get("code") == "invalid_json":
            high = middle
        else:
            low = middle
    for depth in range(max(1, low - 3), low + 1):  # the deepest the parser accepts, and just below
        status, body = answer(depth)
        assert status in (200, 400) and error_shape_ok(status, body), body
    fuzz_stack.drain()
