"""End to end on loopback: Segment payloads over real HTTP → ingest handler → SQS (moto) → the SQS
event source → sync handler → LaunchDarkly emulator over HTTP, with the DLQ and redrive.

The expected segments are computed here, independently of the product's code, from the fixture
files: per (audience, userId) the change with the latest event time wins.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from ld_audiences.limits import MAX_BODY_BYTES, MAX_LISTED_ERRORS
from ld_audiences.writers import RestWriter, Target
from ld_audiences_cli.main import main as cli_main
from ld_audiences_cli.redrive import NO_REASON, list_dead_letters
from ld_audiences_cli.replay import replay
from ld_audiences_local.api_gateway import LAMBDA_MAX_REQUEST
from ld_audiences_local.emulator import Emulator
from ld_audiences_local.event_source import SqsEventSource
from ld_audiences_local.stack import LocalStack

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "events" / "segment"
SECRET = "e2e-webhook-secret"
TOKEN = "api-e2e-token"
CSID = "e2e-client-side-id"
REJECTED = "aud_e2e_rejected"
SYNCED = ("audience", "journey_step")
SEGMENT_AUDIENCES = "POST /api/v2/segment-targets/segment-audiences"


# ----------------------------------------------------------------------------------------- ground truth

_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def _instant(value: str) -> tuple[datetime, int]:
    """(UTC second, nanoseconds): Python's datetime keeps only six of Engage's nine digits."""
    match = _TIMESTAMP.fullmatch(value)
    assert match, f"fixture timestamp {value!r}"
    *fields, fraction, zone = match.groups()
    moment = datetime(*map(int, fields), tzinfo=UTC)  # type: ignore[misc]
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment, int((fraction or "").ljust(9, "0"))


def _events(payload: Any) -> list[Any]:
    if isinstance(payload, dict) and "batch" in payload:
        return list(payload["batch"])
    return list(payload) if isinstance(payload, list) else [payload]


def _membership(event: dict[str, Any]) -> tuple[str, str, str, bool] | None:
    """(audience id, audience key, user id, included) of a valid audience event, else None."""
    personas = (event.get("context") or {}).get("personas") or {}
    if personas.get("computation_class") not in SYNCED:
        return None
    key, audience, user = personas.get("computation_key"), personas.get("computation_id"), event.get("userId")
    source = event.get("traits") if event.get("type") == "identify" else event.get("properties")
    value = (source or {}).get(key)
    if value is None and personas["computation_class"] == "journey_step":
        value = True
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not (key and audience and user and isinstance(value, bool)):
        return None
    return audience, key, user, value


def ground_truth(payloads: list[Any]) -> tuple[dict[str, set[str]], dict[str, str], tuple[int, int]]:
    """Members per audience id, audience key per id, and (accepted, skipped) event counts."""
    latest: dict[tuple[str, str], tuple[tuple[Any, ...], bool]] = {}
    keys: dict[str, str] = {}
    accepted = skipped = 0
    for payload in payloads:
        for event in _events(payload):
            personas = (event.get("context") or {}).get("personas") or {}
            if personas.get("computation_class") not in SYNCED:
                skipped += 1
                continue
            membership = _membership(event)
            assert membership is not None, f"the bundled fixtures hold only valid events: {event.get('messageId')}"
            accepted += 1
            audience, key, user, included = membership
            keys[audience] = key
            timestamp = event.get("timestamp") or event.get("originalTimestamp") or event["receivedAt"]
            order = (*_instant(timestamp), event.get("messageId") or "")
            if (audience, user) not in latest or order > latest[(audience, user)][0]:
                latest[(audience, user)] = (order, included)
    members: dict[str, set[str]] = {audience: set() for audience in keys}
    for (audience, user), (_order, included) in latest.items():
        if included:
            members[audience].add(user)
    return members, keys, (accepted, skipped)


def cohort_name(key: str) -> str:
    name = key.replace("_", " ")
    return name[:1].upper() + name[1:]


# ----------------------------------------------------------------------------------------- helpers


def engage_event(
    audience: str, user: str | None, value: Any = True, *, key: str = "e2e_audience", klass: str = "audience"
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "identify",
        "messageId": f"personas_{uuid.uuid4().hex}",
        "timestamp": "2026-11-21T08:00:00.000000001Z",
        "sentAt": None,
        "traits": {key: value},
        "context": {"personas": {"computation_class": klass, "computation_id": audience, "computation_key": key}},
    }
    if user is not None:
        event["userId"] = user
    return event


def post(url: str, body: Any, secret: str | None = SECRET, **headers: str) -> requests.Response:
    sent = {"Content-Type": "application/json", **headers}
    if secret is not None:
        sent["Authorization"] = f"Bearer {secret}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers=sent, timeout=30)


def fixture_payloads(directory: Path) -> list[Any]:
    return [json.loads(path.read_bytes()) for path in sorted(directory.rglob("*.json"))]


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled Segment fixtures; a small stand-in set if the repository has none."""
    if any(FIXTURES.glob("*.json")):
        return FIXTURES
    directory = tmp_path_factory.mktemp("segment")
    entered = engage_event("aud_fallback", "u-1")
    late_exit = {**engage_event("aud_fallback", "u-1", False), "timestamp": "2026-11-20T08:00:00Z"}
    other = engage_event("aud_fallback", "u-2")
    (directory / "01.json").write_text(json.dumps(entered))
    (directory / "02.json").write_text(json.dumps([late_exit, other]))
    (directory / "03.json").write_text(json.dumps({"batch": [engage_event("aud_fallback", "u-3", klass="trait")]}))
    return directory


