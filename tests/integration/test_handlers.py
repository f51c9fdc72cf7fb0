"""Both Lambda handlers as Lambda runs them, against moto's server (SQS, Secrets Manager, DynamoDB) and
LaunchDarkly over real HTTP — including the published test cases of Segment's own destination."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ld_audiences.change import MembershipChange
from ld_audiences.config import ConfigError
from ld_audiences.pending_log import PendingLog
from ld_audiences.sync import TICK_BODY
from ld_audiences.writers import Target
from ld_audiences_local.emulator import Emulator
from ld_audiences_local.handlers import FakeLambdaContext, load_handler
from tests.conftest import CLIENT_SIDE_ID, Aws
from tests.recording_server import RecordingServer, Scripted
from tests.segment_events import engage_event

WEBHOOK = "webhook-secret-value"
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def api_event(
    body: Any,
    *,
    path: str = "/events",
    method: str = "POST",
    secret: str = WEBHOOK,
    gzipped: bool = False,
    query: dict[str, list[str]] | None = None,
    received: datetime | None = None,
) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if gzipped:
        raw, headers["Content-Encoding"] = gzip.compress(raw), "gzip"
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": "req-1",
            "stage": "v1",
            "httpMethod": method,
            "resourcePath": path,
            "path": f"/v1{path}",
            "identity": {"sourceIp": "127.0.0.1"},
            **({"requestTimeEpoch": int(received.timestamp() * 1000)} if received else {}),
        },
        "body": base64.b64encode(raw).decode() if gzipped else raw.decode(),
        "isBase64Encoded": gzipped,
    }


@pytest.fixture
def environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def configure(launchdarkly_url: str) -> None:
        for name, value in {
            "QUEUE_URL": aws.queue_url,
            "DLQ_URL": aws.dlq_url,
            "STATE_TABLE_NAME": aws.table,
            "WEBHOOK_SECRET_ARN": aws.webhook_secret,
            "LD_TOKEN_SECRET_ARN": aws.token_secret,
            "LD_CLIENT_SIDE_ID": CLIENT_SIDE_ID,
            "LD_BASE_URL": launchdarkly_url,
            "POWERTOOLS_SERVICE_NAME": "ld-audiences-test",
            "POWERTOOLS_METRICS_NAMESPACE": "LdAudiencesTest",
        }.items():
            monkeypatch.setenv(name, value)

    return configure


@pytest.fixture
def launchdarkly() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


def ingest(aws: Aws, handler: Handler, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = handler(api_event(body, **kwargs), FakeLambdaContext("ingest"))
    return response["statusCode"], json.loads(response["body"])


def sqs_event(aws: Aws) -> dict[str, Any]:
    return aws.sqs_event()


def run_pipeline(aws: Aws, configure: Callable[[str], None], url: str, events: Any) -> dict[str, Any]:
    configure(url)
    status, _ = ingest(aws, load_handler("ingest"), events)
    assert status == 200
    return load_handler("sync")(sqs_event(aws), FakeLambdaContext("sync", timeout_seconds=30))


SEGMENT_TEST_EVENT = {
    "type": "track",
    "event": "Audience Entered",
    "userId": "user1234",
    "messageId": "personas_test",
    "timestamp": "2026-11-20T10:00:00.000Z",
    "properties": {"audience_key": "ld_segment_test", "ld_segment_test": True},
    "context": {
        "personas": {
            "computation_class": "audience",
            "computation_key": "ld_segment_test",
            "computation_id": "ld_segment_audience_id",
        }
    },
}
EXPECTED_BODY = {
    "environmentId": "test-client-id",
    "contextKind": "user",
    "batch": [
        {"userId": "user1234", "cohortName": "Ld segment test", "cohortId": "ld_segment_audience_id", "value": True}
    ],
}


class TestSegmentDestinationCompatibility:
    """The published test cases of Segment's LaunchDarkly Audiences destination."""

    def test_track_audience_event_posts_the_expected_body(
        self, aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
    ) -> None:
        assert run_pipeline(aws, environment, launchdarkly.url, SEGMENT_TEST_EVENT) == {"batchItemFailures": []}
        (request,) = launchdarkly.requests
        assert (request.method, request.path) == ("POST", "/api/v2/segment-targets/segment-audiences")
        assert request.body == EXPECTED_BODY
        assert request.headers["LD-API-Version"] == "20240415"

    def test_journey_step_posts_the_identical_body(
        self, aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
    ) -> None:
        event = json.loads(json.dumps(SEGMENT_TEST_EVENT))
        event["context"]["personas"]["computation_class"] = "journey_step"
        run_pipeline(aws, environment, launchdarkly.url, event)
        assert [r.body for r in launchdarkly.requests] == [EXPECTED_BODY]

    def test_identify_form_posts_the_same_kind_of_write(
        self, aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
    ) -> None:
        event = {**SEGMENT_TEST_EVENT, "type": "identify", "traits": {"ld_segment_test": True}}
        del event["properties"], event["event"]
        run_pipeline(aws, environment, launchdarkly.url, event)
        assert [r.body for r in launchdarkly.requests] == [EXPECTED_BODY]

    def test_event_without_computation_class_makes_no_call(
        self, aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
    ) -> None:
        event = json.loads(json.dumps(SEGMENT_TEST_EVENT))
        del event["context"]["personas"]["computation_class"]
        environment(launchdarkly.url)
        status, body = ingest(aws, load_handler("ingest"), event)
        assert (status, body["skipped"], body["accepted"]) == (200, 1, 0)
        assert aws.queue_messages(aws.queue_url) == [] and launchdarkly.requests == []

    def test_launchdarkly_400_is_reported_as_a_failure(
        self, aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
    ) -> None:
        launchdarkly.default = Scripted(400, body={"code": "invalid_request", "message": "bad cohort"})
        result = run_pipeline(aws, environment, launchdarkly.url, SEGMENT_TEST_EVENT)
        # Not swallowed, not retried forever: moved to the DLQ with LaunchDarkly's code.
        assert result == {"batchItemFailures": []}
        (dead,) = aws.queue_messages(aws.dlq_url)
        assert dead["MessageAttributes"]["failure_reason"]["StringValue"] == "launchdarkly_400_invalid_request"


