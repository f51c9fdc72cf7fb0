"""The sync core against real components: the LaunchDarkly emulator over HTTP, DynamoDB and SQS in
moto's server mode. Ordering, coalescing, chunking, isolation, permanent and transient failures."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ld_audiences.change import MembershipChange
from ld_audiences.dead_letters import SqsDeadLetters
from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError
from ld_audiences.retry import RetryPolicy
from ld_audiences.state import LEASE_MARGIN_SECONDS, StateStore
from ld_audiences.state_table import context_hash
from ld_audiences.sync import ISOLATED_KEYS_BUDGET, QueuedRecord, Synchronizer
from ld_audiences.writers import RestWriter, SegmentAudiencesWriter, SegmentWriter, Target
from ld_audiences_local.emulator import Emulator, Faults
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws

FAST_RETRIES = RetryPolicy(base_delay=0.01, max_delay=0.05, max_rate_limit_wait=0.3)


def change(
    key: str, included: bool, second: int, audience: str = "beta_testers", message: str = ""
) -> MembershipChange:
    return MembershipChange(
        audience_id=f"aud_{audience}",
        audience_key=audience,
        context_kind="user",
        context_key=key,
        included=included,
        event_time=f"2026-11-20T10:00:{second:02d}.000000000Z",
        message_id=message or f"personas_{audience}_{key}_{second}_{included}",
    )


def records(*changes: MembershipChange) -> list[QueuedRecord]:
    return [QueuedRecord(f"sqs-{i}-{c.message_id}", c.to_message()) for i, c in enumerate(changes)]


def members(emulator: Emulator, audience: str = "beta_testers") -> set[str]:
    return emulator.included(f"{CLIENT_SIDE_ID}/aud_{audience}")


def writes(emulator: Emulator) -> int:
    return int(emulator.stats()["writes"])


@pytest.fixture
def client(emulator: Emulator) -> LaunchDarklyClient:
    return LaunchDarklyClient(emulator.url, LD_TOKEN, policy=FAST_RETRIES)


def make_sync(aws: Aws, writer: SegmentWriter, chunk_size: int = 1000, busy_wait: float = 5.0) -> Synchronizer:
    return Synchronizer(
        writer=writer,
        store=StateStore(aws.dynamodb, aws.table),
        dead_letters=SqsDeadLetters(aws.sqs, aws.dlq_url),
        chunk_size=chunk_size,
        busy_wait=busy_wait,
    )


@pytest.fixture
def sync(aws: Aws, client: LaunchDarklyClient) -> Synchronizer:
    return make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID))


def deadline(seconds: float = 20) -> float:
    return time.time() + seconds


def test_latest_change_per_context_wins_within_a_batch(sync: Synchronizer, emulator: Emulator) -> None:
    batch = records(change("u1", False, 9), change("u1", True, 5), change("u2", True, 1), change("u2", True, 1))
    report = sync.sync(batch, deadline())
    assert members(emulator) == {"u2"}
    assert (report.superseded, report.failed, report.added, report.removed) == (2, [], 1, 1)
    assert writes(emulator) == 1


def test_older_changes_in_later_batches_are_stale(sync: Synchronizer, emulator: Emulator) -> None:
    sync.sync(records(change("u1", True, 30)), deadline())
    report = sync.sync(records(change("u1", False, 10)), deadline())
    assert members(emulator) == {"u1"}
    assert (report.stale, writes(emulator)) == (1, 1)


def test_equal_times_are_ordered_by_message_id(sync: Synchronizer, emulator: Emulator) -> None:
    sync.sync(records(change("u1", True, 5, message="personas_b")), deadline())
    report = sync.sync(records(change("u1", False, 5, message="personas_a")), deadline())
    assert report.stale == 1 and members(emulator) == {"u1"}
    sync.sync(records(change("u1", False, 5, message="personas_c")), deadline())
    assert members(emulator) == set()


def test_redelivered_message_causes_no_second_write(sync: Synchronizer, emulator: Emulator) -> None:
    again = change("u1", True, 5)
    sync.sync(records(again), deadline())
    report = sync.sync(records(again), deadline())
    assert (report.duplicates, report.failed, writes(emulator)) == (1, [], 1)


def test_each_request_holds_one_audience_and_is_named_after_it(sync: Synchronizer, emulator: Emulator) -> None:
    sync.sync(records(change("u1", True, 1, "beta_testers"), change("u2", True, 1, "bought_twice_30d")), deadline())
    segments = {s["id"]: s for s in emulator.segments()}
    assert segments[f"{CLIENT_SIDE_ID}/aud_beta_testers"]["name"] == "Beta testers"
    assert segments[f"{CLIENT_SIDE_ID}/aud_bought_twice_30d"]["name"] == "Bought twice 30d"
    assert (members(emulator, "beta_testers"), members(emulator, "bought_twice_30d")) == ({"u1"}, {"u2"})


def test_requests_are_chunked_to_the_limit(aws: Aws, client: LaunchDarklyClient, emulator: Emulator) -> None:
    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), chunk_size=40)
    report = sync.sync(records(*(change(f"u{i}", True, 1) for i in range(100))), deadline(60))
    assert report.failed == [] and len(members(emulator)) == 100
    assert writes(emulator) == 3  # ceil(100 / 40)


def test_a_newer_change_waits_for_an_older_write_in_flight(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """B (newer) arrives in another invocation while A's write is in flight: B must not write first and
    be overwritten by A. B waits for A's lease; here A cannot finish before B gives up, so B is left
    to SQS and written on its retry."""
    real = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)
    other_invocation = make_sync(aws, real, busy_wait=0.3)
    newer = records(change("u1", False, 50))
    seen: list[list[str]] = []

    class WriteWhileAnotherInvocationRuns:
        def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
            seen.append(other_invocation.sync(newer, deadline).failed)
            real.write(target, add, remove, deadline)

    assert (
        make_sync(aws, WriteWhileAnotherInvocationRuns()).sync(records(change("u1", True, 40)), deadline()).failed == []
    )
    assert seen == [[newer[0].record_id]]  # B was busy and left for SQS to retry
    assert members(emulator) == {"u1"}
    assert other_invocation.sync(newer, deadline()).failed == []  # the retry
    assert members(emulator) == set()


def test_a_crashed_writer_blocks_its_contexts_only_until_its_lease_ends(
    aws: Aws, emulator: Emulator, sync: Synchronizer
) -> None:
    store = StateStore(aws.dynamodb, aws.table)
    crashed = change("u1", True, 10)
    assert store.claim([crashed], deadline=time.time() - LEASE_MARGIN_SECONDS + 1).claimed == [crashed]
    newer = records(change("u1", False, 20))
    assert make_sync(
        aws, SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID), busy_wait=0
    ).sync(newer, deadline()).failed == [newer[0].record_id]
    time.sleep(1.1)
    report = sync.sync(newer, deadline())
    assert (report.failed, report.removed) == ([], 1)
    # The crashed change, redelivered later, is older than what was applied.
    assert sync.sync(records(crashed), deadline()).stale == 1


def test_a_failed_write_releases_its_contexts_at_once(aws: Aws, client: LaunchDarklyClient, emulator: Emulator) -> None:
    emulator.set_faults(Faults(rate_5xx=1.0, seed=3))
    first = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), busy_wait=0)
    batch = records(change("u1", True, 1))
    assert first.sync(batch, deadline(4)).failed == [batch[0].record_id]
    emulator.set_faults(Faults())
    assert first.sync(records(change("u1", False, 2)), deadline()).failed == []  # not blocked by a lease
    assert members(emulator) == set()


def test_permanent_failure_goes_to_the_dlq_with_its_reason(sync: Synchronizer, emulator: Emulator, aws: Aws) -> None:
    report = sync.sync(records(change("u1", True, 1, "rejected"), change("u2", True, 1)), deadline())
    assert report.failed == [] and report.dead_lettered == 1
    assert members(emulator) == {"u2"}  # the other audience is unaffected
    (message,) = aws.queue_messages(aws.dlq_url)
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["failure_reason"] == "launchdarkly_400_invalid_request"
    assert "cohort rejected" in attributes["failure_detail"]
    assert MembershipChange.from_message(message["Body"]).context_key == "u1"


def test_unreadable_messages_are_dead_lettered(sync: Synchronizer, aws: Aws) -> None:
    report = sync.sync([QueuedRecord("r1", '{"v": 1}'), QueuedRecord("r2", "not json")], deadline())
    assert (report.dead_lettered, report.failed) == (2, [])
    reasons = {m["MessageAttributes"]["failure_reason"]["StringValue"] for m in aws.queue_messages(aws.dlq_url)}
    assert reasons == {"invalid_message"}


def test_transient_failure_fails_only_that_segments_records(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    real = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)

    class FlakyForOneAudience:
        def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
            if target.audience_key == "flaky":
                raise WriteError(False, 503, "unavailable", "try later")
            real.write(target, add, remove, deadline)

    batch = records(change("u1", True, 1, "flaky"), change("u2", True, 1, "flaky"), change("u3", True, 1))
    report = make_sync(aws, FlakyForOneAudience()).sync(batch, deadline())
    assert sorted(report.failed) == sorted(r.record_id for r in batch[:2])
    assert members(emulator) == {"u3"}
    # The retry delivers the same changes: they were claimed, not applied, so they are written now.
    assert make_sync(aws, real).sync(batch[:2], deadline()).failed == []
    assert members(emulator, "flaky") == {"u1", "u2"}


def test_rate_limits_and_5xx_are_retried_until_written(
    sync: Synchronizer, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    emulator.set_faults(Faults(rate_429=0.3, rate_5xx=0.2, reset_ms=50, seed=7))
    report = sync.sync(records(*(change(f"u{i}", True, 1, f"aud{i % 5}") for i in range(50))), deadline(60))
    assert report.failed == []
    assert client.retries > 0
    assert sum(len(members(emulator, f"aud{i}")) for i in range(5)) == 50


def test_no_time_left_reports_failures_instead_of_waiting(sync: Synchronizer, emulator: Emulator) -> None:
    emulator.set_faults(Faults(rate_429=1.0, reset_ms=5000, seed=1))
    batch = records(change("u1", True, 1))
    started = time.monotonic()
    report = sync.sync(batch, deadline(1.0))
    assert time.monotonic() - started < 3
    assert report.failed == [batch[0].record_id] and report.dead_lettered == 0


def test_rest_writer_creates_the_big_segment_then_updates_it(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    sync = make_sync(aws, RestWriter(client, "default", "production"))
    sync.sync(records(change("u1", True, 1), change("u2", True, 1)), deadline())
    # A second writer (a new Lambda instance) finds the segment already there: 409 key_exists is fine.
    make_sync(aws, RestWriter(client, "default", "production")).sync(records(change("u1", False, 2)), deadline())
    (segment,) = emulator.segments()
    assert (segment["id"], segment["kind"], segment["name"]) == (
        f"default/production/{RestWriter.segment_key(Target('aud_beta_testers', 'beta_testers', 'user'))}",
        "big",
        "Beta testers",
    )
    assert segment["contextKind"] == "user" and segment["included"] == ["u2"]


class RefusesKeys:
    """LaunchDarkly as it treats an invalid item: the whole request refused with 400, nothing applied."""

    def __init__(self, real: SegmentWriter, bad: set[str]) -> None:
        self.real, self.bad, self.requests = real, bad, 0

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
        self.requests += 1
        if self.bad & {*add, *remove}:
            raise WriteError(True, 400, "invalid_request", "batch contains an invalid userId")
        self.real.write(target, add, remove, deadline)


def test_one_refused_key_is_isolated_and_the_rest_of_its_chunk_lands(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    writer = RefusesKeys(SegmentAudiencesWriter(client, CLIENT_SIDE_ID), {"u05"})
    batch = records(*(change(f"u{i:02d}", True, 1) for i in range(16)))
    report = make_sync(aws, writer, chunk_size=16).sync(batch, deadline())
    assert (report.added, report.dead_lettered, report.failed) == (15, 1, [])
    assert members(emulator) == {f"u{i:02d}" for i in range(16)} - {"u05"}
    [letter] = aws.queue_messages(aws.dlq_url)
    assert MembershipChange.from_message(letter["Body"]).context_key == "u05"
    assert writer.requests == 1 + 2 * 4  # the chunk, then two halves per level down to one key


@pytest.mark.parametrize("bad_count", [2, 3, 10])
def test_only_refused_keys_are_dead_lettered_however_many_share_a_chunk(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator, bad_count: int
) -> None:
    keys = [f"u{i:04d}" for i in range(1000)]
    bad = set(keys[7 :: 1000 // bad_count][:bad_count])  # spread over both halves, and deeper
    writer = RefusesKeys(SegmentAudiencesWriter(client, CLIENT_SIDE_ID), bad)
    report = make_sync(aws, writer).sync(records(*(change(k, True, 1) for k in keys)), deadline(60))
    assert (report.added, report.dead_lettered, report.failed) == (1000 - bad_count, bad_count, [])
    assert members(emulator) == set(keys) - bad
    letters = aws.queue_messages(aws.dlq_url)
    assert {MembershipChange.from_message(m["Body"]).context_key for m in letters} == bad
    assert {m["MessageAttributes"]["failure_reason"]["StringValue"] for m in letters} == {
        "launchdarkly_400_invalid_request"
    }
    assert writer.requests <= 1 + 2 * bad_count * math.ceil(math.log2(1000))  # the budget the README states


def test_a_refusal_of_every_key_stops_at_the_isolation_budget(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    keys = [f"u{i:04d}" for i in range(1000)]
    writer = RefusesKeys(SegmentAudiencesWriter(client, CLIENT_SIDE_ID), set(keys))
    report = make_sync(aws, writer).sync(records(*(change(k, True, 1) for k in keys)), deadline(60))
    assert (report.added, report.dead_lettered, report.failed) == (0, 1000, [])
    assert writer.requests <= 1 + 2 * ISOLATED_KEYS_BUDGET * math.ceil(math.log2(1000))


class RefusesOneContext:
    """DynamoDB as it treats an item it cannot store: the whole call refused (ValidationException), nothing
    written; every other call goes to moto."""

    def __init__(self, real: Any, context_key: str) -> None:
        self._real, self._sort_key = real, context_hash(context_key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def transact_write_items(self, **kwargs: Any) -> Any:
        if any(item["Update"]["Key"]["sk"]["S"] == self._sort_key for item in kwargs["TransactItems"]):
            error = {"Error": {"Code": "ValidationException", "Message": "Item size has exceeded the maximum"}}
            raise ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]
        return self._real.transact_write_items(**kwargs)


def test_a_context_dynamodb_refuses_fails_alone_and_leaves_no_lease(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    keys = [f"u{i:02d}" for i in range(40)]
    store = StateStore(RefusesOneContext(aws.dynamodb, "u17"), aws.table)  # type: ignore[arg-type]
    sync = Synchronizer(
        writer=SegmentAudiencesWriter(client, CLIENT_SIDE_ID),
        store=store,
        dead_letters=SqsDeadLetters(aws.sqs, aws.dlq_url),
        chunk_size=1000,
    )
    report = sync.sync(records(*(change(k, True, 1) for k in keys)), deadline())
    assert (report.added, report.dead_lettered, report.failed) == (39, 1, [])
    assert members(emulator) == set(keys) - {"u17"}
    [letter] = aws.queue_messages(aws.dlq_url)
    assert letter["MessageAttributes"]["failure_reason"]["StringValue"] == "state_refused"
    assert MembershipChange.from_message(letter["Body"]).context_key == "u17"
    # Nothing of the batch is left leased: a newer change to any context claims at once.
    newer = [change(k, False, 2) for k in keys if k != "u17"]
    assert StateStore(aws.dynamodb, aws.table).claim(newer, time.time() + 20).claimed == newer


class LandsAfterSilence:
    """A write that landed on a retry after an attempt that got no answer (which may still be applied)."""

    def __init__(self, real: SegmentWriter) -> None:
        self.real = real

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
        self.real.write(target, add, remove, deadline)
        return True


def test_a_write_that_landed_after_an_unanswered_attempt_is_written_again_later(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    sync = make_sync(aws, LandsAfterSilence(SegmentAudiencesWriter(client, CLIENT_SIDE_ID)))
    report = sync.sync(records(change("u1", True, 1), change("u2", False, 1)), deadline())
    assert (report.added, report.removed, report.failed) == (1, 1, [])
    rechecks = sorted((c.context_key, c.reassert, round(delay)) for c, delay in report.reasserts)
    lease_end = 20 + LEASE_MARGIN_SECONDS
    assert [(key, reassert) for key, reassert, _ in rechecks] == [("u1", True)] * 2 + [("u2", True)] * 2
    assert {delay for _, _, delay in rechecks} <= {round(lease_end + 30), round(lease_end + 30) - 1, 900}
