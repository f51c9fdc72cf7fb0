"""The pending log's protocol, on the in-process state table (bench/sim_aws/, checked against moto in
test_sim_aws.py): what a record holds inline and what goes to the log, the audience lease and its owner, and
what a finish removes, keeps and lists again when a record or another holder came in between."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from bench.sim_aws import InProcessDynamoDB
from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.pending_log import Lease, PendingLog
from ld_audiences.pending_record import INLINE_BYTES
from ld_audiences.writers import Target
from tests.unit.doubles import TABLE, InProcessTable, in_process_table

START = 1_800_000_000.0
AUDIENCE = Target("aud_1", "beta_testers", "user")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(clock: Clock) -> InProcessTable:
    return in_process_table(clock)


@pytest.fixture
def db(table: InProcessTable) -> InProcessDynamoDB:
    return table.db


@pytest.fixture
def client(table: InProcessTable) -> Any:
    return table.client


@pytest.fixture
def log(client: Any, clock: Clock) -> PendingLog:
    return PendingLog(client, TABLE, clock=clock)


def changes(*keys: str, second: int = 0) -> list[MembershipChange]:
    return [
        MembershipChange(
            audience_id=AUDIENCE.audience_id,
            audience_key=AUDIENCE.audience_key,
            context_kind=AUDIENCE.context_kind,
            context_key=key,
            included=True,
            event_time=f"2026-11-20T10:00:{second:02d}.000000000Z",
            message_id=f"personas_{key}_{second}",
            received_at=START,
        )
        for key in keys
    ]


def work_item(client: Any) -> dict[str, Any]:
    key = t.work_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind)
    found: dict[str, Any] = client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]
    return found


def inline_names(client: Any) -> list[str]:
    return sorted(name for name in work_item(client) if name.startswith(t.INLINE_PREFIX))


def log_items(client: Any) -> int:
    return sum(
        client.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": t.pending_partition(AUDIENCE.audience_id, "user", shard)}},
        )["Count"]
        for shard in range(t.PENDING_SHARDS)
    )


def take(log: PendingLog, clock: Clock, seconds: float = 30) -> Lease:
    lease = log.take(AUDIENCE.audience_id, AUDIENCE.context_kind, clock.now + seconds)
    assert lease is not None
    return lease


def keys_read(log: PendingLog, lease: Lease) -> list[str]:
    return sorted(c.context_key for item in log.read(lease, 1000).items for c in item.changes)


def finish_all(log: PendingLog, lease: Lease, clock: Clock) -> None:
    read = log.read(lease, 1000)
    log.finish(lease, read.items, read.rest_since, started=clock.now)


def test_a_few_changes_are_held_in_the_work_item_and_list_the_audience(log: PendingLog, client: Any) -> None:
    assert log.record([(AUDIENCE, changes("u1", "u2"))]) == set()
    assert log_items(client) == 0 and len(inline_names(client)) == 1
    item = work_item(client)
    assert int(item[t.INLINE_BYTES]["N"]) == sum(len(n) + len(item[n]["B"]) for n in inline_names(client))
    assert [a for a, _, _ in log.pending_audiences()] == [AUDIENCE.audience_id]


def test_a_batch_too_big_to_hold_goes_to_the_log(log: PendingLog, client: Any) -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20)]  # keys that do not compress
    log.record([(AUDIENCE, changes(*keys))])
    assert log_items(client) == 1 and inline_names(client) == []
    assert [a for a, _, _ in log.pending_audiences()] == [AUDIENCE.audience_id]


def logged_changes(client: Any) -> int:
    return sum(
        int(item[t.COUNT]["N"])
        for shard in range(t.PENDING_SHARDS)
        for item in client.query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": t.pending_partition(AUDIENCE.audience_id, "user", shard)}},
        )["Items"]
    )


def test_records_fill_the_work_item_then_compact_into_the_log_and_a_reconcile_reads_and_clears_both(
    log: PendingLog, client: Any, clock: Clock
) -> None:
    recorded = []
    for i in range(12):
        clock.now += 1
        log.record([(AUDIENCE, changes(f"user-{i:02d}", second=i))])
        recorded.append(f"user-{i:02d}")
    held, logged = len(inline_names(client)), logged_changes(client)
    assert 1 <= log_items(client) < logged and held + logged == 12  # a log item holds a work item's worth
    assert int(work_item(client)[t.INLINE_BYTES]["N"]) <= INLINE_BYTES
    lease = take(log, clock)
    assert keys_read(log, lease) == recorded
    finish_all(log, lease, clock)
    item = work_item(client)
    assert inline_names(client) == [] and log_items(client) == 0 and list(log.pending_audiences()) == []
    assert not {t.INLINE_BYTES, t.PENDING_SINCE, t.LEASE_OWNER, t.PENDING_NEWEST} & set(item)


def test_a_change_recorded_during_a_reconcile_stays_pending_and_nothing_resolved_is_read_again(
    log: PendingLog, client: Any, clock: Clock
) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    lease = take(log, clock)
    read = log.read(lease, 1000)
    clock.now += 1
    log.record([(AUDIENCE, changes("u2", second=1))])  # while the reconcile writes u1
    log.finish(lease, read.items, read.rest_since, started=clock.now)
    assert [a for a, _, _ in log.pending_audiences()] == [AUDIENCE.audience_id]
    (name,) = inline_names(client)
    assert int(work_item(client)[t.INLINE_BYTES]["N"]) == len(name) + len(work_item(client)[name]["B"])
    assert keys_read(log, take(log, clock)) == ["u2"]


def test_one_holder_at_a_time_until_its_lease_runs_out(log: PendingLog, clock: Clock) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    first = take(log, clock, seconds=30)
    assert log.take(AUDIENCE.audience_id, AUDIENCE.context_kind, clock.now + 30) is None
    clock.now += 31
    second = take(log, clock)
    assert second.owner != first.owner


def test_a_holder_whose_lease_ran_out_changes_nothing_of_the_next_holders(
    log: PendingLog, client: Any, clock: Clock
) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    late = take(log, clock, seconds=30)
    late_read = log.read(late, 1000)
    clock.now += 31
    current = take(log, clock)
    log.finish(late, late_read.items, None, started=clock.now)  # nothing left, it believes
    item = work_item(client)
    assert item[t.LEASE_OWNER]["S"] == current.owner and t.PENDING_SINCE in item
    assert len(inline_names(client)) == 1  # u1 stays for the current holder, who may not have written it yet
    assert keys_read(log, current) == ["u1"]


def test_changes_not_resolved_stay_pending_from_when_they_were_recorded(
    log: PendingLog, client: Any, clock: Clock
) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    clock.now += 5
    log.record([(AUDIENCE, changes("u2", second=1))])
    lease = take(log, clock)
    items = log.read(lease, 1000).items
    assert [c.context_key for item in items for c in item.changes] == ["u1", "u2"]
    log.finish(lease, items[1:], items[0].received_at, started=clock.now)  # u1 could not be written
    assert [since for _, _, since in log.pending_audiences()] == [START]
    assert keys_read(log, take(log, clock)) == ["u1"]


def test_a_held_lease_keeps_others_out_until_the_pause_ends(log: PendingLog, clock: Clock) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    lease = take(log, clock)
    items = log.read(lease, 1000).items
    log.finish(lease, [], items[0].received_at, started=clock.now, hold_until=clock.now + 5)
    assert log.take(AUDIENCE.audience_id, AUDIENCE.context_kind, clock.now + 30) is None
    clock.now += 6
    assert keys_read(log, take(log, clock)) == ["u1"]


def test_a_late_holder_that_lists_the_audience_again_leaves_the_next_holders_lease(
    log: PendingLog, client: Any, clock: Clock
) -> None:
    log.record([(AUDIENCE, changes("u1"))])
    late = take(log, clock, seconds=30)
    items = log.read(late, 1000).items
    clock.now += 31
    current = take(log, clock)
    log.finish(late, [], items[0].received_at, started=clock.now)  # u1 not written, it says
    item = work_item(client)
    assert item[t.LEASE_OWNER]["S"] == current.owner and float(item[t.LEASE_UNTIL]["N"]) == current.until


def fill_inline(log: PendingLog, client: Any, clock: Clock) -> list[str]:
    """Records single changes until the next one would not fit in the work item; returns their keys."""
    keys: list[str] = []
    while not keys or int(work_item(client)[t.INLINE_BYTES]["N"]) + 100 <= INLINE_BYTES:
        clock.now += 1
        keys.append(f"user-{len(keys):02d}")
        log.record([(AUDIENCE, changes(keys[-1], second=len(keys) % 60))])
    assert log_items(client) == 0
    return keys


def test_a_full_work_item_is_compacted_into_one_log_item(
    log: PendingLog, client: Any, clock: Clock, db: InProcessDynamoDB
) -> None:
    """The next record moves the inline changes and its own into one log item, in two writes (the log item,
    the listing that removes what it moved), not one log item, listing and delete per change."""
    held = fill_inline(log, client, clock)
    before = db.usage.write_units
    clock.now += 1
    log.record([(AUDIENCE, changes("late"))])
    assert db.usage.write_units - before == 2
    assert inline_names(client) == [] and log_items(client) == 1 and logged_changes(client) == len(held) + 1
    assert int(work_item(client)[t.INLINE_BYTES]["N"]) == 0
    assert [since for _, _, since in log.pending_audiences()] == [START + 1]  # still pending since the first
    lease = take(log, clock)
    assert keys_read(log, lease) == sorted([*held, "late"])
    assert log.read(lease, 1000).items[0].received_at == START + 1  # the log item is as old as its oldest change
    finish_all(log, lease, clock)
    assert log_items(client) == 0 and list(log.pending_audiences()) == []


def test_a_full_work_item_under_a_live_lease_is_not_compacted(log: PendingLog, client: Any, clock: Clock) -> None:
    """Its holder's finish removes the inline changes its take returned and frees their bytes: a compaction
    meanwhile would free them twice. The record goes to the log on its own."""
    held = fill_inline(log, client, clock)
    lease = take(log, clock)
    read = log.read(lease, 1000)
    log.record([(AUDIENCE, changes("late"))])
    assert inline_names(client) != [] and logged_changes(client) == 1
    log.finish(lease, read.items, read.rest_since, started=clock.now)
    assert inline_names(client) == [] and int(work_item(client)[t.INLINE_BYTES]["N"]) == 0
    assert keys_read(log, take(log, clock, seconds=30)) == ["late"] and len(held) > 1


def test_a_stale_read_that_missed_a_live_lease_does_not_compact(
    log: PendingLog, client: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work item's condition, not the read, keeps a compaction away from a holder's inline changes: the
    holder's finish frees their bytes exactly once."""
    held = fill_inline(log, client, clock)
    stale = work_item(client)  # before the take
    lease = take(log, clock)
    read = log.read(lease, 1000)
    monkeypatch.setattr(log._batch, "get", lambda *args, **kwargs: [stale])
    log.record([(AUDIENCE, changes("late"))])
    log.finish(lease, read.items, read.rest_since, started=clock.now)
    assert inline_names(client) == [] and int(work_item(client)[t.INLINE_BYTES]["N"]) == 0
    assert keys_read(log, take(log, clock)) == sorted([*held, "late"])  # copies of what was written, and late


