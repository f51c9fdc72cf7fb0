"""What becomes of each queued record and of each change in one sync invocation, and the report that holds
them: what the handler turns into `batchItemFailures`, log lines and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ld_audiences.change import MembershipChange


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    record_id: str  # the SQS messageId, what batchItemFailures names
    body: str
    receipt_handle: str = ""


class DeadLetters(Protocol):
    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        """Move a record that can never succeed to the dead-letter queue; False if that failed."""


# What can become of a queued record.
RECORDED = "recorded"  # in its audience's pending log: SQS may forget it
TICK = "tick"  # a reconcile-only message: nothing to record
RETRY = "retry"  # could not be recorded: back to SQS, which counts it toward the dead-letter queue
# ... and of a change (a record's, once recorded).
ADDED, REMOVED = "added", "removed"
SUPERSEDED = "superseded"  # a newer change to the same context came with it
STALE = "stale"  # a newer change is already in LaunchDarkly
DUPLICATE = "duplicate"  # this very change is already in LaunchDarkly
DEAD_LETTERED = "dead_lettered"  # can never succeed: moved to the dead-letter queue (records and changes)
RETIRED = "retired"  # its audience is retired (`ld-audiences retire`): skipped


class RecordOutcome(NamedTuple):
    record_id: str
    message_id: str | None  # Segment's messageId (None when the body is unreadable): the correlation id
    audience_id: str | None
    result: str
    detail: str = ""


class ChangeOutcome(NamedTuple):
    message_id: str
    audience_id: str
    result: str
    detail: str = ""
    age: float | None = None  # for a written change: seconds from ingest's receipt to LaunchDarkly's answer


class _Count:
    """A read-only SyncReport attribute: how many records or changes ended with one result."""

    def __init__(self, result: str) -> None:
        self.result = result

    def __get__(self, report: SyncReport, owner: type | None = None) -> int:
        return report.counts[self.result]


@dataclass(slots=True)
class SyncReport:
    records: list[RecordOutcome] = field(default_factory=list)  # one per record of the batch
    changes: list[ChangeOutcome] = field(default_factory=list)  # one per change resolved by the reconcile
    counts: Counter[str] = field(default_factory=Counter)
    # Contexts whose newest state must be written again after a delay (seconds): a late apply's repair.
    reasserts: list[tuple[MembershipChange, float]] = field(default_factory=list)
    audiences: int = 0  # audiences reconciled (one lease each)
    # Seconds until a reconcile-only invocation should run (work left and nothing else due to come); None: none.
    next_tick: float | None = None
    continue_now: bool = False  # the reconcile budget ran out with work left: go on in another invocation now
    token_refused: str | None = None  # LaunchDarkly refused the token ("401 unauthorized"): read the secret again
    oldest_pending: float | None = None  # epoch seconds the oldest pending change was recorded; None: none

    def note_record(self, record: QueuedRecord, change: MembershipChange | None, result: str, detail: str = "") -> None:
        message_id, audience_id = (change.message_id, change.audience_id) if change else (None, None)
        self.records.append(RecordOutcome(record.record_id, message_id, audience_id, result, detail))
        self.counts[result] += 1

    def note_change(self, change: MembershipChange, result: str, detail: str = "", age: float | None = None) -> None:
        self.changes.append(ChangeOutcome(change.message_id, change.audience_id, result, detail, age))
        self.counts[result] += 1

    def merge(self, other: SyncReport) -> None:
        self.records += other.records
        self.changes += other.changes
        self.counts.update(other.counts)
        self.reasserts += other.reasserts
        self.audiences += other.audiences
        self.token_refused = self.token_refused or other.token_refused

    def tick_in(self, seconds: float) -> None:
        self.next_tick = seconds if self.next_tick is None else min(self.next_tick, seconds)

    @property
    def failed(self) -> list[str]:
        """The record ids SQS must deliver again."""
        return [o.record_id for o in self.records if o.result == RETRY]

    recorded = _Count(RECORDED)
    added = _Count(ADDED)
    removed = _Count(REMOVED)
    superseded = _Count(SUPERSEDED)
    stale = _Count(STALE)
    duplicates = _Count(DUPLICATE)
    dead_lettered = _Count(DEAD_LETTERED)
    retired = _Count(RETIRED)
