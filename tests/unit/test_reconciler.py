"""`AudienceReconciler`: one leased audience's pending changes brought to LaunchDarkly, on in-process doubles (the
state table in bench/sim_aws.py's DynamoDB, a scripted LaunchDarkly, a fake pending log). What is written, in
which requests, what is recorded as LaunchDarkly's, what is dead-lettered and why, and how the audience is
handed back (done items, what stays pending, how long the lease is held, when to come back)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ld_audiences.context_state import ContextStates
from ld_audiences.launchdarkly import WriteError
from ld_audiences.outcomes import ADDED, REMOVED, SyncReport
from ld_audiences.pending_log import Lease
from ld_audiences.reconcile import (
    FAILURE_PAUSE_SECONDS,
    ISOLATED_KEYS_BUDGET,
    MAX_DELAY_SECONDS,
    AudienceReconciler,
)
from ld_audiences.writers import Target
from tests.unit.doubles import (
    AUDIENCE,
    NOW,
    FakeDeadLetters,
    FakeLog,
    InProcessTable,
    ScriptedLaunchDarkly,
    change,
    in_process_table,
    refused,
)

LEASE = Lease(AUDIENCE, "owner-1", until=NOW + 30, seq=1)
RECHECKS = (30, 900)


@pytest.fixture
def table() -> InProcessTable:
    return in_process_table(lambda: NOW)


class Setup:
    def __init__(self, table: InProcessTable, writer: ScriptedLaunchDarkly, log: FakeLog, **options: Any) -> None:
        self.table, self.writer, self.log = table, writer, log
        self.states = ContextStates(options.pop("client", table.client), table.table, clock=lambda: NOW)
        self.dead_letters = options.pop("dead_letters", FakeDeadLetters())
        self.reconciler = AudienceReconciler(
            writer=writer,
            log=log,  # type: ignore[arg-type]
            states=self.states,
            dead_letters=self.dead_letters,
            chunk_size=options.pop("chunk_size", 4),
            chunks_per_round=options.pop("chunks_per_round", 10),
            late_apply_rechecks=RECHECKS,
            clock=lambda: NOW,
            **options,
        )

    def run(self, lease: Lease = LEASE) -> tuple[SyncReport, float | None]:
        return self.reconciler.reconcile(lease, lease.until - 5, NOW)

    def applied(self, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
        found = self.states.read(AUDIENCE.audience_id, AUDIENCE.context_kind, keys)
        return {key: (a.order, a.included) for key, a in found.items()}


def keys(n: int) -> list[str]:
    return [f"u{i:02d}" for i in range(n)]


def test_chunks_split_the_writes_without_overlap_and_every_key_is_counted_once(table: InProcessTable) -> None:
    pending = [change(k, True) for k in keys(9)] + [change("gone", False)]
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog(pending), chunk_size=4)
    report, wait = setup.run()
    assert [len(r.add) + len(r.remove) for r in setup.writer.requests] == [4, 4, 2]
    assert sorted(setup.writer.sent) == sorted(c.context_key for c in pending)
    assert (report.added, report.removed, report.audiences, wait) == (9, 1, 1, None)
    assert setup.applied([c.context_key for c in pending]) == {c.context_key: (c.order, c.included) for c in pending}
    [finished] = setup.log.finished
    assert (len(finished.done), finished.rest_since, finished.hold_until) == (1, None, None)
    assert report.next_tick is None  # nothing left


def test_a_round_reads_at_most_its_chunks_of_changes(table: InProcessTable) -> None:
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([change("u1")]), chunk_size=7, chunks_per_round=3)
    setup.run()
    assert setup.log.max_changes == [21]


def test_an_audiences_changes_from_many_batches_go_in_one_request(table: InProcessTable) -> None:
    batches = [[change(f"b{b}-{i}", True, b) for i in range(3)] for b in range(4)]
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog(*batches), chunk_size=100)
    report, _ = setup.run()
    assert len(setup.writer.requests) == 1 and report.added == 12
    assert len(setup.log.finished[0].done) == 4


def test_per_context_only_the_newest_change_is_written_and_older_ones_are_resolved_with_it(
    table: InProcessTable,
) -> None:
    log = FakeLog([change("u1", True, 1), change("u2", True, 1)], [change("u1", False, 2)])
    setup = Setup(table, ScriptedLaunchDarkly(), log)
    report, _ = setup.run()
    assert setup.writer.requests[0].add == ["u2"] and setup.writer.requests[0].remove == ["u1"]
    assert (report.added, report.removed, report.superseded) == (1, 1, 1)
    assert len(setup.log.finished[0].done) == 2


def test_what_launchdarkly_has_is_not_written_again_and_older_changes_are_stale(table: InProcessTable) -> None:
    have = change("u1", True, 5)
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([have]))
    setup.run()
    for pending, counted in (([have], "duplicates"), ([change("u1", False, 4)], "stale")):
        again = Setup(table, ScriptedLaunchDarkly(), FakeLog(pending))
        report, _ = again.run()
        assert again.writer.requests == [] and getattr(report, counted) == 1
        assert len(again.log.finished[0].done) == 1  # resolved: nothing left to write
    assert again.applied(["u1"]) == {"u1": (have.order, True)}


def test_a_refused_key_is_isolated_the_rest_of_its_chunk_lands_and_it_is_dead_lettered_with_the_reason(
    table: InProcessTable,
) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if "u05" in sent else None)
    pending = [change(k) for k in keys(16)]
    setup = Setup(table, writer, FakeLog(pending), chunk_size=16)
    report, _ = setup.run()
    assert writer.included == set(keys(16)) - {"u05"}
    assert (report.added, report.dead_lettered) == (15, 1)
    assert len(writer.requests) == 1 + 2 * 4  # the chunk, then two halves per level down to one key
    [letter] = setup.dead_letters.letters
    assert (letter.change.context_key, letter.reason) == ("u05", "launchdarkly_400_invalid_request")
    assert "u05" not in setup.applied(keys(16)) and len(setup.applied(keys(16))) == 15
    assert setup.log.finished[0].rest_since is None  # dead-lettered is resolved


def test_a_refused_chunk_stops_no_later_chunk(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if "u00" in sent else None)
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(8)]), chunk_size=4)
    report, _ = setup.run()
    assert (report.added, report.dead_lettered) == (7, 1) and writer.included == set(keys(8)) - {"u00"}


@pytest.mark.parametrize("bad", [{"u00", "u15"}, {"u03", "u04", "u11"}])
def test_only_refused_keys_are_dead_lettered_however_they_are_spread(table: InProcessTable, bad: set[str]) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if bad & sent else None)
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(16)]), chunk_size=16)
    report, _ = setup.run()
    assert {letter.change.context_key for letter in setup.dead_letters.letters} == bad
    assert report.added == 16 - len(bad) and writer.included == set(keys(16)) - bad


def test_isolation_stops_at_its_budget_and_dead_letters_the_rest_as_it_is(table: InProcessTable) -> None:
    everything = [f"u{i:04d}" for i in range(1000)]
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400))
    setup = Setup(table, writer, FakeLog([change(k) for k in everything]), chunk_size=1000)
    report, _ = setup.run()
    assert (report.added, report.dead_lettered) == (0, 1000)
    budget = 2 * ISOLATED_KEYS_BUDGET * math.ceil(math.log2(1000))
    assert budget - 2 < len(writer.requests) - 1 <= budget


def test_a_refusal_other_than_400_is_not_isolated(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(404, "not_found"))
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(4)]), chunk_size=4)
    report, _ = setup.run()
    assert len(writer.requests) == 1 and report.dead_lettered == 4
    assert {letter.reason for letter in setup.dead_letters.letters} == {"launchdarkly_404_not_found"}


def test_a_change_the_dead_letter_queue_does_not_take_stays_pending(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if "bad" in sent else None)
    log = FakeLog([change("ok")], [change("bad")])
    setup = Setup(table, writer, log, dead_letters=FakeDeadLetters(working=False))
    report, _ = setup.run()
    assert (report.added, report.dead_lettered) == (1, 0)
    [finished] = setup.log.finished
    assert [item.changes[0].context_key for item in finished.done] == ["ok"]
    assert finished.rest_since == log.items[1].received_at
    assert report.next_tick == 0.0  # come back for it


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_stops_the_round_and_dead_letters_nothing(table: InProcessTable, status: int) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(status, "unauthorized"))
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(8)]), chunk_size=4)
    report, _ = setup.run()
    assert report.token_refused == f"{status} unauthorized"
    assert len(writer.requests) == 1 and setup.dead_letters.letters == []
    [finished] = setup.log.finished
    assert (finished.done, finished.rest_since) == ([], setup.log.items[0].received_at)


def test_a_token_refused_again_after_a_fresh_read_is_final(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(401, "unauthorized"))
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(2)]), token_refusal_is_final=True)
    report, _ = setup.run()
    assert report.token_refused is None and report.dead_lettered == 2
    assert {letter.reason for letter in setup.dead_letters.letters} == {"launchdarkly_401_unauthorized"}


def test_a_failing_launchdarkly_keeps_the_changes_pending_and_pauses_the_audience(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: WriteError(False, 503, "unavailable", "later"))
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(8)]), chunk_size=4)
    report, wait = setup.run()
    assert len(writer.requests) == 1 and (report.added, report.dead_lettered, wait) == (0, 0, None)
    [finished] = setup.log.finished
    assert finished.done == [] and finished.hold_until == NOW + FAILURE_PAUSE_SECONDS
    assert report.next_tick == FAILURE_PAUSE_SECONDS
    assert setup.applied(keys(8)) == {}


def test_a_failure_while_isolating_stops_the_round(table: InProcessTable) -> None:
    def refuse(sent: set[str]) -> WriteError | None:
        if len(sent) == 8:
            return refused(400)
        return WriteError(False, 502, "bad_gateway", "later")

    writer = ScriptedLaunchDarkly(refuse=refuse)
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(8)]), chunk_size=8)
    report, _ = setup.run()
    assert len(writer.requests) == 2 and report.dead_lettered == 0
    assert setup.log.finished[0].hold_until == NOW + FAILURE_PAUSE_SECONDS


def test_a_spent_rate_limit_window_is_no_failure_the_round_says_when_to_come_back(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(
        refuse=lambda sent: WriteError(False, None, "rate_limited", "window spent", retry_after=7.5)
    )
    setup = Setup(table, writer, FakeLog([change(k) for k in keys(8)]), chunk_size=4)
    report, wait = setup.run()
    assert wait == 7.5 and len(writer.requests) == 1
    assert report.next_tick == 7.5 and setup.log.finished[0].hold_until is None
    assert (report.dead_lettered, report.added) == (0, 0)


def test_an_unknown_outcome_keeps_the_lease_and_the_contexts_are_written_again_after_it(
    table: InProcessTable,
) -> None:
    writer = ScriptedLaunchDarkly(
        refuse=lambda sent: WriteError(False, None, "timeout", "no answer", outcome_unknown=True)
    )
    setup = Setup(table, writer, FakeLog([change("u1"), change("u2", False)]))
    report, _ = setup.run()
    [finished] = setup.log.finished
    assert finished.hold_until == LEASE.until and finished.done == []
    assert report.next_tick == LEASE.until - NOW
    rechecks = sorted((c.context_key, c.reassert, delay) for c, delay in report.reasserts)
    lease_left = LEASE.until - NOW
    assert rechecks == [
        ("u1", True, lease_left + 30),
        ("u1", True, MAX_DELAY_SECONDS),
        ("u2", True, lease_left + 30),
        ("u2", True, MAX_DELAY_SECONDS),
    ]
    assert all(c.received_at is None for c, _ in report.reasserts)


def test_a_write_that_landed_after_an_unanswered_attempt_is_recorded_and_checked_again(
    table: InProcessTable,
) -> None:
    setup = Setup(table, ScriptedLaunchDarkly(late=True), FakeLog([change("u1")]))
    report, _ = setup.run()
    assert report.added == 1 and setup.log.finished[0].hold_until is None
    assert [(c.context_key, c.reassert) for c, _ in report.reasserts] == [("u1", True)] * 2


def test_a_reassert_writes_the_recorded_state_even_when_it_is_applied(table: InProcessTable) -> None:
    """The late-apply repair: LaunchDarkly may have applied an old write after the newer one."""
    member = change("u1", True, 5)
    Setup(table, ScriptedLaunchDarkly(), FakeLog([member])).run()
    recheck = change("u1", False, 1, reassert=True)
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([recheck, member]))
    report, _ = setup.run()
    assert [(r.add, r.remove) for r in setup.writer.requests] == [(["u1"], [])]
    assert (report.added, report.duplicates) == (1, 1)


def test_a_retired_audience_gets_removals_and_keeps_the_members_engage_sent(table: InProcessTable) -> None:
    member = change("u1", True, 5)
    Setup(table, ScriptedLaunchDarkly(), FakeLog([member])).run()
    retired = Lease(AUDIENCE, "owner-2", until=NOW + 30, seq=2, retired_at=NOW)
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([change("u1", True, 9), change("u2", True, 9)]))
    report, _ = setup.run(retired)
    assert [(r.add, r.remove) for r in setup.writer.requests] == [([], ["u1"])]
    assert (report.removed, report.retired) == (1, 2)
    assert setup.applied(["u1", "u2"]) == {"u1": (member.order, True)}  # for `retire --undo` then `resync`
    assert len(setup.log.finished[0].done) == 1


class FailingBatchWrites:
    """The state table's client, with every BatchWriteItem failing (after botocore's retries)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def batch_write_item(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "BatchWriteItem")


