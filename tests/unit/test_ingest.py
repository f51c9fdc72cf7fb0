"""The ingest decision: request shapes, authentication, limits, and the answers Segment's senders get."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ld_audiences.auth import WebhookCredentials
from ld_audiences.change import MembershipChange
from ld_audiences.config import ConfigError, IngestSettings, NormalizeSettings
from ld_audiences.ingest import QueueUnavailable, Response, handle
from ld_audiences.limits import MAX_EVENTS_PER_REQUEST, MAX_LISTED_ERRORS
from tests.segment_events import engage_event

SECRET = "s3cret-webhook"
# After every event time engage_event() gives by default.
RECEIVED_AT = datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)
SETTINGS = IngestSettings(
    queue_url="q", webhook_secret_id="w", normalize=NormalizeSettings(), max_body_bytes=64_000, max_events=50
)


class RecordingQueue:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[MembershipChange] = []
        self.fail = fail

    def send(self, changes: Sequence[MembershipChange]) -> None:
        if self.fail:
            raise QueueUnavailable("down")
        self.sent.extend(changes)


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}", "content-type": "application/json"}


def basic(user: str = SECRET, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


def post(
    payload: Any = None,
    *,
    headers: dict[str, str] | None = None,
    body: str | None = None,
    is_base64: bool = False,
    queue: RecordingQueue | None = None,
    secret: str = SECRET,
    method: str = "POST",
    query: dict[str, list[str]] | None = None,
) -> tuple[Response, RecordingQueue]:
    queue = queue or RecordingQueue()
    response, _ = handle(
        method=method,
        headers=bearer() if headers is None else headers,
        body=json.dumps(payload) if body is None else body,
        is_base64=is_base64,
        settings=SETTINGS,
        credentials=lambda: WebhookCredentials.from_secret(secret),
        queue=queue,
        received_at=RECEIVED_AT,
        query=query,
    )
    return response, queue


@pytest.mark.parametrize(
    "shape, count",
    [
        (lambda events: events[0], 1),
        (lambda events: events, 3),
        (lambda events: {"batch": events, "writeKey": SECRET, "sentAt": "2026-11-20T10:00:00Z"}, 3),
    ],
    ids=["single", "array", "tracking-api-batch"],
)
def test_all_three_request_shapes_are_accepted(shape: Any, count: int) -> None:
    events = [engage_event(user_id=f"u{i}") for i in range(3)]
    response, queue = post(shape(events))
    assert response.status == 200
    assert response.body["accepted"] == count == len(queue.sent)
    assert [c.context_key for c in queue.sent] == [f"u{i}" for i in range(count)]


def test_basic_auth_with_the_secret_as_user_name_is_accepted() -> None:
    assert post(engage_event(), headers=basic())[0].status == 200
    assert post(engage_event(), headers=basic(password="ignored"))[0].status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"authorization": "Bearer wrong", "content-type": "application/json"},
        {"authorization": SECRET, "content-type": "application/json"},
        basic(user="wrong"),
        basic(user="", password=SECRET),
        {"authorization": "Basic !!notbase64", "content-type": "application/json"},
        {"authorization": "Bearer ", "content-type": "application/json"},
    ],
    ids=["missing", "wrong-bearer", "bare", "wrong-basic", "secret-as-password", "bad-base64", "empty"],
)
def test_missing_or_wrong_credentials_get_401_and_queue_nothing(headers: dict[str, str]) -> None:
    response, queue = post(engage_event(), headers=headers)
    assert (response.status, response.body["code"]) == (401, "unauthorized")
    assert queue.sent == []


def test_auth_is_decided_before_the_body_is_parsed() -> None:
    response, _ = post(body="{not json", headers={"authorization": "Bearer wrong", "content-type": "application/json"})
    assert response.status == 401


def test_two_secrets_are_accepted_while_rotating() -> None:
    rotating = json.dumps({"current": "new-secret", "previous": "old-secret"})
    for secret in ("new-secret", "old-secret"):
        assert post(engage_event(), headers=bearer(secret), secret=rotating)[0].status == 200
    assert post(engage_event(), headers=bearer("older-secret"), secret=rotating)[0].status == 401


def test_signature_is_required_when_a_signing_key_is_configured() -> None:
    secret = json.dumps({"current": SECRET, "signing": "sign-key"})
    body = json.dumps(engage_event())
    signature = hmac.new(b"sign-key", body.encode(), hashlib.sha1).hexdigest()
    assert post(body=body, headers={**bearer(), "x-signature": signature}, secret=secret)[0].status == 200
    wrong_digit = signature[:-1] + ("1" if signature[-1] == "0" else "0")  # a different signature, always
    for bad in ("", "0" * 40, wrong_digit, wrong_digit.upper()):
        response, queue = post(body=body, headers={**bearer(), "x-signature": bad}, secret=secret)
        assert (response.status, response.body["code"], queue.sent) == (401, "invalid_signature", [])
    # A captured signature replayed with an altered body fails.
    altered = body.replace("user-1", "attacker")
    assert post(body=altered, headers={**bearer(), "x-signature": signature}, secret=secret)[0].status == 401


def test_gzip_bodies_are_decompressed() -> None:
    payload = gzip.compress(json.dumps([engage_event(), engage_event(user_id="u2")]).encode())
    response, queue = post(
        body=base64.b64encode(payload).decode(), is_base64=True, headers={**bearer(), "content-encoding": "gzip"}
    )
    assert response.status == 200 and len(queue.sent) == 2


def test_bodies_api_gateway_already_inflated_are_read_as_they_are() -> None:
    """API Gateway inflates a gzip body itself and passes Content-Encoding on with it."""
    response, queue = post([engage_event()], headers={**bearer(), "content-encoding": "gzip"})
    assert (response.status, len(queue.sent)) == (200, 1)


def test_other_content_codings_get_415() -> None:
    response, queue = post([engage_event()], headers={**bearer(), "content-encoding": "br"})
    assert (response.status, response.body["code"], queue.sent) == (415, "unsupported_encoding", [])


def test_gzip_bombs_stop_at_the_body_limit() -> None:
    bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")
    response, _ = post(
        body=base64.b64encode(bomb).decode(), is_base64=True, headers={**bearer(), "content-encoding": "gzip"}
    )
    assert (response.status, response.body["code"]) == (413, "body_too_large")


def test_mixed_requests_queue_the_valid_events_and_name_the_bad_ones() -> None:
    bad = engage_event(value="maybe", message_id="personas_bad")
    skipped = engage_event(computation_class="trait")
    response, queue = post([engage_event(user_id="a"), bad, skipped, engage_event(user_id="b")])
    assert response.status == 200
    assert {k: response.body[k] for k in ("accepted", "skipped", "rejected")} == {
        "accepted": 2,
        "skipped": 1,
        "rejected": 1,
    }
    assert [c.context_key for c in queue.sent] == ["a", "b"]
    assert response.body["errors"] == [
        {
            "index": 1,
            "messageId": "personas_bad",
            "reason": "membership_not_boolean",
            "field": "properties.beta_testers",
            "message": "properties.beta_testers must be true or false",
        }
    ]
    assert response.body["skipped_reasons"] == {"computation_class_not_synced": 1}


def test_the_error_list_is_capped_and_says_how_many_it_left_out() -> None:
    events = [engage_event(value="maybe", message_id=f"personas_bad_{i}") for i in range(MAX_LISTED_ERRORS + 7)]
    response, queue = handle_events([engage_event(user_id="ok"), *events])
    assert (response.status, response.body["accepted"], response.body["rejected"]) == (200, 1, len(events))
    assert [e["messageId"] for e in response.body["errors"]] == [e["messageId"] for e in events[:MAX_LISTED_ERRORS]]
    assert response.body["errors_omitted"] == 7
    assert len(queue.sent) == 1


def test_the_answer_fits_lambdas_response_limit_whatever_is_rejected() -> None:
    """The most events a request may hold, every one rejected with the longest id and audience key the models
    allow, made of characters JSON escapes (12 bytes each): the proxy result Lambda serializes stays under
    its 6 MB response limit (without the cap it is over 100 MB)."""
    longest = "\N{MUSICAL SYMBOL G CLEF}" * 255
    event = engage_event(audience_key=longest, value="maybe", message_id=longest)
    response, _ = handle_events([event] * MAX_EVENTS_PER_REQUEST)
    assert response.body["rejected"] == MAX_EVENTS_PER_REQUEST
    # What the Lambda handler returns (Powertools' proxy result) and the runtime serializes.
    result = {"statusCode": response.status, "body": json.dumps(response.body), "isBase64Encoded": False}
    assert len(json.dumps(result).encode()) < 6 * 1024 * 1024 + 100


def handle_events(events: list[Any]) -> tuple[Response, RecordingQueue]:
    """`post` without SETTINGS' small limits."""
    queue = RecordingQueue()
    settings = IngestSettings(
        queue_url="q", webhook_secret_id="w", normalize=NormalizeSettings(), max_body_bytes=10**9, max_events=10**6
    )
    response, _ = handle(
        method="POST",
        headers=bearer(),
        body=json.dumps(events),
        is_base64=False,
        settings=settings,
        credentials=lambda: WebhookCredentials.from_secret(SECRET),
        queue=queue,
        received_at=RECEIVED_AT,
    )
    return response, queue


