"""The sync decision, free of Lambda: a batch of queued changes in, LaunchDarkly writes out, and what
becomes of each record.

Per batch: keep each context's newest change (older ones in the batch are superseded), group by
segment, and write the segments at once (a bounded pool; every request still waits for the shared
rate-limit window). Per segment: claim each context in the state store (drops stale changes and
duplicates, takes turns with concurrent invocations), write in chunks, confirm.

A segment's failure never fails another's; a chunk's failure fails only its records; a chunk refused
for invalid keys is halved until each refused key stands alone, so only those are dead-lettered.
Time is not a failure: what the batch could not reach before its deadline, or what waits for the
rate-limit window or for another invocation, is *deferred* — the handler queues it again without
spending its receive count.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pydantic import ValidationError

from ld_audiences.change import MembershipChange
from ld_audiences.launchdarkly import WriteError
from ld_audiences.state import LEASE_MARGIN_SECONDS, ClaimResult, StateStore
from ld_audiences.writers import SegmentWriter, Target

logger = logging.getLogger(__name__)

# A segment is not started with less time than this left: a claim, a request and a confirmation.
MIN_SEGMENT_SECONDS = 2.0
# How long a batch waits for contexts that another invocation is writing before deferring them.
BUSY_WAIT_SECONDS = 5.0
# When deferred busy contexts come back: the other writer's lease ends within its invocation.
BUSY_DELAY_SECONDS = 5.0
# After a write whose outcome stayed unknown, LaunchDarkly may still apply it after our leases have run
# out, over a newer write. The contexts' newest desired state is written again this long after the leases
# end, and once more at SQS's longest delay: a late apply within that bound cannot leave a stale member.
LATE_APPLY_RECHECKS = (30, 900)
MAX_DELAY_SECONDS = 900  # SQS's longest message delay
# Refusal isolation stops after 2 x this x log2(chunk) requests (then what is still refused goes to the
# dead-letter queue as it is): enough to single out this many bad keys in any chunk.
ISOLATED_KEYS_BUDGET = 16


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    record_id: str  # the SQS messageId, what batchItemFailures names
    body: str
    receipt_handle: str = ""


class DeadLetters(Protocol):
    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        """Move a record that can never succeed to the dead-letter queue; False if that failed."""


# What can become of a queued change.
ADDED, REMOVED = "added", "removed"
SUPERSEDED = "superseded"  # a newer change to the same context was in the same batch
STALE = "stale"  # a newer change was already claimed or applied
DUPLICATE = "duplicate"  # this very change was already applied
BUSY = "busy"  # another invocation was writing the same context: deferred
DEFERRED = "deferred"  # no time left, or the rate-limit window is spent: deferred
RETRY = "retry"  # the write failed: back to SQS, which counts it toward the dead-letter queue
DEAD_LETTERED = "dead_lettered"  # can never succeed: moved to the dead-letter queue
RETRIED = frozenset({BUSY, DEFERRED, RETRY})  # not done in this invocation
DEFERRABLE = frozenset({BUSY, DEFERRED})  # not done for lack of time: queued again, no receive spent


class ChangeOutcome(NamedTuple):
    record_id: str  # the SQS messageId, what batchItemFailures names
    message_id: str | None  # Segment's messageId (None when the body is unreadable): the correlation id
    audience_id: str | None
    result: str
    detail: str = ""
    delay: float = 0.0  # for deferred records: when to try again, in seconds


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
    # Contexts whose newest desired state must be written again after a delay (seconds).
    reasserts: list[tuple[MembershipChange, float]] = field(default_factory=list)

    def note(
        self,
        record: QueuedRecord,
        change: MembershipChange | None,
        result: str,
        detail: str = "",
        delay: float = 0.0,
    ) -> None:
        message_id, audience_id = (change.message_id, change.audience_id) if change else (None, None)
        self.outcomes.append(ChangeOutcome(record.record_id, message_id, audience_id, result, detail, delay))
        self.counts[result] += 1

    def merge(self, other: SyncReport) -> None:
        self.outcomes += other.outcomes
        self.counts.update(other.counts)
        self.reasserts += other.reasserts

    @property
    def failed(self) -> list[str]:
        """The record ids not done in this invocation (deferred or failed)."""
        return [o.record_id for o in self.outcomes if o.result in RETRIED]

    added = _Count(ADDED)
    removed = _Count(REMOVED)
    superseded = _Count(SUPERSEDED)
    stale = _Count(STALE)
    duplicates = _Count(DUPLICATE)
    busy = _Count(BUSY)
    deferred = _Count(DEFERRED)
    dead_lettered = _Count(DEAD_LETTERED)


@dataclass(slots=True)
class _Pending:
    change: MembershipChange
    record: QueuedRecord


@dataclass(slots=True)
class _Segment:
    """One segment's part of a batch: its changes, its deadline, the leases it holds, what became of each."""

    target: Target
    pending: dict[str, _Pending]  # by context key
    deadline: float
    report: SyncReport = field(default_factory=SyncReport)
    leased: dict[str, MembershipChange] = field(default_factory=dict)  # claimed, not yet confirmed or released

    def note(self, changes: Iterable[MembershipChange], result: str, detail: str = "", delay: float = 0.0) -> None:
        for change in changes:
            p = self.pending[change.context_key]
            self.report.note(p.record, p.change, result, detail, delay)

    def unlease(self, changes: Iterable[MembershipChange]) -> None:
        for change in changes:
            self.leased.pop(change.context_key, None)


