"""What goes back to SQS after an invocation (`requeue.settle`) from the invocation's report (`SyncReport`):
records SQS must deliver again, the delayed rechecks, and at most one tick."""

from __future__ import annotations

from collections.abc import Sequence

from ld_audiences.outcomes import ADDED, DEAD_LETTERED, RECORDED, RETRY, STALE, TICK, QueuedRecord, SyncReport
from ld_audiences.requeue import settle
from ld_audiences.sqs_queue import Message
from ld_audiences.sync import TICK_BODY
from tests.unit.doubles import change


class Queue:
    def __init__(self, lost: Sequence[int] = ()) -> None:
        self.sent: list[list[Message]] = []
        self.lost = list(lost)

    def send_messages(self, messages: Sequence[Message]) -> list[int]:
        self.sent.append(list(messages))
        return [i for i in self.lost if i < len(messages)]


def never(seconds: float) -> bool:
    return False


def always(seconds: float) -> bool:
    return True


def test_only_records_that_could_not_be_recorded_go_back_to_sqs() -> None:
    report = SyncReport()
    report.note_record(QueuedRecord("r1", "{}"), change("u1"), RECORDED)
    report.note_record(QueuedRecord("r2", "{}"), change("u2"), RETRY, "throttled")
    report.note_record(QueuedRecord("r3", "x"), None, RETRY)
    report.note_record(QueuedRecord("r4", "x"), None, DEAD_LETTERED, "invalid_message")
    report.note_record(QueuedRecord("r5", TICK_BODY), None, TICK)
    settled = settle(report, Queue(), never)
    assert settled.failures == ["r2", "r3"] and (settled.reasserts, settled.tick) == (0, False)
    assert (report.recorded, report.records[2].message_id) == (1, None)


def test_rechecks_are_queued_with_their_delay_rounded_up_and_lost_ones_are_not_counted() -> None:
    report = SyncReport()
    report.reasserts = [(change("u1", reassert=True), 35.2), (change("u2", reassert=True), 900.0)]
    queue = Queue(lost=[1])
    settled = settle(report, queue, never)
    [sent] = queue.sent
    assert [(m.body, m.delay_seconds) for m in sent] == [
        (change("u1", reassert=True).to_message(), 36),
        (change("u2", reassert=True).to_message(), 900),
    ]
    assert settled.reasserts == 1


def test_a_tick_is_queued_when_work_is_left_and_none_is_due_sooner() -> None:
    report = SyncReport()
    report.tick_in(7.0)
    report.tick_in(2.5)  # the soonest wins
    asked: list[float] = []

    def due(seconds: float) -> bool:
        asked.append(seconds)
        return True

    queue = Queue()
    assert settle(report, queue, due).tick is True
    assert asked == [2.5] and [(m.body, m.delay_seconds) for m in queue.sent[0]] == [(TICK_BODY, 3)]
    assert settle(report, Queue(), never).tick is False


def test_a_budget_spent_with_work_left_continues_at_once() -> None:
    report = SyncReport(continue_now=True)
    report.tick_in(30.0)
    queue = Queue()
    assert settle(report, queue, never).tick is True
    assert [(m.body, m.delay_seconds) for m in queue.sent[0]] == [(TICK_BODY, 0)]
    assert settle(report, Queue(lost=[0]), always).tick is False  # the schedule reconciles instead


def test_nothing_left_queues_nothing() -> None:
    queue = Queue()
    assert settle(SyncReport(), queue, always).tick is False and queue.sent == []


def test_reports_merge_their_outcomes_and_keep_a_token_refusal() -> None:
    one, two = SyncReport(audiences=1), SyncReport(audiences=2, token_refused="401 unauthorized")
    one.note_change(change("u1"), ADDED, age=1.5)
    two.note_change(change("u2"), STALE)
    two.reasserts.append((change("u2", reassert=True), 30.0))
    one.merge(two)
    assert (one.added, one.stale, one.audiences, one.token_refused, len(one.reasserts)) == (
        1,
        1,
        3,
        "401 unauthorized",
        1,
    )
    one.merge(SyncReport())
    assert one.token_refused == "401 unauthorized"
    assert [c.result for c in one.changes] == [ADDED, STALE] and one.changes[0].age == 1.5