def test_a_write_that_cannot_be_recorded_stays_pending(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly()
    setup = Setup(table, writer, FakeLog([change("u1")]), client=FailingBatchWrites(table.client))
    report, _ = setup.run()
    assert writer.included == {"u1"} and report.added == 0
    assert setup.log.finished[0].done == [] and report.next_tick == 0.0


class FailingSummary:
    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_item(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "UpdateItem")


def test_the_summary_for_status_failing_fails_no_write(table: InProcessTable) -> None:
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([change("u1")]), client=FailingSummary(table.client))
    report, _ = setup.run()
    assert report.added == 1 and len(setup.log.finished[0].done) == 1


def test_chunks_recorded_on_a_pool_while_the_next_is_written_end_the_same(table: InProcessTable) -> None:
    pending = [change(k, i % 3 != 0) for i, k in enumerate(keys(10))]
    with ThreadPoolExecutor(2) as pool:
        setup = Setup(table, ScriptedLaunchDarkly(), FakeLog(pending), chunk_size=3, record_pool=pool)
        report, _ = setup.run()
    assert (report.added, report.removed) == (6, 4)
    assert setup.applied(keys(10)) == {c.context_key: (c.order, c.included) for c in pending}
    outcomes = sorted((o.message_id, o.result) for o in report.changes)
    assert outcomes == sorted((c.message_id, ADDED if c.included else REMOVED) for c in pending)


