"""The sync decision, free of Lambda: a batch of queued changes in, LaunchDarkly writes out, and the
exact records to retry back.

Per batch: keep each context's newest change (older ones in the batch are superseded), group by
segment, claim each context in the state store (drops stale changes and duplicates, takes turns with
concurrent invocations), write in chunks, confirm.
A segment's failure never fails another's; a chunk's failure fails only its records.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass(slots=True)
class SyncReport:
    failed: list[str] = field(default_factory=list)  # record ids for batchItemFailures
    dead_lettered: int = 0
    added: int = 0
    removed: int = 0
    superseded: int = 0  # a newer change to the same context was in the same batch
    stale: int = 0  # a newer change was already claimed or applied
    duplicates: int = 0  # this very change was already applied
    busy: int = 0  # another invocation was writing the same context; left for SQS to retry


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
                report.failed.extend(p.record.record_id for p in pending.values())
                continue
            try:
                self._sync_target(target, pending, deadline, report)
            except Exception:
                # Isolation: an unexpected error (say DynamoDB throttling) retries this segment only.
                logger.exception("segment sync failed", extra={"audience_id": target.audience_id})
                report.failed.extend(p.record.record_id for p in pending.values())
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
                self._dead_letter([record], "invalid_message", detail, report)
                continue
            group = groups[Target(*change.target)]
            current = group.get(change.context_key)
            if current is None or change.order > current.change.order:
                group[change.context_key] = _Pending(change, record)
            if current is not None:
                report.superseded += 1
        return groups

    def _sync_target(self, target: Target, pending: dict[str, _Pending], deadline: float, report: SyncReport) -> None:
        claim = self._claim([p.change for p in pending.values()], deadline)
        report.stale += len(claim.stale)
        report.duplicates += len(claim.duplicate)
        report.busy += len(claim.busy)
        report.failed.extend(pending[c.context_key].record.record_id for c in claim.busy)
        for chunk in _chunks(claim.claimed, self._chunk_size):
            add = [c.context_key for c in chunk if c.included]
            remove = [c.context_key for c in chunk if not c.included]
            try:
                self._writer.write(target, add, remove, deadline)
            except WriteError as exc:
                # A write that may still land keeps its leases until they run out (our deadline + margin),
                # so no newer write of these contexts can go first and be overwritten by it.
                if not exc.outcome_unknown:
                    self._store.release(chunk)
                self._write_failed(target, chunk, [pending[c.context_key].record for c in chunk], exc, report)
            else:
                self._store.confirm(chunk)
                report.added += len(add)
                report.removed += len(remove)

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

    def _write_failed(
        self,
        target: Target,
        chunk: list[MembershipChange],
        records: list[QueuedRecord],
        exc: WriteError,
        report: SyncReport,
    ) -> None:
        extra = {
            "audience_id": target.audience_id,
            "status": exc.status,
            "ld_code": exc.code,
            "message_ids": [c.message_id for c in chunk][:20],
            "records": len(chunk),
        }
        if exc.permanent:
            logger.error("LaunchDarkly refused the write: %s", exc.message, extra=extra)
            self._dead_letter(records, f"launchdarkly_{exc.status}_{exc.code}", exc.message, report)
        else:
            logger.warning("LaunchDarkly write failed, SQS will retry: %s", exc.code, extra=extra)
            report.failed.extend(r.record_id for r in records)

    def _dead_letter(self, records: list[QueuedRecord], reason: str, detail: str, report: SyncReport) -> None:
        for record in records:
            if self._dead_letters.send(record, reason, detail):
                report.dead_lettered += 1
            else:
                # The redrive policy still moves it to the DLQ after maxReceiveCount receives.
                report.failed.append(record.record_id)


def _chunks(items: list[MembershipChange], size: int) -> Iterator[list[MembershipChange]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