@pytest.fixture(scope="module")
def launchdarkly() -> Iterator[Emulator]:
    emulator = Emulator(tokens=(TOKEN,), client_side_ids=(CSID,), reject_cohorts=(REJECTED,))
    emulator.start()
    yield emulator
    emulator.stop()


def segment_audiences_stack(launchdarkly: Emulator, **options: Any) -> LocalStack:
    return LocalStack(
        port=0,
        launchdarkly_url=launchdarkly.url,
        launchdarkly_token=TOKEN,
        client_side_id=CSID,
        webhook_secret=SECRET,
        batching_window=0.2,
        **options,
    )


@pytest.fixture(scope="module")
def stack(launchdarkly: Emulator) -> Iterator[LocalStack]:
    with segment_audiences_stack(launchdarkly) as local:
        yield local


# ----------------------------------------------------------------------------------------- tests
# The rest-writer stack runs first, on its own: one LocalStack per process at a time.


def test_rest_writer_replays_the_fixtures_into_big_segments(fixtures_dir: Path) -> None:
    members, keys, _counts = ground_truth(fixture_payloads(fixtures_dir))
    with LocalStack(
        port=0,
        webhook_secret=json.dumps({"current": SECRET, "previous": "old"}),
        writer="rest",
        project_key="e2e-project",
        environment_key="production",
        batching_window=0.1,
        sync_concurrency=2,  # two independent copies of the sync function share the queue
    ) as local:
        assert local.emulator is not None, "no --launchdarkly-url: the stack runs its own emulator"
        results = replay([fixtures_dir], local.url, SECRET, basic=True)
        assert [r.status for r in results] == [200] * len(results), [r.line() for r in results]
        local.wait_until_drained(30)
        segments = {s["key"]: s for s in local.emulator.segments()}
        segment_keys = {
            audience: RestWriter.segment_key(Target(audience, key, "user")) for audience, key in keys.items()
        }
        assert set(segments) == set(segment_keys.values())  # one segment per audience id
        for audience, key in segment_keys.items():
            assert segments[key]["kind"] == "big"
            assert segments[key]["contextKind"] == "user"
            assert set(segments[key]["included"]) == members[audience], key
        assert local.stats()["dead_lettered"] == 0