def test_the_age_of_a_written_change_counts_from_its_receipt(table: InProcessTable) -> None:
    setup = Setup(table, ScriptedLaunchDarkly(), FakeLog([change("u1")]))
    report, _ = setup.run()
    [outcome] = report.changes
    assert (outcome.result, outcome.age) == (ADDED, 10.0)


def test_other_audiences_are_unaffected_by_one_refused(table: InProcessTable) -> None:
    other = Target("aud_2", "other", "user")
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if sent & {"x1"} else None)
    setup = Setup(table, writer, FakeLog([change("x1")]))
    setup.run()
    healthy = Setup(table, writer, FakeLog([change("y1", target=other)]))
    report, _ = healthy.run(Lease(other, "owner-3", until=NOW + 30, seq=1))
    assert report.added == 1 and report.dead_lettered == 0
    assert [letter.change.context_key for letter in setup.dead_letters.letters] == ["x1"]
    assert {o.result for o in report.changes} == {ADDED}


def test_an_item_is_done_only_when_every_change_in_it_is_resolved(table: InProcessTable) -> None:
    writer = ScriptedLaunchDarkly(refuse=lambda sent: refused(400) if "u2" in sent else None)
    log = FakeLog([change("u1"), change("u2")], [change("u3")])
    setup = Setup(table, writer, log, chunk_size=1, dead_letters=FakeDeadLetters(working=False))
    report, _ = setup.run()
    assert report.added == 2 and writer.included == {"u1", "u3"}
    [finished] = setup.log.finished
    assert finished.done == [log.items[1]] and finished.rest_since == log.items[0].received_at
