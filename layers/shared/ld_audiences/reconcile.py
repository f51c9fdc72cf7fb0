"""One audience's reconcile: bring LaunchDarkly to the audience's pending changes, under its lease.

Read the oldest pending changes (up to a few chunks), decide per context what LaunchDarkly must get
(`plan`: the newest change, unless LaunchDarkly has it or something newer), write that in chunks, record
what LaunchDarkly acknowledged, and hand the audience back with what is still pending.

A chunk refused for invalid keys (400) is halved until each refused key stands alone, so only those are
dead-lettered. A chunk whose outcome stayed unknown keeps the lease until it runs out (no newer write of the
audience can go first) and is written again later, twice (`LATE_APPLY_RECHECKS`), so a late apply cannot
leave a stale member. Time (the rate-limit window, the deadline) is never a failure: what was not written
stays pending and the invocation says when to come back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ld_audiences.change import MembershipChange, format_time
from ld_audiences.context_state import Applied, ContextStates
from ld_audiences.launchdarkly import WriteError
from ld_audiences.outcomes import (
    ADDED,
    DEAD_LETTERED,
    DUPLICATE,
    REMOVED,
    RETIRED,
    STALE,
    SUPERSEDED,
    DeadLetters,
    QueuedRecord,
    SyncReport,
)
from ld_audiences.pending_log import Lease, PendingLog
from ld_audiences.writers import SegmentWriter

logger = logging.getLogger(__name__)

# A lease outlives its holder's deadline by this much: clocks of Lambda instances differ a little, and a
# request started just before the deadline may still be answered just after it.
LEASE_MARGIN_SECONDS = 5.0
# After a write whose outcome stayed unknown, LaunchDarkly may still apply it after the lease has run out,
# over a newer write. The contexts' newest state is written again this long after the lease ends, and once
# more at SQS's longest delay: a late apply within that bound cannot leave a stale member.
LATE_APPLY_RECHECKS = (30, 900)
MAX_DELAY_SECONDS = 900  # SQS's longest message delay
# A LaunchDarkly that keeps failing (5xx after the client's retries) gets this pause before the audience is
# tried again; its changes stay pending meanwhile.
FAILURE_PAUSE_SECONDS = 5.0
# What LaunchDarkly answers a token it does not take (401) or whose role may not write (403).
TOKEN_REFUSED = frozenset({401, 403})
# Refusal isolation stops after 2 x this x log2(chunk) requests (then what is still refused goes to the
# dead-letter queue as it is): enough to single out this many bad keys in any chunk.
ISOLATED_KEYS_BUDGET = 16


@dataclass(slots=True)
class Plan:
    """Per context, what LaunchDarkly must get: `write` holds one change per context (for a reassert, the
    state LaunchDarkly should already have); every other pending change is skipped with its reason."""

    write: list[MembershipChange] = field(default_factory=list)
    skipped: list[tuple[MembershipChange, str]] = field(default_factory=list)


def plan(pending: Iterable[MembershipChange], applied: Mapping[str, Applied], retired_at: float | None = None) -> Plan:
    """Decide from the pending changes of one audience and what LaunchDarkly has (`applied`, by key).

    A context gets its newest pending change if LaunchDarkly has nothing newer. A reassert (resync, audit
    repair, the recheck after an unknown outcome) asks for the context's newest state whatever it is by
    then: that pending change if there is a newer one, else what LaunchDarkly is recorded to have.
    A retired audience (`retired_at`) gets only removals: of every pending context LaunchDarkly has as a
    member; every pending change is skipped as retired.
    """
    if retired_at is not None:
        return _retire(pending, applied, retired_at)
    newest: dict[str, MembershipChange] = {}
    reasserts: dict[str, MembershipChange] = {}
    result = Plan()
    for change in pending:
        key = change.context_key
        if change.reassert:
            if key in reasserts:
                result.skipped.append((change, SUPERSEDED))
            else:
                reasserts[key] = change
            continue
        current = newest.get(key)
        if current is None or change.order > current.order:
            newest[key] = change
            if current is not None:
                result.skipped.append((current, SUPERSEDED))
        else:
            result.skipped.append((change, SUPERSEDED))
    for key in newest.keys() | reasserts.keys():
        fresh, reassert, state = newest.get(key), reasserts.get(key), applied.get(key)
        if fresh is not None and (state is None or fresh.order > state.order):
            result.write.append(fresh)
            if reassert is not None:
                result.skipped.append((reassert, SUPERSEDED))
        elif reassert is not None and state is not None:
            event_time, _, message_id = state.order.partition("|")
            update = {"included": state.included, "event_time": event_time, "message_id": message_id}
            result.write.append(reassert.model_copy(update=update))
            if fresh is not None:
                result.skipped.append((fresh, DUPLICATE if fresh.order == state.order else STALE))
        elif fresh is None:
            assert reassert is not None
            result.skipped.append((reassert, STALE))  # the table no longer knows the context: nothing to reassert
        else:
            assert state is not None
            result.skipped.append((fresh, DUPLICATE if fresh.order == state.order else STALE))
    return result


def _retire(pending: Iterable[MembershipChange], applied: Mapping[str, Applied], retired_at: float) -> Plan:
    result = Plan()
    removing: dict[str, MembershipChange] = {}
    for change in pending:
        result.skipped.append((change, RETIRED))
        state = applied.get(change.context_key)
        if state is None or not state.included or change.context_key in removing:
            continue
        # Newer than anything LaunchDarkly has of the context; "~" sorts after every Segment messageId.
        event_time = max(format_time(datetime.fromtimestamp(retired_at, UTC)), state.order.partition("|")[0])
        update = {"included": False, "event_time": event_time, "message_id": "~retired", "reassert": False}
        removing[change.context_key] = change.model_copy(update=update)
    result.write = list(removing.values())
    return result


@dataclass(slots=True)
class _Round:
    """One lease's work: what became of each change, and how it ended."""

    lease: Lease
    deadline: float
    report: SyncReport = field(default_factory=SyncReport)
    resolved: set[str] = field(default_factory=set)  # context keys with nothing left to write
    wait: float | None = None  # the rate-limit window or the deadline stopped the writes: come back after this
    failed: bool = False  # LaunchDarkly kept failing
    refused: WriteError | None = None  # LaunchDarkly refused the token (401/403): the caller may re-read it
    unknown: bool = False  # a write's outcome stayed unknown: the lease is kept until it runs out
    recording: list[Future[None]] = field(default_factory=list)  # written chunks being recorded meanwhile
    lock: threading.Lock = field(default_factory=threading.Lock)  # `report` and `resolved`, shared with them

    @property
    def stopped(self) -> bool:
        """The rest of the round would fail the same way, each after a call."""
        return self.wait is not None or self.failed or self.refused is not None

    def note(self, change: MembershipChange, result: str, detail: str = "", age: float | None = None) -> None:
        """A change the round is done with (written or dead-lettered)."""
        with self.lock:
            self.report.note_change(change, result, detail, age)
            self.resolved.add(change.context_key)


