"""The sync core against real components: the LaunchDarkly emulator over HTTP, DynamoDB and SQS in
moto's server mode. Ordering, coalescing across batches, chunking, isolation, leases, permanent and
transient failures."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ld_audiences import debounce
from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.pending_log import PendingLog
from ld_audiences.reconcile import LEASE_MARGIN_SECONDS
from ld_audiences.retry import RetryPolicy
from ld_audiences.sync import INDEX_LAG_SECONDS, TICK_BODY, Synchronizer
from ld_audiences.writers import RestWriter, SegmentAudiencesWriter, SegmentWriter, Target
from ld_audiences_local.emulator import Emulator, Faults
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws, make_sync, running_emulator

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
def emulator() -> Iterator[Emulator]:
    """The emulator on its defaults, held to LaunchDarkly's documentation. The writers' own tests
    (test_writers.py) run under each answer the documentation leaves open, and so does the rest writer's
    test here, where the sync meets a segment that already exists."""
    with running_emulator(strict=True) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> LaunchDarklyClient:
    return LaunchDarklyClient(emulator.url, LD_TOKEN, policy=FAST_RETRIES)


@pytest.fixture
def sync(aws: Aws, client: LaunchDarklyClient) -> Synchronizer:
    return make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID))


def deadline(seconds: float = 20) -> float:
    return time.time() + seconds


def work_item(aws: Aws, audience: str = "beta_testers") -> dict[str, Any]:
    key = t.work_item_key(f"aud_{audience}", "user")
    return dict(aws.dynamodb.get_item(TableName=aws.table, Key=key, ConsistentRead=True).get("Item", {}))


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


def test_one_request_carries_an_audiences_changes_from_many_batches(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """Batches recorded while LaunchDarkly could not be written (here: no reconcile time) are written
    together: requests follow audiences, not batches."""
    writer = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)
    recording_only = make_sync(aws, writer, reconcile_seconds=0)
    for second in range(10):
        batch = [change(f"u{second}-{i}", True, second, audience) for i in range(3) for audience in ("a", "b")]
        report = recording_only.sync(records(*batch), deadline())
        assert (report.recorded, report.failed, report.audiences) == (6, [], 0)
        assert report.oldest_pending is not None and report.next_tick is not None  # work left: a tick is asked
    assert writes(emulator) == 0
    report = make_sync(aws, writer).sync([QueuedRecord("tick", TICK_BODY)], deadline())
    assert (report.added, report.audiences, report.oldest_pending, report.next_tick) == (60, 2, None, None)
    assert writes(emulator) == 2  # one request an audience
    assert len(members(emulator, "a")) == len(members(emulator, "b")) == 30
    assert t.PENDING_SINCE not in work_item(aws, "a") and t.LEASE_OWNER not in work_item(aws, "a")


def test_under_contention_an_audience_still_changing_waits_until_it_is_quiet_or_has_waited_long_enough(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """Many audiences waiting at once (Engage computing them together): a request goes to an audience whose
    changes have stopped arriving, not to one still receiving them, whose next change would need another
    request. One that never goes quiet is written once its oldest change has waited MAX_WAIT_SECONDS."""
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]

    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), clock=clock)
    contended = debounce.CONTENDED_AUDIENCES
    busy, quiet = [f"busy{i:02d}" for i in range(contended)], [f"quiet{i:02d}" for i in range(contended)]

    def step(seconds: float, *batch: MembershipChange) -> None:
        now[0] += seconds
        report = sync.sync(records(*batch), now[0] + 60)
        assert report.failed == []
        assert report.next_tick is None or report.next_tick <= debounce.QUIET_SECONDS  # comes back in time

    step(0, *(change("u0", True, 0, audience) for audience in busy + quiet))
    assert writes(emulator) == 0  # all of them just changed
    step(debounce.QUIET_SECONDS - 2, *(change("u1", True, 1, audience) for audience in busy))
    assert writes(emulator) == 0
    step(2)  # the quiet ones have been quiet long enough; the busy ones changed 2 s ago
    assert writes(emulator) == contended
    assert all(members(emulator, a) == {"u0"} for a in quiet) and all(members(emulator, a) == set() for a in busy)
    step(debounce.QUIET_SECONDS)  # the busy ones went quiet too: both their changes in one request each
    assert writes(emulator) == 2 * contended and all(members(emulator, a) == {"u0", "u1"} for a in busy)

    # Contention again, and the busy ones never stop changing: they are written when their oldest change has
    # waited long enough, with everything they have by then.
    started = now[0]
    step(0, *(change("v0", True, 2, audience) for audience in busy + quiet))
    second = 3
    while writes(emulator) < 4 * contended:
        assert second < 3 + debounce.MAX_WAIT_SECONDS
        step(debounce.QUIET_SECONDS - 1, *(change(f"v{second}", True, second, audience) for audience in busy))
        second += 1
    assert writes(emulator) == 4 * contended
    assert now[0] - started >= debounce.MAX_WAIT_SECONDS
    assert all(len(members(emulator, a)) == 2 + 1 + second - 3 for a in busy)


def test_while_batches_come_full_an_audience_still_changing_waits_for_the_longer_quiet_period(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """A full batch means records are queued behind it (a first sync of many audiences, recorded slower than it
    arrives): an audience quiet for a few seconds is only between two of its changes, so under contention the
    sync writes only those quiet for FLOOD_QUIET_SECONDS. Once batches stop coming full, the usual rule."""
    now = [1_800_000_000.0]
    contended = debounce.CONTENDED_AUDIENCES
    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), clock=lambda: now[0], full_batch=contended)
    busy, quiet = [f"busy{i:02d}" for i in range(contended)], [f"quiet{i:02d}" for i in range(contended)]

    def step(seconds: float, *batch: MembershipChange) -> None:
        now[0] += seconds
        report = sync.sync(records(*batch), now[0] + 60)
        assert report.failed == []
        assert report.next_tick is not None and report.next_tick <= debounce.FLOOD_QUIET_SECONDS

    step(0, *(change("u0", True, 0, audience) for audience in busy + quiet))
    step(debounce.QUIET_SECONDS + 1, *(change("u1", True, 1, audience) for audience in busy))  # a full batch
    assert writes(emulator) == 0  # quiet for longer than QUIET_SECONDS, not for FLOOD_QUIET_SECONDS
    step(debounce.FLOOD_QUIET_SECONDS - debounce.QUIET_SECONDS, *(change("u2", True, 2, a) for a in busy))
    assert writes(emulator) == contended and all(members(emulator, a) == {"u0"} for a in quiet)
    now[0] += debounce.QUIET_SECONDS + 1
    sync.sync([], now[0] + 60)  # nothing queued behind: the busy ones have been quiet long enough
    assert writes(emulator) == 2 * contended
    assert all(members(emulator, a) == {"u0", "u1", "u2"} for a in busy)


def test_a_batch_recorded_during_a_reconcile_is_written_by_the_next_one(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """The race of a reconcile with live changes: what was recorded after the log was read stays listed
    (its pending_seq changed), so the audience is not cleared and the newer change is not lost."""
    real = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)
    other_invocation = make_sync(aws, real, reconcile_seconds=0)
    newer = records(change("u1", False, 50))

    class RecordsWhileWriting:
        def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
            if newer:
                assert other_invocation.sync([newer.pop()], deadline).recorded == 1
            return real.write(target, add, remove, deadline)

    report = make_sync(aws, RecordsWhileWriting()).sync(records(change("u1", True, 40)), deadline())
    # Still listed after the first write, so the same invocation's loop took the audience again.
    assert (report.added, report.removed, report.audiences) == (1, 1, 2)
    assert members(emulator) == set() and writes(emulator) == 2
    assert t.PENDING_SINCE not in work_item(aws)


def test_a_crashed_reconcile_blocks_its_audience_only_until_its_lease_ends(
    aws: Aws, emulator: Emulator, sync: Synchronizer
) -> None:
    recording_only = make_sync(
        aws, SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID), reconcile_seconds=0
    )
    assert recording_only.sync(records(change("u1", True, 10)), deadline()).recorded == 1
    lease = PendingLog(aws.dynamodb, aws.table).take("aud_beta_testers", "user", until=time.time() + 1)
    assert lease is not None  # ... and its holder crashes
    report = sync.sync([], deadline())
    assert (report.audiences, writes(emulator)) == (0, 0)
    assert report.next_tick is not None  # the work left is promised to a tick
    time.sleep(1.1)
    report = sync.sync([], deadline())
    assert (report.audiences, report.added) == (1, 1) and members(emulator) == {"u1"}


def test_a_failing_launchdarkly_leaves_the_changes_pending_not_failed(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    emulator.set_faults(Faults(rate_5xx=1.0, seed=3))
    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID))
    report = sync.sync(records(change("u1", True, 1), change("u2", True, 1)), deadline(4))
    # Recorded, so SQS is done with the records; the audience waits a pause and says when to come back.
    assert (report.recorded, report.failed, report.added, report.dead_lettered) == (2, [], 0, 0)
    assert report.next_tick is not None and 0 < report.next_tick <= 5
    assert float(work_item(aws)[t.LEASE_UNTIL]["N"]) > time.time()  # paused
    emulator.set_faults(Faults())
    assert make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID)).sync([], deadline()).added == 0
    time.sleep(max(float(work_item(aws)[t.LEASE_UNTIL]["N"]) - time.time(), 0) + 0.1)
    assert sync.sync([], deadline()).added == 2
    assert members(emulator) == {"u1", "u2"}


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


def test_a_failure_of_one_audience_stops_no_other(aws: Aws, client: LaunchDarklyClient, emulator: Emulator) -> None:
    real = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)

    class FlakyForOneAudience:
        def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
            if target.audience_key == "flaky":
                raise WriteError(False, 503, "unavailable", "try later")
            return real.write(target, add, remove, deadline)

    batch = records(change("u1", True, 1, "flaky"), change("u2", True, 1, "flaky"), change("u3", True, 1))
    report = make_sync(aws, FlakyForOneAudience()).sync(batch, deadline())
    assert report.failed == [] and report.added == 1
    assert members(emulator) == {"u3"} and members(emulator, "flaky") == set()


def test_rate_limits_and_5xx_are_retried_until_written(
    sync: Synchronizer, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    emulator.set_faults(Faults(rate_429=0.3, rate_5xx=0.2, reset_ms=50, seed=7))
    batch = records(*(change(f"u{i}", True, 1, f"aud{i % 5}") for i in range(50)))
    report = sync.sync(batch, deadline(60))
    for _ in range(20):
        if sum(len(members(emulator, f"aud{i}")) for i in range(5)) == 50:
            break
        time.sleep(0.3)
        report = sync.sync([], deadline(60))
    assert report.failed == []
    assert client.retries > 0
    assert sum(len(members(emulator, f"aud{i}")) for i in range(5)) == 50


def test_no_time_left_keeps_the_changes_pending_instead_of_waiting(sync: Synchronizer, emulator: Emulator) -> None:
    emulator.set_faults(Faults(rate_429=1.0, reset_ms=5000, seed=1))
    started = time.monotonic()
    report = sync.sync(records(change("u1", True, 1)), deadline(3.0))
    assert time.monotonic() - started < 4
    assert (report.recorded, report.failed, report.dead_lettered, report.added) == (1, [], 0, 0)
    assert report.oldest_pending is not None and report.next_tick is not None


def test_a_batch_dynamodb_cannot_record_is_returned_to_sqs(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    class RefusesAudience:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def update_item(self, **kwargs: Any) -> Any:
            if kwargs["Key"] == t.work_item_key("aud_flaky", "user"):
                error = {"Error": {"Code": "InternalServerError", "Message": "try again"}}
                raise ClientError(error, "UpdateItem")  # type: ignore[arg-type]
            return self._real.update_item(**kwargs)

    batch = records(change("u1", True, 1, "flaky"), change("u2", True, 1))
    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), dynamodb=RefusesAudience(aws.dynamodb))
    report = sync.sync(batch, deadline())
    assert report.failed == [batch[0].record_id] and report.added == 1
    assert members(emulator) == {"u2"}
    report = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID)).sync(batch[:1], deadline())
    assert report.failed == [] and members(emulator, "flaky") == {"u1"}


def test_rest_writer_creates_the_big_segment_then_updates_it(aws: Aws, emulator_every_answer: Emulator) -> None:
    emulator = emulator_every_answer
    client = LaunchDarklyClient(emulator.url, LD_TOKEN, policy=FAST_RETRIES)
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


@pytest.mark.parametrize("bad_count", [3])  # other spreads and the budget: tests/unit/test_reconciler.py
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
    assert writer.requests <= 1 + 2 * bad_count * math.ceil(math.log2(1000))  # the budget docs/DESIGN.md states


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


def test_a_batch_the_pending_index_does_not_show_yet_is_promised_a_tick(
    aws: Aws, client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """DynamoDB's index is eventually consistent: right after recording, it may not list the audience. The
    invocation cannot take it then, and a tick must come back for it (else it waits for the schedule)."""

    class LaggingIndex:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def query(self, **kwargs: Any) -> Any:
            return {"Items": []} if "IndexName" in kwargs else self._real.query(**kwargs)

    writer = SegmentAudiencesWriter(client, CLIENT_SIDE_ID)
    lagging = make_sync(aws, writer, dynamodb=LaggingIndex(aws.dynamodb))
    report = lagging.sync(records(change("u1", True, 1)), deadline())
    assert (report.recorded, report.audiences, report.next_tick) == (1, 0, INDEX_LAG_SECONDS)
    assert make_sync(aws, writer).sync([QueuedRecord("tick", TICK_BODY)], deadline()).added == 1  # the tick
