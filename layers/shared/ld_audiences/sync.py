"""The sync decision per invocation, free of Lambda: record, then reconcile.

LaunchDarkly takes one audience per request and limits requests, while SQS batches mix audiences. So a batch
is not written as it comes: its changes are *recorded* in their audiences' pending logs (`pending_log.py`),
and the invocation then *reconciles* the audiences whose changes have waited longest, whichever batches
brought them: each request carries everything pending for its audience, up to the chunk size. SQS carries
notifications of work; the state table holds the work (level-triggered, like a controller).

Per batch: keep each context's newest change (older ones in the batch are superseded), record each
audience's changes, and acknowledge what was recorded (`batchItemFailures` names the rest). Then, until
the rate-limit window is spent or the reconcile budget is used, take the audiences with the oldest pending
changes (a few at once, each under its own lease) and reconcile them (`reconcile.py`). Work left over is
promised to a *tick*: a reconcile-only message queued for when the window resets, at most one due at a time,
or at once when only the invocation's budget ran out (the template's schedule invokes the function every
minute too, should a tick be lost).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from itertools import islice

from pydantic import ValidationError

from ld_audiences import debounce
from ld_audiences.change import MembershipChange
from ld_audiences.context_state import ContextStates
from ld_audiences.dynamodb_batch import StateError
from ld_audiences.outcomes import (
    DEAD_LETTERED,
    RECORDED,
    RETRY,
    SUPERSEDED,
    TICK,
    DeadLetters,
    QueuedRecord,
    SyncReport,
)
from ld_audiences.pending_log import INDEX_PAGE, Lease, PendingLog
from ld_audiences.reconcile import LATE_APPLY_RECHECKS, LEASE_MARGIN_SECONDS, AudienceReconciler
from ld_audiences.writers import SegmentWriter, Target

logger = logging.getLogger(__name__)

TICK_BODY = '{"tick":1}'  # a queued message that only asks for a reconcile
# An audience is not taken with less time than this left: a read, a request and the bookkeeping.
MIN_AUDIENCE_SECONDS = 2.0
# An invocation stops taking audiences after this long (one LaunchDarkly window), so that the event source
# keeps handing batches over: a batch waiting in SQS is work nobody can see the age of.
RECONCILE_SECONDS = 10.0
# The longest an invocation waits for the shared rate-limit window: a longer wait ends its reconcile, and a
# tick brings an invocation back at the reset (waiting is billed, and the event source waits for it).
WINDOW_WAIT_SECONDS = 2.0
# Chunks one lease reads and writes before the audience goes back in line behind older ones.
CHUNKS_PER_ROUND = 4
# When work is left that no tick of an audience's own covers (held by another invocation, say), a tick
# comes back this soon.
IDLE_TICK_SECONDS = 5.0
# When the pending index does not show yet what this invocation recorded, a tick comes back this soon.
INDEX_LAG_SECONDS = 2.0


class Synchronizer:
    def __init__(
        self,
        *,
        writer: SegmentWriter,
        log: PendingLog,
        states: ContextStates,
        dead_letters: DeadLetters,
        chunk_size: int,
        executor: Executor | None = None,
        at_once: int = 1,
        late_apply_rechecks: Sequence[int] = LATE_APPLY_RECHECKS,
        reconcile_seconds: float = RECONCILE_SECONDS,
        full_batch: int | None = None,
        token_refusal_is_final: bool = False,
        record_executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log
        self._dead_letters = dead_letters
        self._executor = executor  # reconciles `at_once` audiences at once; None: one after another
        self._at_once = at_once if executor is not None else 1
        self._reconcile_seconds = reconcile_seconds
        self._full_batch = full_batch  # the event source's batch size: a batch that full has more behind it
        self._clock = clock
        self._reconciler = AudienceReconciler(
            writer=writer,
            log=log,
            states=states,
            dead_letters=dead_letters,
            chunk_size=chunk_size,
            chunks_per_round=CHUNKS_PER_ROUND,
            late_apply_rechecks=late_apply_rechecks,
            token_refusal_is_final=token_refusal_is_final,
            record_pool=record_executor,
            clock=clock,
        )

    def sync(self, records: Sequence[QueuedRecord], deadline: float) -> SyncReport:
        report = SyncReport()
        recorded = self._record(records, report)
        flooded = self._full_batch is not None and len(records) >= self._full_batch
        taken = self._reconcile(deadline, report, flooded=flooded)
        if recorded - taken and report.oldest_pending is None and report.next_tick is None:
            # Recorded, not reconciled, and the index shows nothing pending: it lags behind the table (it is
            # eventually consistent). A tick comes back for what this batch brought.
            report.tick_in(INDEX_LAG_SECONDS)
        return report

    # ------------------------------------------------------------------------------------ record

    def _record(self, records: Sequence[QueuedRecord], report: SyncReport) -> set[Target]:
        """Record the batch; returns the audiences it recorded."""
        groups: dict[Target, dict[str, tuple[MembershipChange, QueuedRecord]]] = defaultdict(dict)
        for record in records:
            if record.body == TICK_BODY:
                report.note_record(record, None, TICK)
                continue
            try:
                change = MembershipChange.from_message(record.body)
            except ValidationError as exc:
                detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                sent = self._dead_letters.send(record, "invalid_message", detail)
                report.note_record(record, None, DEAD_LETTERED if sent else RETRY, "invalid_message")
                continue
            group = groups[Target(*change.target)]
            current = group.get(change.context_key)
            if current is None or change.precedence > current[0].precedence:
                group[change.context_key] = (change, record)
                if current is not None:
                    report.note_record(current[1], current[0], SUPERSEDED)
            else:
                report.note_record(record, change, SUPERSEDED)
        if not groups:
            return set()
        try:
            failed = self._log.record([(target, [c for c, _ in group.values()]) for target, group in groups.items()])
        except Exception:
            logger.exception("could not record the batch: SQS delivers it again")
            failed = set(groups)
        for target, group in groups.items():
            for change, record in group.values():
                report.note_record(record, change, RETRY if target in failed else RECORDED)
        return set(groups) - failed

    # ------------------------------------------------------------------------------------ reconcile

    def _reconcile(self, deadline: float, report: SyncReport, *, flooded: bool = False) -> set[Target]:
        """Reconcile the audiences waiting longest (`flooded`: while the sync is behind on recording, see
        `debounce.py`); returns those it took."""
        stop_at = min(deadline - MIN_AUDIENCE_SECONDS, self._clock() + self._reconcile_seconds)
        ready_in: float | None = None  # when an audience passed over by the debounce is ready
        unavailable: set[tuple[str, str]] = set()  # held by another invocation, or just finished
        taken: set[Target] = set()
        while True:
            if self._clock() >= stop_at:
                # Out of budget, not of work: another invocation goes on at once (one per invocation, so
                # these never outnumber the invocations running).
                report.continue_now = True
                break
            wave, later = self._take(deadline, stop_at, unavailable, flooded)
            if later is not None:
                ready_in = later - self._clock()
            if not wave:
                break
            taken.update(lease.target for lease, _ in wave)
            parts = (
                self._executor.map(self._reconcile_one, wave)
                if self._executor is not None and len(wave) > 1
                else map(self._reconcile_one, wave)
            )
            window: float | None = None
            for part, wait in parts:
                report.merge(part)
                if part.next_tick is not None:
                    report.tick_in(part.next_tick)
                if wait is not None:
                    window = max(window or 0.0, wait)
            if window is not None or report.token_refused:
                break  # the rate-limit window, the deadline or a refused token stops every audience alike
        try:
            report.oldest_pending = self._log.oldest_since()
        except StateError:
            logger.warning("could not read the pending index", exc_info=True)
            report.tick_in(IDLE_TICK_SECONDS)
        if report.oldest_pending is None:
            report.continue_now = False
        elif report.next_tick is None:
            report.tick_in(IDLE_TICK_SECONDS if ready_in is None else min(max(ready_in, 1.0), IDLE_TICK_SECONDS))
        return taken

    def _take(
        self, deadline: float, stop_at: float, unavailable: set[tuple[str, str]], flooded: bool
    ) -> tuple[list[tuple[Lease, float]], float | None]:
        """Leases of the ready audiences with the oldest pending changes, up to `at_once`, and when the next
        audience passed over as not ready yet will be (`debounce.py`)."""
        wave: list[tuple[Lease, float]] = []
        later: float | None = None
        try:
            listed = self._log.pending_audiences()
            first = list(islice(listed, INDEX_PAGE))
            contended = len(first) >= debounce.CONTENDED_AUDIENCES
            page, looked = first, 0
            while page and len(wave) < self._at_once:
                page = [entry for entry in page if entry[:2] not in unavailable]
                now = self._clock()
                unsure = [
                    entry[:2]
                    for entry in page
                    if contended and not debounce.waited_enough(entry[2], now, flooded=flooded)
                ]
                newest = self._log.newest(unsure) if unsure else {}
                for audience_id, context_kind, since in page:
                    started = self._clock()
                    if contended:
                        ready = debounce.ready_at(since, newest.get((audience_id, context_kind)), flooded=flooded)
                        if ready > started:
                            later = ready if later is None else min(later, ready)
                            continue
                    if started >= stop_at:
                        return wave, later
                    lease = self._log.take(audience_id, context_kind, deadline + LEASE_MARGIN_SECONDS)
                    if lease is None:
                        unavailable.add((audience_id, context_kind))
                        continue
                    wave.append((lease, started))
                    if len(wave) >= self._at_once:
                        break
                looked += len(page)
                if contended and looked >= debounce.LOOK_AHEAD:
                    break
                page = list(islice(listed, INDEX_PAGE))
        except StateError:
            logger.warning("could not list or take pending audiences", exc_info=True)
        return wave, later

    def _reconcile_one(self, taken: tuple[Lease, float]) -> tuple[SyncReport, float | None]:
        lease, started = taken
        try:
            return self._reconciler.reconcile(lease, lease.until - LEASE_MARGIN_SECONDS, started)
        except Exception:
            # Isolation: an unexpected error (DynamoDB failing, say) leaves this audience's changes pending and
            # stops no other audience. The lease is kept until it runs out: a write may have gone out.
            logger.exception("audience reconcile failed", extra={"audience_id": lease.target.audience_id})
            report = SyncReport(audiences=1)
            try:
                self._log.finish(lease, [], started, started=started, hold_until=lease.until)
            except Exception:
                logger.exception("could not hand the audience back: its lease runs out by itself")
            report.tick_in(max(lease.until - self._clock(), 0.0))
            return report, None