def test_all_events_invalid_is_a_400_with_the_same_details() -> None:
    response, queue = post([engage_event(value=3), engage_event(user_id=None)])
    assert response.status == 400
    assert response.body["code"] == "all_events_rejected" and response.body["message"]
    assert [e["reason"] for e in response.body["errors"]] == ["membership_not_boolean", "missing_context_key"]
    assert queue.sent == []


def test_only_skipped_events_is_a_200() -> None:
    response, queue = post([{"type": "track", "event": "Order Completed", "userId": "u"}])
    assert (response.status, response.body["skipped"], queue.sent) == (200, 1, [])


@pytest.mark.parametrize(
    "body, status, code",
    [
        ("{not json", 400, "invalid_json"),
        ("[]", 400, "empty_batch"),
        ('{"batch": {}}', 400, "invalid_batch"),
        ("[" * 100_000 + "]" * 100_000, 413, "body_too_large"),
        ("[" * 20_000 + "]" * 20_000, 400, "invalid_json"),
        ("", 400, "empty_body"),
        (json.dumps([engage_event()] * 51), 413, "too_many_events"),
    ],
    ids=["malformed", "empty-array", "batch-not-array", "too-large", "deeply-nested", "empty", "too-many"],
)
def test_requests_wrong_as_a_whole(body: str, status: int, code: str) -> None:
    response, queue = post(body=body)
    assert (response.status, response.body["code"]) == (status, code)
    assert response.body["message"] and queue.sent == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_content_types_get_415(content_type: str) -> None:
    response, _ = post(engage_event(), headers={**bearer(), "content-type": content_type})
    assert (response.status, response.body["code"]) == (415, "unsupported_media_type")