def test_ingest_queues_membership_changes_in_the_contract_shape(aws: Aws, environment: Callable[[str], None]) -> None:
    environment("http://127.0.0.1:9")
    status, body = ingest(
        aws,
        load_handler("ingest"),
        {"batch": [engage_event(user_id="a"), engage_event(user_id="b")]},
        path="/v1/batch",
        gzipped=True,
    )
    assert (status, body["accepted"]) == (200, 2)
    bodies = sorted((json.loads(m["Body"]) for m in aws.queue_messages(aws.queue_url)), key=lambda b: b["context_key"])
    assert [b["context_key"] for b in bodies] == ["a", "b"]
    assert set(bodies[0]) == {
        "v",
        "audience_id",
        "audience_key",
        "context_kind",
        "context_key",
        "included",
        "event_time",
        "message_id",
        "received_at",
    }


def test_ingest_rejects_wrong_secret_and_queues_nothing(aws: Aws, environment: Callable[[str], None]) -> None:
    environment("http://127.0.0.1:9")
    status, body = ingest(aws, load_handler("ingest"), engage_event(), secret="nope")
    assert (status, body["code"]) == (401, "unauthorized")
    assert aws.queue_messages(aws.queue_url) == []


def test_ingest_answers_503_when_the_queue_is_gone(aws: Aws, environment: Callable[[str], None]) -> None:
    environment("http://127.0.0.1:9")
    handler = load_handler("ingest")
    aws.sqs.delete_queue(QueueUrl=aws.queue_url)
    status, body = ingest(aws, handler, engage_event())
    assert (status, body["code"]) == (503, "queue_unavailable")


def test_ingest_answers_503_when_the_secret_cannot_be_read(
    aws: Aws, environment: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment("http://127.0.0.1:9")
    monkeypatch.setenv("WEBHOOK_SECRET_ARN", "does-not-exist")
    status, body = ingest(aws, load_handler("ingest"), engage_event())
    assert (status, body["code"]) == (503, "secret_unavailable")


def test_ingest_answers_405_to_other_methods(aws: Aws, environment: Callable[[str], None]) -> None:
    environment("http://127.0.0.1:9")
    assert ingest(aws, load_handler("ingest"), engage_event(), method="GET")[0] == 405


def test_sync_returns_exactly_the_records_it_could_not_record(
    aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
) -> None:
    environment(launchdarkly.url)
    status, _ = ingest(aws, load_handler("ingest"), [engage_event(user_id="a"), engage_event(user_id="b")])
    assert status == 200
    event = sqs_event(aws)
    aws.dynamodb.delete_table(TableName=aws.table)  # nowhere to record them
    result = load_handler("sync")(event, FakeLambdaContext("sync", timeout_seconds=6))
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        r["messageId"] for r in event["Records"]
    )
    assert aws.queue_messages(aws.dlq_url) == [] and launchdarkly.requests == []