def test_a_compaction_on_a_stale_read_lists_the_audience_and_loses_nothing(
    log: PendingLog, client: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorder read the full work item before a reconcile resolved its changes: the compaction's condition
    (every moved attribute still there) fails, the new change is listed, and the copies of resolved changes
    are read again once and found written (the reconcile's context state), never lost or counted twice."""
    held = fill_inline(log, client, clock)
    stale = work_item(client)
    finish_all(log, take(log, clock), clock)  # the reconcile resolves them
    monkeypatch.setattr(log._batch, "get", lambda *args, **kwargs: [stale])
    clock.now += 1
    log.record([(AUDIENCE, changes("late"))])
    assert t.INLINE_BYTES not in work_item(client) and inline_names(client) == []
    assert [a for a, _, _ in log.pending_audiences()] == [AUDIENCE.audience_id]
    assert keys_read(log, take(log, clock)) == sorted([*held, "late"])


def test_a_stale_read_of_the_work_item_never_overfills_it(
    log: PendingLog, client: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a recorder read of the work item may be stale (another recorder filled it meanwhile): the write
    itself refuses to go past INLINE_BYTES, and the record compacts the work item as the refusal shows it."""
    held = fill_inline(log, client, clock)
    monkeypatch.setattr(log._batch, "get", lambda *args, **kwargs: [])  # as if the work item were empty
    log.record([(AUDIENCE, changes("late"))])
    assert int(work_item(client)[t.INLINE_BYTES]["N"]) == 0 and inline_names(client) == []
    assert logged_changes(client) == len(held) + 1
    assert "late" in keys_read(log, take(log, clock))