def test_json_content_type_with_charset_is_fine() -> None:
    assert (
        post(engage_event(), headers={**bearer(), "content-type": "application/json; charset=utf-8"})[0].status == 200
    )


def test_only_post_is_allowed() -> None:
    assert post(engage_event(), method="GET")[0].status == 405


def test_queue_unavailable_is_a_503_so_segment_retries() -> None:
    response, _ = post(engage_event(), queue=RecordingQueue(fail=True))
    assert (response.status, response.body["code"]) == (503, "queue_unavailable")


# ------------------------------------------------------------------------------ gzip, read exactly


def gzip_post(raw: bytes, **headers: str) -> tuple[Response, RecordingQueue]:
    return post(
        body=base64.b64encode(raw).decode(),
        is_base64=True,
        headers={**bearer(), "content-encoding": "gzip", **headers},
    )


GZIPPED = gzip.compress(json.dumps([engage_event(user_id="first")]).encode(), mtime=0)
SECOND = gzip.compress(json.dumps([engage_event(user_id="second")]).encode(), mtime=0)


def with_trailer(body: bytes, *, crc: int | None = None, size: int | None = None) -> bytes:
    """`body` (one gzip member) with its CRC-32 or ISIZE trailer field replaced."""
    old_crc, old_size = int.from_bytes(body[-8:-4], "little"), int.from_bytes(body[-4:], "little")
    new_crc = old_crc if crc is None else crc
    new_size = old_size if size is None else size
    return body[:-8] + new_crc.to_bytes(4, "little") + new_size.to_bytes(4, "little")


@pytest.mark.parametrize(
    "raw, message",
    [
        (GZIPPED + SECOND, "more than one member"),
        (GZIPPED + b"garbage", "trailing bytes"),
        (GZIPPED + b"\x00" * 8, "trailing bytes"),
        (GZIPPED[:-8], "truncated"),
        (GZIPPED[:-3], "truncated"),
        (with_trailer(GZIPPED, crc=0), "CRC or length"),
        (with_trailer(GZIPPED, size=1), "CRC or length"),
    ],
    ids=[
        "second-member",
        "trailing-garbage",
        "trailing-zeros",
        "no-trailer",
        "half-trailer",
        "wrong-crc",
        "wrong-isize",
    ],
)
def test_gzip_bodies_are_read_exactly_or_refused(raw: bytes, message: str) -> None:
    assert gzip_post(GZIPPED)[0].status == 200  # the same body, sent as it was compressed
    response, queue = gzip_post(raw)
    assert (response.status, response.body["code"], queue.sent) == (400, "invalid_body", [])
    assert message in response.body["message"]