def test_rest_writer_never_writes_a_segment_it_does_not_own(capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-made segment holds the key: the change is dead-lettered with the reason, the segment keeps its
    members; once the operator removes it, redrive lands the change in a segment ld-audiences creates."""
    target = Target("aud_e2e_admins", "internal_admins", "user")
    key = RestWriter.segment_key(target)
    with LocalStack(
        port=0, webhook_secret=SECRET, writer="rest", project_key="e2e-project", environment_key="production"
    ) as local:
        assert local.emulator is not None and local.sqs is not None
        segments = f"{local.launchdarkly_url}/api/v2/segments/e2e-project/production"
        ld = {"Authorization": local.launchdarkly_token}
        body = {"key": key, "name": "Internal admins", "unbounded": True, "unboundedContextKind": "user"}
        assert requests.post(segments, json=body, headers=ld, timeout=5).status_code == 201
        assert requests.post(f"{segments}/{key}/contexts", json={"included": {"add": ["alice"]}}, headers=ld).ok

        event = engage_event(target.audience_id, "mallory", key=target.audience_key)
        assert post(f"{local.url}/events", event).json()["accepted"] == 1
        local.wait_until_drained(30)

        [letter] = list_dead_letters(local.sqs, local.dlq_url, wait_seconds=0)
        assert letter.reason == "launchdarkly_409_segment_not_managed"
        assert key in letter.detail and "mallory" not in letter.detail
        assert local.emulator.included(f"e2e-project/production/{key}") == {"alice"}

        assert requests.delete(f"{segments}/{key}", headers=ld, timeout=5).status_code == 204
        redrive = ["redrive", "--queue-url", local.queue_url, "--dlq-url", local.dlq_url]
        assert cli_main([*redrive, "--endpoint-url", local.moto_url]) == 0
        assert "1 message(s) moved back" in capsys.readouterr().out
        local.wait_until_drained(30)
        assert local.emulator.included(f"e2e-project/production/{key}") == {"mallory"}
        assert local.dead_letter_count() == 0


def test_fixtures_end_as_the_latest_membership_per_user(
    stack: LocalStack, launchdarkly: Emulator, fixtures_dir: Path
) -> None:
    payloads = fixture_payloads(fixtures_dir)
    members, keys, (accepted, skipped) = ground_truth(payloads)

    results = replay([fixtures_dir], stack.url, SECRET)
    assert [r.status for r in results] == [200] * len(payloads), [r.line() for r in results]
    assert sum(r.accepted or 0 for r in results) == accepted
    assert sum(r.skipped or 0 for r in results) == skipped
    assert sum(r.rejected or 0 for r in results) == 0
    stack.wait_until_drained(30)

    segments = {s["id"]: s for s in launchdarkly.segments() if s.get("environment") == CSID}
    assert set(segments) == {f"{CSID}/{audience}" for audience in members}
    for audience, expected in members.items():
        segment = segments[f"{CSID}/{audience}"]
        assert set(segment["included"]) == expected, keys[audience]
        assert segment["name"] == cohort_name(keys[audience])
        assert segment["contextKind"] == "user"
    stats = stack.stats()
    assert stats["records"] == accepted
    assert stats["failures"] == stats["handler_errors"] == stats["dead_lettered"] == 0

    # Segment delivers at least once: the same requests again (gzip, Basic auth this time) change
    # nothing and cost no LaunchDarkly write.
    writes = launchdarkly.stats()["writes"]
    again = replay([fixtures_dir], stack.url, SECRET, basic=True, gzip=True)
    assert [r.status for r in again] == [200] * len(payloads)
    stack.wait_until_drained(30)
    assert launchdarkly.stats()["writes"] == writes
    for audience, expected in members.items():
        assert launchdarkly.included(f"{CSID}/{audience}") == expected


def test_mixed_request_queues_the_valid_events_and_explains_the_rest(stack: LocalStack, launchdarkly: Emulator) -> None:
    audience = "aud_e2e_mixed"
    body = [
        engage_event(audience, "m-1"),
        engage_event(audience, "m-2", "maybe"),
        engage_event(audience, "m-3", klass="trait"),
        engage_event(audience, None),
        "not an object",
    ]
    response = post(f"{stack.url}/events", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["skipped"], answer["rejected"]) == (1, 1, 3)
    assert [e["index"] for e in answer["errors"]] == [1, 3, 4]
    assert answer["errors"][0]["messageId"] == body[1]["messageId"]
    assert all(e["reason"] for e in answer["errors"])

    all_bad = post(f"{stack.url}/v1/batch", {"batch": [engage_event(audience, None)]})
    assert all_bad.status_code == 400
    assert (all_bad.json()["code"], all_bad.json()["rejected"]) == ("all_events_rejected", 1)
    broken = post(f"{stack.url}/events", b"{not json")
    assert broken.status_code == 400
    assert {"code", "message"} <= broken.json().keys()

    stack.wait_until_drained(30)
    assert launchdarkly.included(f"{CSID}/{audience}") == {"m-1"}


def test_limits_are_answered_by_whoever_answers_them_on_aws(stack: LocalStack) -> None:
    """Over MaxBodyBytes but within Lambda's 6 MiB event: the function says why (413 with code and message).
    Over Lambda's limit: API Gateway's own 413, the function never runs. Many rejected events: the answer
    lists the first ones and counts the rest."""
    padding = "x" * (MAX_BODY_BYTES + 1024)
    within_lambda = post(f"{stack.url}/events", [{**engage_event("aud_e2e_big", "b-1"), "padding": padding}])
    assert within_lambda.status_code == 413
    assert within_lambda.json()["code"] == "body_too_large"

    requests_before = stack.stats()["ingest_requests"]
    quotes = '"' * (LAMBDA_MAX_REQUEST // 2)  # every quote is escaped in the event: twice the size
    over_lambda = post(f"{stack.url}/events", [{**engage_event("aud_e2e_big", "b-1"), "padding": quotes}])
    assert (over_lambda.status_code, over_lambda.json()) == (413, {"message": "Request Too Long"})
    assert stack.stats()["ingest_requests"] == requests_before

    rejected = [engage_event("aud_e2e_many", f"r-{i}", "maybe") for i in range(MAX_LISTED_ERRORS + 3)]
    answer = post(f"{stack.url}/events", rejected).json()
    assert (answer["rejected"], len(answer["errors"]), answer["errors_omitted"]) == (len(rejected), 100, 3)


def test_status_json_reads_an_external_launchdarkly_and_shows_no_secret(
    stack: LocalStack, launchdarkly: Emulator
) -> None:
    response = post(f"{stack.url}/events", [engage_event("aud_e2e_status", f"s-{i}") for i in range(3)])
    assert response.status_code == 200
    stack.wait_until_drained(30)
    page = requests.get(f"{stack.url}/status.json", timeout=10)
    status = page.json()
    assert status["launchdarkly"]["where"] == "external" and status["launchdarkly"]["problem"] is None
    [segment] = [s for s in status["launchdarkly"]["segments"] if s["key"] == "aud_e2e_status"]
    assert segment["members"] == len(launchdarkly.included(f"{CSID}/aud_e2e_status")) == 3
    assert status["queue"]["visible"] == 0 and status["sync"]["recent"]
    for secret in (SECRET, TOKEN):
        assert secret not in page.text
        assert secret not in requests.get(f"{stack.url}/", timeout=10).text


def test_the_context_kind_query_parameter_reaches_ingest(stack: LocalStack, launchdarkly: Emulator) -> None:
    audience = "aud_e2e_kind"
    refused = post(f"{stack.url}/events?context_kind=account", engage_event(audience, "k-1"))
    assert (refused.status_code, refused.json()["code"]) == (400, "context_kind_not_allowed")
    chosen = post(f"{stack.url}/events?context_kind=user", engage_event(audience, "k-2"))
    assert (chosen.status_code, chosen.json()["accepted"]) == (200, 1)
    stack.wait_until_drained(30)
    assert launchdarkly.included(f"{CSID}/{audience}") == {"k-2"}


def test_wrong_or_missing_credentials_get_401_and_queue_nothing(stack: LocalStack, launchdarkly: Emulator) -> None:
    audience = "aud_e2e_unauthorized"
    before = stack.stats()
    basic_wrong = "Basic " + base64.b64encode(b"nope:").decode()
    for response in (
        post(f"{stack.url}/events", engage_event(audience, "x-1"), secret="wrong-secret"),
        post(f"{stack.url}/v1/batch", {"batch": [engage_event(audience, "x-1")]}, secret=None),
        post(f"{stack.url}/events", engage_event(audience, "x-1"), secret=None, Authorization=basic_wrong),
    ):
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert SECRET not in response.text
    time.sleep(0.3)  # anything wrongly queued would be received by now
    stack.wait_until_drained(10)
    after = stack.stats()
    assert after["records"] == before["records"]
    assert stack.queue_counts() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert not any(s["key"] == audience for s in launchdarkly.segments())


def test_permanent_failure_is_dead_lettered_with_its_reason_and_redriven(
    stack: LocalStack, launchdarkly: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    response = post(f"{stack.url}/events", engage_event(REJECTED, "r-1"))
    assert response.status_code == 200 and response.json()["accepted"] == 1
    stack.wait_until_drained(30)

    assert stack.dead_letter_count() == 1
    [letter] = list_dead_letters(stack.sqs, stack.dlq_url, wait_seconds=0)  # type: ignore[arg-type]
    assert letter.reason.startswith("launchdarkly_400")
    assert "rejected" in letter.detail
    assert json.loads(letter.body)["audience_id"] == REJECTED
    rejected_writes = launchdarkly.stats()["requests"][SEGMENT_AUDIENCES].get("400", 0)

    base = ["redrive", "--queue-url", stack.queue_url, "--dlq-url", stack.dlq_url, "--endpoint-url", stack.moto_url]
    assert cli_main([*base, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert letter.message_id in listing and letter.reason in listing and "nothing changed" in listing
    assert stack.dead_letter_count() == 1

    assert cli_main([*base, "--reason", "some_other_reason"]) == 0
    assert "0 message(s) moved" in capsys.readouterr().out
    assert stack.dead_letter_count() == 1

    assert cli_main([*base, "--reason", letter.reason]) == 0
    assert "1 message(s) moved back" in capsys.readouterr().out
    stack.wait_until_drained(30)
    # The cause is still there (the emulator rejects this cohort): LaunchDarkly saw the change
    # once more, and it is dead-lettered again as a new message.
    assert launchdarkly.stats()["requests"][SEGMENT_AUDIENCES]["400"] == rejected_writes + 1
    [again] = list_dead_letters(stack.sqs, stack.dlq_url, wait_seconds=0)  # type: ignore[arg-type]
    assert again.reason == letter.reason
    assert again.message_id != letter.message_id
    assert again.source_message_id == letter.source_message_id == json.loads(letter.body)["message_id"]
    assert again.body == letter.body
    assert launchdarkly.included(f"{CSID}/{REJECTED}") == set()


def test_records_that_keep_failing_reach_the_dlq_after_max_receives(stack: LocalStack) -> None:
    """moto applies the redrive policy on receive, as SQS does; the poller only leaves failures."""
    sqs = stack.client("sqs")
    name = f"e2e-poison-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="poison")
    sqs.send_message(QueueUrl=queue_url, MessageBody="fine")
    seen: list[tuple[str, str]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert context.get_remaining_time_in_millis() > 0
        for record in event["Records"]:
            assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue_arn
            seen.append((record["body"], record["attributes"]["ApproximateReceiveCount"]))
        if len(seen) == 2:
            raise RuntimeError("first invocation fails as a whole")
        poison = [r["messageId"] for r in event["Records"] if r["body"] == "poison"]
        return {"batchItemFailures": [{"itemIdentifier": i} for i in poison]}

    source = SqsEventSource(sqs, queue_url, queue_arn, handler, batch_size=10, batching_window=0)
    source.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            attributes = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
            if attributes["Attributes"]["ApproximateNumberOfMessages"] == "1":
                break
            time.sleep(0.1)
    finally:
        source.stop()
    assert [count for body, count in seen if body == "poison"] == ["1", "2", "3"]
    assert [count for body, count in seen if body == "fine"] == ["1", "2"]  # retried once, then deleted
    stats = source.stats()
    assert (stats.handler_errors, stats.deleted) == (1, 1)
    [letter] = list_dead_letters(sqs, dlq_url, wait_seconds=0)
    assert (letter.body, letter.reason) == ("poison", NO_REASON)
    counts = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == counts["ApproximateNumberOfMessagesNotVisible"] == "0"