def test_a_failing_launchdarkly_fails_no_record_and_keeps_the_changes_pending(
    aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
) -> None:
    launchdarkly.default = Scripted(503, body={"code": "unavailable", "message": "down"})
    environment(launchdarkly.url)
    ingest(aws, load_handler("ingest"), [engage_event(user_id="a"), engage_event(user_id="b")])
    result = load_handler("sync")(sqs_event(aws), FakeLambdaContext("sync", timeout_seconds=6))
    assert result == {"batchItemFailures": []} and launchdarkly.requests
    assert aws.queue_messages(aws.dlq_url) == []
    assert PendingLog(aws.dynamodb, aws.table).oldest_since() is not None  # waiting, and the alarm can see it
    # Another reconcile is promised: one tick.
    deadline = time.monotonic() + 8
    while not (ticks := [m for m in aws.queue_messages(aws.queue_url) if m["Body"] == TICK_BODY]):
        assert time.monotonic() < deadline, "no tick was queued"
        time.sleep(0.5)
    assert len(ticks) == 1


def test_sync_refuses_to_run_with_the_placeholder_token(
    aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer
) -> None:
    environment(launchdarkly.url)
    aws.secrets.put_secret_value(SecretId=aws.token_secret, SecretString="REPLACE_ME")
    ingest(aws, load_handler("ingest"), engage_event())
    with pytest.raises(ConfigError, match="token secret is not set"):
        load_handler("sync")(sqs_event(aws), FakeLambdaContext("sync"))
    assert launchdarkly.requests == []


def test_ingest_answers_503_when_the_secret_is_malformed(aws: Aws, environment: Callable[[str], None]) -> None:
    environment("http://127.0.0.1:9")
    aws.secrets.put_secret_value(SecretId=aws.webhook_secret, SecretString='{"current": "abc", ')
    status, body = ingest(aws, load_handler("ingest"), engage_event())
    assert (status, body["code"]) == (503, "secret_unavailable")


@pytest.mark.parametrize(("level", "sample_rate"), [("DEBUG", "0"), ("INFO", "1")])  # LogLevel, LogSampleRate
def test_log_lines_follow_each_event_by_its_segment_message_id(
    aws: Aws,
    environment: Callable[[str], None],
    launchdarkly: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    level: str,
    sample_rate: str,
) -> None:
    """Search the logs for one Segment messageId and find what became of it in both functions."""
    environment(launchdarkly.url)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", f"ld-audiences-correlation-{uuid.uuid4().hex}")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", level)
    monkeypatch.setenv("POWERTOOLS_LOGGER_SAMPLE_RATE", sample_rate)
    ingest_handler, sync_handler = load_handler("ingest"), load_handler("sync")
    rejected = engage_event(message_id="personas_rejected", value="maybe")

    def lines_about(message_id: str) -> list[tuple[str, str]]:
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        return [(d["level"], d["message"]) for d in docs if d.get("correlation_id") == message_id]

    ingest(aws, ingest_handler, [engage_event(user_id="a", message_id="personas_added"), rejected])
    assert lines_about("personas_rejected") == [("WARNING", "event rejected")]
    sync_handler(sqs_event(aws), FakeLambdaContext("sync"))
    assert lines_about("personas_added") == [("DEBUG", "record recorded"), ("DEBUG", "change added")]

    launchdarkly.default = Scripted(400, body={"code": "invalid_request", "message": "bad cohort"})
    ingest(aws, ingest_handler, [engage_event(user_id="b", message_id="personas_refused")])
    sync_handler(sqs_event(aws), FakeLambdaContext("sync"))
    assert lines_about("personas_refused") == [
        ("DEBUG", "event queued"),
        ("DEBUG", "record recorded"),
        ("ERROR", "change dead_lettered"),
    ]