class Synchronizer:
    def __init__(
        self,
        *,
        writer: SegmentWriter,
        store: StateStore,
        dead_letters: DeadLetters,
        chunk_size: int,
        executor: Executor | None = None,
        busy_wait: float = BUSY_WAIT_SECONDS,
        late_apply_rechecks: Sequence[int] = LATE_APPLY_RECHECKS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._writer = writer
        self._store = store
        self._dead_letters = dead_letters
        self._chunk_size = chunk_size
        self._executor = executor  # writes segments at once; None writes them one after another
        self._busy_wait = busy_wait
        self._late_apply_rechecks = late_apply_rechecks
        self._clock, self._sleep = clock, sleep

    def sync(self, records: Sequence[QueuedRecord], deadline: float) -> SyncReport:
        report = SyncReport()
        segments = [_Segment(target, pending, deadline) for target, pending in self._newest_by_target(records, report)]
        parts = (
            self._executor.map(self._sync_segment, segments)
            if self._executor is not None and len(segments) > 1
            else map(self._sync_segment, segments)
        )
        for part in parts:
            report.merge(part)
        return report

    def _newest_by_target(
        self, records: Sequence[QueuedRecord], report: SyncReport
    ) -> Iterable[tuple[Target, dict[str, _Pending]]]:
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
            if current is None or change.precedence > current.change.precedence:
                group[change.context_key] = _Pending(change, record)
                if current is not None:
                    report.note(current.record, current.change, SUPERSEDED)
            else:
                report.note(record, change, SUPERSEDED)
        return groups.items()

    def _sync_segment(self, segment: _Segment) -> SyncReport:
        changes = [p.change for p in segment.pending.values()]
        if self._clock() + MIN_SEGMENT_SECONDS >= segment.deadline:
            # No time left to claim, write and confirm: claiming would only take leases and spend the safety
            # margin (past the timeout Lambda drops the whole response and every record comes back).
            segment.note(changes, DEFERRED, "deadline")
            return segment.report
        try:
            claim = self._claim(changes, segment.deadline)
            segment.note(claim.stale, STALE)
            segment.note(claim.duplicate, DUPLICATE)
            segment.note(claim.busy, BUSY, delay=BUSY_DELAY_SECONDS)
            self._state_refused(segment, claim.failed)
            segment.leased.update((c.context_key, c) for c in claim.claimed)
            self._write_chunks(segment, claim.claimed)
        except Exception:
            # Isolation: an unexpected error (say DynamoDB throttling) retries this segment only, and no
            # lease it took outlives the batch.
            logger.exception("segment sync failed", extra={"audience_id": segment.target.audience_id})
            noted = {o.record_id for o in segment.report.outcomes}
            segment.note(
                (c for c in changes if segment.pending[c.context_key].record.record_id not in noted), RETRY, "error"
            )
            if segment.leased:
                try:
                    self._store.release(list(segment.leased.values()))
                except Exception:
                    logger.exception("could not release the leases of a failed segment: they run out by themselves")
        return segment.report

    def _write_chunks(self, segment: _Segment, claimed: list[MembershipChange]) -> None:
        chunks = list(_chunks(claimed, self._chunk_size))
        for index, chunk in enumerate(chunks):
            failure = self._write(segment, chunk)
            if failure is None:
                continue
            budget = [2 * ISOLATED_KEYS_BUDGET * max(1, math.ceil(math.log2(len(chunk))))]
            self._isolate(segment, chunk, failure, budget)
            if failure.retry_after is not None:
                # Out of time or rate-limit window: the rest would fail the same way, each after a call.
                rest = [c for later in chunks[index + 1 :] for c in later]
                self._store.release(rest)
                segment.unlease(rest)
                segment.note(rest, DEFERRED, failure.code, failure.retry_after)
                return

    def _write(self, segment: _Segment, chunk: list[MembershipChange]) -> WriteError | None:
        """Write a chunk of claimed changes; on success record them as applied."""
        add = [c.context_key for c in chunk if c.included]
        remove = [c.context_key for c in chunk if not c.included]
        try:
            late = self._writer.write(segment.target, add, remove, segment.deadline)
        except WriteError as exc:
            return exc
        self._store.confirm(chunk)
        if late:
            # An attempt before the one that landed got no answer: LaunchDarkly may apply it later, over a newer
            # write. Look again once that cannot happen any more.
            self._recheck(segment, chunk)
        segment.unlease(chunk)
        segment.note([c for c in chunk if c.included], ADDED)
        segment.note([c for c in chunk if not c.included], REMOVED)
        target = segment.target
        try:
            self._store.record_write(target.audience_id, target.audience_key, target.context_kind, chunk)
        except Exception:  # the summary is for `status`; the write itself is done and recorded
            logger.warning("could not update the audience summary", exc_info=True)
        return None

    def _isolate(
        self, segment: _Segment, chunk: list[MembershipChange], failure: WriteError, budget: list[int]
    ) -> None:
        """`chunk` failed with `failure`. LaunchDarkly refuses a whole request for one invalid key (400),
        and several bad keys in one chunk are normal: halve the chunk and write each half, and halve again
        every half that is refused, until each refused key stands alone. Good keys land; only refused
        ones are dead-lettered. At most 2 requests a level per bad key, within `budget` requests."""
        if failure.status != 400 or len(chunk) == 1 or budget[0] < 2:
            self._write_failed(segment, chunk, failure)
            return
        budget[0] -= 2
        middle = len(chunk) // 2
        for half in (chunk[:middle], chunk[middle:]):
            half_failure = self._write(segment, half)
            if half_failure is not None:
                self._isolate(segment, half, half_failure, budget)

    def _claim(self, changes: list[MembershipChange], deadline: float) -> ClaimResult:
        """Claim, waiting a little for contexts another invocation is writing right now: that takes
        well under a second, while deferring the record costs a round trip through SQS."""
        result = self._store.claim(changes, deadline)
        give_up = min(deadline, self._clock() + self._busy_wait)
        pause = 0.05
        while result.busy and self._clock() + pause < give_up:
            self._sleep(pause)
            pause = min(pause * 2, 1.0)
            busy, result.busy = result.busy, []
            result.extend(self._store.claim(busy, deadline))
        return result

    def _state_refused(self, segment: _Segment, failed: list[tuple[MembershipChange, str]]) -> None:
        """Contexts whose state DynamoDB would not update: each fails alone, never its neighbours."""
        for change, code in failed:
            if code.startswith("Validation"):
                logger.error(
                    "DynamoDB refused a context's state",
                    extra={"audience_id": segment.target.audience_id, "code": code},
                )
                p = segment.pending[change.context_key]
                self._dead_letter([(p.record, p.change)], "state_refused", code, segment.report)
            else:
                segment.note([change], RETRY, code)

    def _write_failed(self, segment: _Segment, chunk: list[MembershipChange], exc: WriteError) -> None:
        segment.unlease(chunk)
        if exc.outcome_unknown:
            # The write may still land, even after our leases end: keep them until then (no newer write
            # of these contexts can go first), and look again afterwards.
            self._recheck(segment, chunk)
        else:
            self._store.release(chunk)
        extra = {
            "audience_id": segment.target.audience_id,
            "status": exc.status,
            "ld_code": exc.code,
            "message_ids": [c.message_id for c in chunk][:20],
            "records": len(chunk),
        }
        if exc.permanent:
            logger.error("LaunchDarkly refused the write: %s", exc.message, extra=extra)
            reason = f"launchdarkly_{exc.status}_{exc.code}"
            records = [segment.pending[c.context_key] for c in chunk]
            self._dead_letter([(p.record, p.change) for p in records], reason, exc.message, segment.report)
        elif exc.retry_after is not None:
            logger.info("LaunchDarkly write deferred: %s", exc.code, extra=extra)
            segment.note(chunk, DEFERRED, exc.code, exc.retry_after)
        else:
            logger.warning("LaunchDarkly write failed, SQS will retry: %s", exc.code, extra=extra)
            segment.note(chunk, RETRY, exc.code)

    def _recheck(self, segment: _Segment, chunk: list[MembershipChange]) -> None:
        """Write these contexts' newest desired state again after a write of theirs may have been applied late:
        after the leases end, then the configured seconds after that."""
        lease_left = max(segment.deadline + LEASE_MARGIN_SECONDS - self._clock(), 0.0)
        for delay in self._late_apply_rechecks:
            segment.report.reasserts += [
                (c.model_copy(update={"reassert": True}), min(lease_left + delay, MAX_DELAY_SECONDS)) for c in chunk
            ]

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


def _chunks(items: list[MembershipChange], size: int) -> Iterator[list[MembershipChange]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