@pytest.mark.parametrize("encoding", ["br", "deflate", "x-gzip", "gzip, identity", "compress", "<b>zstd</b>"])
def test_only_gzip_and_identity_encodings_are_read(encoding: str) -> None:
    response, queue = post(engage_event(), headers={**bearer(), "content-encoding": encoding})
    assert (response.status, response.body["code"], queue.sent) == (415, "unsupported_encoding", [])
    assert response.body["message"] == "Content-Encoding must be gzip or identity"  # the value is not echoed
    for accepted in ("identity", "IDENTITY", ""):
        assert post(engage_event(), headers={**bearer(), "content-encoding": accepted})[0].status == 200


# ------------------------------------------------------------------------------ event times


def test_an_event_stamped_in_the_future_is_refused_and_its_neighbours_are_queued() -> None:
    future = (RECEIVED_AT + timedelta(minutes=5, seconds=1)).isoformat()
    response, queue = post([engage_event(user_id="a"), engage_event(user_id="b", timestamp=future)])
    assert response.status == 200
    assert [c.context_key for c in queue.sent] == ["a"]
    assert [(e["index"], e["reason"], e["field"]) for e in response.body["errors"]] == [
        (1, "timestamp_in_future", "timestamp")
    ]


# ------------------------------------------------------------------------------ context kind per request

ACCOUNT_SETTINGS = dataclasses.replace(SETTINGS, other_context_kinds=frozenset({"account"}))


def test_a_request_may_choose_an_allowed_context_kind() -> None:
    queue = RecordingQueue()
    response, _ = handle(
        method="POST",
        headers=bearer(),
        body=json.dumps([engage_event(user_id="acme")]),
        is_base64=False,
        settings=ACCOUNT_SETTINGS,
        credentials=lambda: WebhookCredentials.from_secret(SECRET),
        queue=queue,
        received_at=RECEIVED_AT,
        query={"context_kind": ["account"], "unrelated": ["x"]},
    )
    assert response.status == 200
    assert [(c.context_kind, c.context_key) for c in queue.sent] == [("account", "acme")]


@pytest.mark.parametrize(
    "query, kind", [(None, "user"), ({}, "user"), ({"context_kind": ["user"]}, "user"), ({"other": ["a"]}, "user")]
)
def test_without_the_parameter_the_default_kind_is_used(query: dict[str, list[str]] | None, kind: str) -> None:
    response, queue = post(engage_event(), query=query)
    assert response.status == 200 and [c.context_kind for c in queue.sent] == [kind]


@pytest.mark.parametrize(
    "values",
    [["account"], ["Account"], [""], ["user", "user"], ["user", "account"], ["multi"], ["us\x00er"]],
    ids=["not-allowed", "case", "empty", "twice", "two-kinds", "reserved", "nul"],
)
def test_context_kinds_not_allowed_get_400_and_queue_nothing(values: list[str]) -> None:
    response, queue = post(engage_event(), query={"context_kind": values})
    assert (response.status, response.body["code"], queue.sent) == (400, "context_kind_not_allowed", [])
    # A fixed text naming the allowed kinds: the request's value is not echoed.
    assert response.body["message"] in ("context_kind must be one of: user", "give context_kind once, one of: user")


def test_the_context_kind_is_checked_after_authentication() -> None:
    response, _ = post(engage_event(), headers=bearer("wrong"), query={"context_kind": ["account"]})
    assert response.status == 401


def test_allowed_context_kinds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_URL", "q")
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", "w")
    monkeypatch.setenv("DEFAULT_CONTEXT_KIND", "user")
    monkeypatch.setenv("ALLOWED_CONTEXT_KINDS", " account , device.v2,")
    assert IngestSettings.from_env().context_kinds == {"user", "account", "device.v2"}
    monkeypatch.delenv("ALLOWED_CONTEXT_KINDS")
    assert IngestSettings.from_env().context_kinds == {"user"}  # the default kind only


@pytest.mark.parametrize(
    "name, value",
    [
        ("ALLOWED_CONTEXT_KINDS", "account,multi"),
        ("ALLOWED_CONTEXT_KINDS", "acc ount"),
        ("ALLOWED_CONTEXT_KINDS", "k" * 65),
        ("DEFAULT_CONTEXT_KIND", "kind"),
        ("DEFAULT_CONTEXT_KIND", "usér"),
    ],
)
def test_context_kinds_launchdarkly_would_refuse_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("QUEUE_URL", "q")
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", "w")
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        IngestSettings.from_env()
