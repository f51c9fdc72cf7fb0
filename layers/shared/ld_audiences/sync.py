"""The sync decision, free of Lambda: a batch of queued changes in, LaunchDarkly writes out, and the
exact records to retry back.

Per batch: keep each context's newest change (older ones in the batch are superseded), group by
segment, claim each context in the state store (drops stale changes and duplicates, takes turns with
concurrent invocations), write in chunks, confirm.
A segment's failure never fails another's; a chunk's failure fails only its records, and a chunk refused
for one invalid key is halved until that key stands alone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pydantic import ValidationError

from ld_audiences.change import MembershipChange
from ld_audiences.launchdarkly import WriteError
from ld_audiences.state import ClaimResult, StateStore
from ld_audiences.writers import SegmentWriter, Target

logger = logging.getLogger(__name__)

# How long a batch waits for contexts that another invocation is writing before leaving them to SQS.
BUSY_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    record_id: str  # the SQS messageId, what batchItemFailures names
    body: str


class DeadLetters(Protocol):
    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        """Move a record that can never succeed to the dead-letter queue; False if that failed."""


# What can become of a queued change. The record of a retried one goes back to SQS.
ADDED, REMOVED = "added", "removed"
SUPERSEDED = "superseded"  # a newer change to the same context was in the same batch
STALE = "stale"  # a newer change was already claimed or applied
DUPLICATE = "duplicate"  # this very change was already applied
BUSY = "busy"  # another invocation was writing the same context
RETRY = "retry"  # the write failed or there was no time left
DEAD_LETTERED = "dead_lettered"  # can never succeed: moved to the dead-letter queue
RETRIED = frozenset({BUSY, RETRY})


class ChangeOutcome(NamedTuple):
    record_id: str  # the SQS messageId, what batchItemFailures names
    message_id: str | None  # Segment's messageId (None when the body is unreadable): the correlation id
    audience_id: str | None
    result: str
    detail: str = ""


class _Count:
    """A read-only SyncReport attribute: how many records ended with one result."""

    def __init__(self, result: str) -> None:
        self.result = result

    def __get__(self, report: SyncReport, owner: type | None = None) -> int:
        return report.counts[self.result]


@dataclass(slots=True)
class SyncReport:
    outcomes: list[ChangeOutcome] = field(default_factory=list)  # one per record, in no particular order
    counts: Counter[str] = field(default_factory=Counter)

    def note(self, record: QueuedRecord, change: MembershipChange | None, result: str, detail: str = "") -> None:
        message_id, audience_id = (change.message_id, change.audience_id) if change else (None, None)
        self.outcomes.append(ChangeOutcome(record.record_id, message_id, audience_id, result, detail))
        self.counts[result] += 1

    @property
    def failed(self) -> list[str]:
        """The record ids for batchItemFailures."""
        return [o.record_id for o in self.outcomes if o.result in RETRIED]

    added = _Count(ADDED)
    removed = _Count(REMOVED)
    superseded = _Count(SUPERSEDED)
    stale = _Count(STALE)
    duplicates = _Count(DUPLICATE)
    busy = _Count(BUSY)
    dead_lettered = _Count(DEAD_LETTERED)


@dataclass(slots=True)
class _Pending:
    change: MembershipChange
    record: QueuedRecord


class Synchronizer:
    def __init__(
        self,
        *,
        writer: SegmentWriter,
        store: StateStore,
        dead_letters: DeadLetters,
        chunk_size: int,
        busy_wait: float = BUSY_WAIT_SECONDS,
    ) -> None:
        self._writer = writer
        self._store = store
        self._dead_letters = dead_letters
        self._chunk_size = chunk_size
        self._busy_wait = busy_wait

    def sync(self, records: Sequence[QueuedRecord], deadline: float) -> SyncReport:
        report = SyncReport()
        for target, pending in self._newest_by_target(records, report).items():
            if time.time() >= deadline:
                # No time left to write: claiming would only take leases and spend the safety margin
                # (past the timeout Lambda drops the whole response and every record comes back).
                self._note_all(pending.values(), RETRY, "deadline", report)
                continue
            try:
                self._sync_target(target, pending, deadline, report)
            except Exception:
                # Isolation: an unexpected error (say DynamoDB throttling) retries this segment only.
                logger.exception("segment sync failed", extra={"audience_id": target.audience_id})
                noted = {o.record_id for o in report.outcomes}
                self._note_all((p for p in pending.values() if p.record.record_id not in noted), RETRY, "error", report)
        return report

    def _newest_by_target(
        self, records: Sequence[QueuedRecord], report: SyncReport
    ) -> dict[Target, dict[str, _Pending]]:
        groups: dict[Target, dict[str, _Pending]] = defaultdict(dict)
        for record in records:
            try:
                change = MembershipChange.from_message(record.body)
            except ValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                self._dead_letter([(record, None)], "invalid_message", detail, report)
                continue
            group = groups[Target(*change.target)]
            current = group.get(change.context_key)
            if current is None or change.order > current.change.order:
                group[change.context_key] = _Pending(change, record)
                if current is not None:
                    report.note(current.record, current.change, SUPERSEDED)
            else:
                report.note(record, change, SUPERSEDED)
        return groups

    def _sync_target(self, target: Target, pending: dict[str, _Pending], deadline: float, report: SyncReport) -> None:
        claim = self._claim([p.change for p in pending.values()], deadline)
        for changes, result in ((claim.stale, STALE), (claim.duplicate, DUPLICATE), (claim.busy, BUSY)):
            self._note_all((pending[c.context_key] for c in changes), result, "", report)
        for chunk in _chunks(claim.claimed, self._chunk_size):
            chunk_pending = [pending[c.context_key] for c in chunk]
            failure = self._write(target, chunk_pending, deadline, report)
            if failure is not None:
                self._isolate(target, chunk_pending, failure, deadline, report)

    def _write(self, target: Target, chunk: list[_Pending], deadline: float, report: SyncReport) -> WriteError | None:
        """Write a chunk of claimed changes; on success record them as applied."""
        add = [p.change.context_key for p in chunk if p.change.included]
        remove = [p.change.context_key for p in chunk if not p.change.included]
        try:
            self._writer.write(target, add, remove, deadline)
        except WriteError as exc:
            return exc
        self._store.confirm([p.change for p in chunk])
        for p in chunk:
            report.note(p.record, p.change, ADDED if p.change.included else REMOVED)
        return None

    def _isolate(
        self, target: Target, chunk: list[_Pending], failure: WriteError, deadline: float, report: SyncReport
    ) -> None:
        """`chunk` failed with `failure`. LaunchDarkly refuses a whole request for one invalid item (400), so
        halve the chunk and write the halves: one bad context key must not hold back a thousand good ones. A
        half refused while the other went through holds the bad key: halve it again (two requests a level).
        Both halves refused means the cause is not one key: both fail without more requests."""
        if failure.status != 400 or len(chunk) == 1:
            self._write_failed(target, chunk, failure, report)
            return
        middle = len(chunk) // 2
        halves = (chunk[:middle], chunk[middle:])
        failures = [self._write(target, half, deadline, report) for half in halves]
        both_refused = all(f is not None and f.status == 400 for f in failures)
        for half, half_failure in zip(halves, failures, strict=True):
            if half_failure is None:
                continue
            if both_refused:
                self._write_failed(target, half, half_failure, report)
            else:
                self._isolate(target, half, half_failure, deadline, report)

    def _claim(self, changes: list[MembershipChange], deadline: float) -> ClaimResult:
        """Claim, waiting a little for contexts another invocation is writing right now: that takes
        well under a second, while failing the record would cost a whole visibility timeout."""
        result = self._store.claim(changes, deadline)
        give_up = min(deadline, time.time() + self._busy_wait)
        pause = 0.05
        while result.busy and time.time() + pause < give_up:
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            retry = self._store.claim(result.busy, deadline)
            result.claimed += retry.claimed
            result.stale += retry.stale
            result.duplicate += retry.duplicate
            result.busy = retry.busy
        return result

    def _write_failed(self, target: Target, chunk: list[_Pending], exc: WriteError, report: SyncReport) -> None:
        changes = [p.change for p in chunk]
        # A write that may still land keeps its leases until they run out (our deadline + margin), so no
        # newer write of these contexts can go first and be overwritten by it.
        if not exc.outcome_unknown:
            self._store.release(changes)
        extra = {
            "audience_id": target.audience_id,
            "status": exc.status,
            "ld_code": exc.code,
            "message_ids": [c.message_id for c in changes][:20],
            "records": len(chunk),
        }
        if exc.permanent:
            logger.error("LaunchDarkly refused the write: %s", exc.message, extra=extra)
            reason = f"launchdarkly_{exc.status}_{exc.code}"
            self._dead_letter([(p.record, p.change) for p in chunk], reason, exc.message, report)
        else:
            logger.warning("LaunchDarkly write failed, SQS will retry: %s", exc.code, extra=extra)
            self._note_all(chunk, RETRY, exc.code, report)

    def _dead_letter(
        self,
        items: list[tuple[QueuedRecord, MembershipChange | None]],
        reason: str,
        detail: str,
        report: SyncReport,
    ) -> None:
        for record, change in items:
            if self._dead_letters.send(record, reason, detail):
                report.note(record, change, DEAD_LETTERED, reason)
            else:
                # The redrive policy still moves it to the DLQ after maxReceiveCount receives.
                report.note(record, change, RETRY, f"dead_letter_failed: {reason}")

    @staticmethod
    def _note_all(pending: Iterable[_Pending], result: str, detail: str, report: SyncReport) -> None:
        for p in pending:
            report.note(p.record, p.change, result, detail)


def _chunks(items: list[MembershipChange], size: int) -> Iterator[list[MembershipChange]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
