"""The ingest decision: request shapes, authentication, limits, and the answers Segment's senders get."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import zlib
from collections.abc import Sequence
from typing import Any

import pytest

from ld_audiences.auth import WebhookCredentials
from ld_audiences.change import MembershipChange
from ld_audiences.config import IngestSettings, NormalizeSettings
from ld_audiences.ingest import QueueUnavailable, Response, handle
from ld_audiences.limits import MAX_EVENTS_PER_REQUEST, MAX_LISTED_ERRORS
from tests.segment_events import engage_event

SECRET = "s3cret-webhook"
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
    for bad in ("", "0" * 40, signature.upper()[:-1] + "0"):
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
    """API Gateway inflates a gzip or deflate body itself and passes Content-Encoding on with it."""
    for encoding in ("gzip", "deflate"):
        response, queue = post([engage_event()], headers={**bearer(), "content-encoding": encoding})
        assert (response.status, len(queue.sent)) == (200, 1), encoding


def test_deflate_bodies_are_decompressed() -> None:
    payload = zlib.compress(json.dumps([engage_event()]).encode())
    response, queue = post(
        body=base64.b64encode(payload).decode(), is_base64=True, headers={**bearer(), "content-encoding": "deflate"}
    )
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
