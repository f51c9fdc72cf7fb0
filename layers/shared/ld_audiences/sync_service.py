"""What one sync execution environment holds and does per batch, free of Lambda's entry point.

functions/sync/app.py builds one `SyncService` from the environment with real AWS clients and thread
pools; the simulation (bench/first_sync.py) builds it with the same classes over in-process AWS and
LaunchDarkly stand-ins, a virtual clock and virtual thread pools. Both run `handle` unchanged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import requests

from ld_audiences.config import SEGMENTS_AT_ONCE, TOKEN_PLACEHOLDER, ConfigError, SyncSettings
from ld_audiences.context_state import ContextStates
from ld_audiences.dead_letters import SqsDeadLetters
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord, SyncReport
from ld_audiences.pending_log import PendingLog
from ld_audiences.rate_limit import SharedRateLimit
from ld_audiences.requeue import Settlement, settle
from ld_audiences.retry import RetryPolicy
from ld_audiences.sqs_queue import SqsChangeQueue
from ld_audiences.sync import RECONCILE_SECONDS, WINDOW_WAIT_SECONDS, Synchronizer
from ld_audiences.writers import make_writer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

# Stop starting LaunchDarkly calls this long before the Lambda timeout, so the batch response
# (and the failed records in it) always gets back to SQS.
SAFETY_MARGIN_SECONDS = 3.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    report: SyncReport
    settlement: Settlement
    responses: Counter[str]  # LaunchDarkly's answers by status ("204", "429", "error", ...)
    retries: int
    rate_limit_waits: int
    state_calls: int  # DynamoDB calls of this batch (state table and rate-limit window)


@dataclass
class SyncService:
    settings: SyncSettings
    dynamodb: DynamoDBClient
    sqs: SQSClient
    segment_pool: Executor  # audiences reconciled at once
    state_pool: Executor  # one audience's state calls at once (a separate pool: nested waits on one deadlock)
    session: requests.Session = field(default_factory=requests.Session)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    reconcile_seconds: float = RECONCILE_SECONDS

    def __post_init__(self) -> None:
        table = self.settings.state_table
        pool, clock, sleep = self.state_pool, self.clock, self.sleep
        self.log = PendingLog(self.dynamodb, table, executor=pool, clock=clock, sleep=sleep)
        self.states = ContextStates(self.dynamodb, table, executor=pool, clock=clock, sleep=sleep)
        self.rate_limit = SharedRateLimit(self.dynamodb, table)
        self.dead_letters = SqsDeadLetters(self.sqs, self.settings.dlq_url)
        self.queue = SqsChangeQueue(self.sqs, self.settings.queue_url, executor=self.state_pool)
        self._current: tuple[str, LaunchDarklyClient, Synchronizer] | None = None

    def synchronizer(self, token: str, *, refusal_is_final: bool = False) -> tuple[LaunchDarklyClient, Synchronizer]:
        """Reuse the client and writer while the token is unchanged. `refusal_is_final`: a token LaunchDarkly
        refuses dead-letters what it was to write (the secret was read again and holds it still)."""
        token = token.strip()
        if token in ("", TOKEN_PLACEHOLDER):
            # Fail the whole batch loudly (Errors alarm); the changes wait in SQS, then the DLQ, for redrive.
            raise ConfigError("the LaunchDarkly token secret is not set: put the token with put-secret-value")
        if refusal_is_final or self._current is None or self._current[0] != token:
            client = LaunchDarklyClient(
                self.settings.launchdarkly.base_url,
                token,
                policy=RetryPolicy(max_rate_limit_wait=WINDOW_WAIT_SECONDS),
                session=self.session,
                rate_limit=self.rate_limit,
                clock=self.clock,
                sleep=self.sleep,
            )
            sync = Synchronizer(
                writer=make_writer(self.settings.launchdarkly, client),
                log=self.log,
                states=self.states,
                dead_letters=self.dead_letters,
                chunk_size=self.settings.launchdarkly.chunk_size,
                executor=self.segment_pool,
                at_once=SEGMENTS_AT_ONCE,
                late_apply_rechecks=self.settings.late_apply_rechecks,
                reconcile_seconds=self.reconcile_seconds,
                full_batch=self.settings.batch_size,
                token_refusal_is_final=refusal_is_final,
                record_executor=self.state_pool,
                clock=self.clock,
            )
            if refusal_is_final:
                return client, sync
            self._current = (token, client, sync)
        return self._current[1], self._current[2]

    @property
    def state_calls(self) -> int:
        return self.log.calls + self.states.calls + self.rate_limit.calls

    def handle(
        self,
        records: Sequence[QueuedRecord],
        token: str,
        remaining_seconds: float,
        refresh: Callable[[], str] | None = None,
    ) -> BatchResult:
        """Record a batch (none for a scheduled invocation) and reconcile, then queue what comes back later;
        `remaining_seconds` is what the invocation has left. `refresh` reads the token's secret again,
        bypassing any cache: when LaunchDarkly refuses the token, a rotated one is tried at once, and only a
        token the secret still holds dead-letters the changes (with their reason)."""
        calls_before = self.state_calls
        deadline = self.clock() + remaining_seconds - SAFETY_MARGIN_SECONDS
        client, sync = self.synchronizer(token)
        client.reset_stats()
        clients = [client]
        report = sync.sync(records, deadline)
        if report.token_refused and refresh is not None:
            fresh = refresh()
            still = fresh.strip() == token.strip()
            logger.warning(
                "LaunchDarkly refused the token (%s): %s",
                report.token_refused,
                "the secret holds it still: its changes are dead-lettered" if still else "the secret holds a new one",
            )
            client, sync = self.synchronizer(fresh, refusal_is_final=still)
            client.reset_stats()
            clients.append(client)
            again = sync.sync([], deadline)
            report.merge(again)
            report.token_refused, report.oldest_pending = again.token_refused, again.oldest_pending
            report.next_tick, report.continue_now = again.next_tick, again.continue_now
        now = self.clock()
        settlement = settle(report, self.queue, lambda delay: self.log.tick_due(now, now + delay))
        return BatchResult(
            report,
            settlement,
            sum((c.responses for c in clients), Counter()),
            sum(c.retries for c in clients),
            sum(c.rate_limit_waits for c in clients),
            self.state_calls - calls_before,
        )