class AudienceReconciler:
    def __init__(
        self,
        *,
        writer: SegmentWriter,
        log: PendingLog,
        states: ContextStates,
        dead_letters: DeadLetters,
        chunk_size: int,
        chunks_per_round: int,
        late_apply_rechecks: Sequence[int] = LATE_APPLY_RECHECKS,
        token_refusal_is_final: bool = False,
        record_pool: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self._record_pool = record_pool  # records a written chunk while the next one is written
        self._token_refusal_is_final = token_refusal_is_final
        self._log = log
        self._states = states
        self._dead_letters = dead_letters
        self._chunk_size = chunk_size
        self._max_changes = chunk_size * chunks_per_round
        self._late_apply_rechecks = late_apply_rechecks
        self._clock = clock

    def reconcile(self, lease: Lease, deadline: float, started: float) -> tuple[SyncReport, float | None]:
        """Write the leased audience's oldest pending changes, then hand it back. Returns the report, whose
        `next_tick` says when the audience needs another reconcile (None: nothing left), and the seconds the
        rate-limit window or the deadline stopped the writes for (None: they did not)."""
        work = _Round(lease, deadline)
        work.report.audiences = 1
        read = self._log.read(lease, self._max_changes)
        pending = [change for item in read.items for change in item.changes]
        target = lease.target
        applied = self._states.read(target.audience_id, target.context_kind, sorted({c.context_key for c in pending}))
        decided = plan(pending, applied, lease.retired_at)
        for change, result in decided.skipped:
            work.report.note_change(change, result)
        work.resolved = {c.context_key for c in pending} - {c.context_key for c in decided.write}
        try:
            self._write_chunks(work, decided.write)
        finally:
            for recording in work.recording:
                recording.result()

        done, rest = [], [] if read.rest_since is None else [read.rest_since]
        for item in read.items:
            if all(c.context_key in work.resolved for c in item.changes):
                done.append(item)
            else:
                rest.append(item.received_at)
        hold = lease.until if work.unknown else self._clock() + FAILURE_PAUSE_SECONDS if work.failed else None
        self._log.finish(lease, done, min(rest) if rest else None, started=started, hold_until=hold)
        if rest:
            # More of this audience is pending: a reconcile must come back for it, if no new change does.
            now = self._clock()
            work.report.tick_in(max(hold - now, 0.0) if hold is not None else work.wait or 0.0)
        if work.refused is not None:
            work.report.token_refused = f"{work.refused.status} {work.refused.code}"
        return work.report, work.wait

    def _write_chunks(self, work: _Round, changes: list[MembershipChange]) -> None:
        for chunk in _chunks(changes, self._chunk_size):
            failure = self._write(work, chunk)
            if failure is not None:
                budget = [2 * ISOLATED_KEYS_BUDGET * max(1, math.ceil(math.log2(len(chunk))))]
                self._isolate(work, chunk, failure, budget)
            if work.stopped:
                return

    def _write(self, work: _Round, chunk: list[MembershipChange]) -> WriteError | None:
        """Write a chunk; on success record it as LaunchDarkly's."""
        target = work.lease.target
        add = [c.context_key for c in chunk if c.included]
        remove = [c.context_key for c in chunk if not c.included]
        try:
            late = self._writer.write(target, add, remove, work.deadline)
        except WriteError as exc:
            return exc
        answered = self._clock()
        if late:
            # An attempt before the one that landed got no answer: LaunchDarkly may apply it later, over a
            # newer write. Look again once that cannot happen any more.
            self._recheck(work, chunk)
        if self._record_pool is None:
            self._record(work, chunk, answered, parallel=True)
        else:
            # Recorded while the next chunk goes to LaunchDarkly: a first sync is bound by the two together.
            work.recording.append(self._record_pool.submit(self._record, work, chunk, answered, parallel=False))
        return None

    def _record(self, work: _Round, chunk: list[MembershipChange], answered: float, *, parallel: bool) -> None:
        """Record a chunk LaunchDarkly acknowledged. A retired audience's removals are not recorded as
        LaunchDarkly's state: the table keeps the members Engage sent, so that `ld-audiences retire --undo`
        then `resync` can write them back."""
        retired = work.lease.retired_at is not None
        unrecorded = set() if retired else {c.context_key for c in self._states.write(chunk, parallel=parallel)}
        for change in chunk:
            if change.context_key in unrecorded:
                continue  # stays pending: written again next time, a duplicate at worst
            age = answered - change.received_at if change.received_at is not None else None
            work.note(change, ADDED if change.included else REMOVED, age=age)
        target = work.lease.target
        try:
            self._states.record_write(target.audience_id, target.audience_key, target.context_kind, chunk)
        except Exception:  # the summary is for `status`; the write itself is done and recorded
            logger.warning("could not update the audience summary", exc_info=True)

    def _isolate(self, work: _Round, chunk: list[MembershipChange], failure: WriteError, budget: list[int]) -> None:
        """`chunk` failed with `failure`. LaunchDarkly refuses a whole request for one invalid key (400),
        and several bad keys in one chunk are normal: halve the chunk and write each half, and halve again
        every half that is refused, until each refused key stands alone. Good keys land; only refused
        ones are dead-lettered. At most 2 requests a level per bad key, within `budget` requests."""
        if failure.status != 400 or len(chunk) == 1 or budget[0] < 2:
            self._write_failed(work, chunk, failure)
            return
        budget[0] -= 2
        middle = len(chunk) // 2
        for half in (chunk[:middle], chunk[middle:]):
            if work.stopped:
                return
            half_failure = self._write(work, half)
            if half_failure is not None:
                self._isolate(work, half, half_failure, budget)

    def _write_failed(self, work: _Round, chunk: list[MembershipChange], exc: WriteError) -> None:
        if exc.outcome_unknown:
            # The write may still land, even after the lease ends: keep it until then (no newer write of the
            # audience can go first), and look again afterwards.
            work.unknown = True
            self._recheck(work, chunk)
        extra = {
            "audience_id": work.lease.target.audience_id,
            "status": exc.status,
            "ld_code": exc.code,
            "message_ids": [c.message_id for c in chunk][:20],
            "changes": len(chunk),
        }
        if exc.status in TOKEN_REFUSED and not self._token_refusal_is_final:
            # A rotated token, with the old one still cached: nothing is dead-lettered until the secret, read
            # again, still holds a refused token (SyncService).
            logger.warning("LaunchDarkly refused the token: %s", exc.message, extra=extra)
            work.refused = exc
        elif exc.permanent:
            logger.error("LaunchDarkly refused the write: %s", exc.message, extra=extra)
            self._dead_letter(work, chunk, f"launchdarkly_{exc.status}_{exc.code}", exc.message)
        elif exc.retry_after is not None:
            logger.info("LaunchDarkly write waits: %s", exc.code, extra=extra)
            work.wait = max(work.wait or 0.0, exc.retry_after)
        else:
            logger.warning("LaunchDarkly write failed, the changes stay pending: %s", exc.code, extra=extra)
            work.failed = True

    def _dead_letter(self, work: _Round, chunk: list[MembershipChange], reason: str, detail: str) -> None:
        for change in chunk:
            record = QueuedRecord(change.message_id, change.to_message())
            if self._dead_letters.send(record, reason, detail):
                work.note(change, DEAD_LETTERED, reason)
            # else it stays pending and is tried again: nothing is lost for want of a dead-letter queue

    def _recheck(self, work: _Round, chunk: list[MembershipChange]) -> None:
        """Write these contexts' newest state again after a write of theirs may have been applied late: after
        the lease ends, then the configured seconds after that."""
        lease_left = max(work.lease.until - self._clock(), 0.0)
        for delay in self._late_apply_rechecks:
            with work.lock:
                work.report.reasserts += [
                    (
                        c.model_copy(update={"reassert": True, "received_at": None}),
                        min(lease_left + delay, MAX_DELAY_SECONDS),
                    )
                    for c in chunk
                ]


def _chunks(items: list[MembershipChange], size: int) -> Iterator[list[MembershipChange]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