def test_account_audiences_are_written_as_account_contexts(
    aws: Aws, environment: Callable[[str], None], launchdarkly: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOWED_CONTEXT_KINDS", "account")
    environment(launchdarkly.url)
    handler = load_handler("ingest")
    refused = ingest(aws, handler, engage_event(user_id="acme"), query={"context_kind": ["device"]})
    assert (refused[0], refused[1]["code"]) == (400, "context_kind_not_allowed")
    assert aws.queue_messages(aws.queue_url) == []

    status, body = ingest(aws, handler, engage_event(user_id="acme"), query={"context_kind": ["account"]})
    assert (status, body["accepted"]) == (200, 1)
    assert load_handler("sync")(sqs_event(aws), FakeLambdaContext("sync", timeout_seconds=30)) == {
        "batchItemFailures": []
    }
    (request,) = launchdarkly.requests
    assert request.body["contextKind"] == "account"
    assert [item["userId"] for item in request.body["batch"]] == ["acme"]


def test_event_times_are_bounded_by_when_api_gateway_received_the_request(
    aws: Aws, environment: Callable[[str], None]
) -> None:
    environment("http://127.0.0.1:9")
    handler = load_handler("ingest")
    received = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # requestTimeEpoch, days before the test runs
    events = [
        engage_event(user_id="on-time", timestamp="2026-11-20T10:04:59Z"),
        engage_event(user_id="ahead", timestamp="2026-11-20T10:05:01Z"),
    ]
    status, body = ingest(aws, handler, events, received=received)
    assert (status, body["accepted"], [e["reason"] for e in body["errors"]]) == (200, 1, ["timestamp_in_future"])
    assert [json.loads(m["Body"])["context_key"] for m in aws.queue_messages(aws.queue_url)] == ["on-time"]

    # An event without requestTimeEpoch is checked against the function's clock.
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body = ingest(aws, handler, engage_event(timestamp=ahead))
    assert (status, body["errors"][0]["reason"]) == (400, "timestamp_in_future")


def test_a_rotated_token_is_read_again_at_once_and_nothing_is_dead_lettered(
    aws: Aws, environment: Callable[[str], None], emulator: Emulator
) -> None:
    """The token is rotated in Secrets Manager while sync still caches the old one (for SecretsMaxAgeSeconds),
    and LaunchDarkly already refuses the old one: sync reads the secret again and writes with the new token."""
    environment(emulator.url)
    sync_handler = load_handler("sync")
    ingest(aws, load_handler("ingest"), [engage_event(user_id="a")])
    assert sync_handler(sqs_event(aws), FakeLambdaContext("sync")) == {"batchItemFailures": []}  # caches the token
    rotated = "api-rotated-token"
    aws.secrets.put_secret_value(SecretId=aws.token_secret, SecretString=rotated)
    emulator.set_tokens([rotated])
    ingest(aws, load_handler("ingest"), [engage_event(user_id="b")])
    assert sync_handler(sqs_event(aws), FakeLambdaContext("sync")) == {"batchItemFailures": []}
    assert emulator.included(f"{CLIENT_SIDE_ID}/aud_beta") == {"a", "b"}
    assert aws.queue_messages(aws.dlq_url) == []


def test_a_token_the_secret_still_holds_dead_letters_its_changes_with_the_reason(
    aws: Aws, environment: Callable[[str], None], emulator: Emulator
) -> None:
    environment(emulator.url)
    emulator.set_tokens(["api-some-other-token"])
    ingest(aws, load_handler("ingest"), [engage_event(user_id="a"), engage_event(user_id="b")])
    assert load_handler("sync")(sqs_event(aws), FakeLambdaContext("sync")) == {"batchItemFailures": []}
    letters = aws.queue_messages(aws.dlq_url)
    assert len(letters) == 2
    # The synced-segments endpoint answers a token it does not take with 403 (LaunchDarkly's documentation).
    assert {m["MessageAttributes"]["failure_reason"]["StringValue"] for m in letters} == {"launchdarkly_403_forbidden"}
    assert PendingLog(aws.dynamodb, aws.table).oldest_since() is None  # nothing left waiting for ever


def test_the_schedules_event_reconciles_what_is_pending(
    aws: Aws, environment: Callable[[str], None], emulator: Emulator
) -> None:
    """The one-minute schedule invokes sync with no records (events/lambda/sync_schedule.json): it writes
    what is pending, as a tick would."""
    environment(emulator.url)
    ingest(aws, load_handler("ingest"), [engage_event(user_id="a")])
    records = sqs_event(aws)["Records"]
    PendingLog(aws.dynamodb, aws.table).record(
        [(Target("aud_beta", "beta", "user"), [MembershipChange.from_message(r["body"]) for r in records])]
    )
    schedule = json.loads((Path(__file__).parents[2] / "events" / "lambda" / "sync_schedule.json").read_text())
    assert load_handler("sync")(schedule, FakeLambdaContext("sync")) == {"batchItemFailures": []}
    assert emulator.included(f"{CLIENT_SIDE_ID}/aud_beta") == {"a"}
    assert PendingLog(aws.dynamodb, aws.table).oldest_since() is None
