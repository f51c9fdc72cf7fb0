"""What one sync execution environment holds and does per batch, free of Lambda's entry point.

functions/sync/app.py builds one `SyncService` from the environment with real AWS clients and thread
pools; the simulation (bench/first_sync.py) builds it with the same classes over in-process AWS and
LaunchDarkly stand-ins, a virtual clock and virtual thread pools. Both run `handle` unchanged.
"""

from __future__ import annotations

import time
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
from ld_audiences.sqs_queue import SqsChangeQueue
from ld_audiences.sync import RECONCILE_SECONDS, Synchronizer
from ld_audiences.writers import make_writer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

# Stop starting LaunchDarkly calls this long before the Lambda timeout, so the batch response
# (and the failed records in it) always gets back to SQS.
SAFETY_MARGIN_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class BatchResult:
    report: SyncReport
    settlement: Settlement
    client: LaunchDarklyClient  # its counters cover this batch
    state_calls: int  # DynamoDB calls of this batch (state store and rate-limit window)


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

    def synchronizer(self, token: str) -> tuple[LaunchDarklyClient, Synchronizer]:
        """Reuse the client and writer while the token is unchanged (a rotated token takes effect once
        the secret's cache expires)."""
        token = token.strip()
        if token in ("", TOKEN_PLACEHOLDER):
            # Fail the whole batch loudly (Errors alarm); the changes wait in SQS, then the DLQ, for redrive.
            raise ConfigError("the LaunchDarkly token secret is not set: put the token with put-secret-value")
        if self._current is None or self._current[0] != token:
            client = LaunchDarklyClient(
                self.settings.launchdarkly.base_url,
                token,
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
                clock=self.clock,
            )
            self._current = (token, client, sync)
        return self._current[1], self._current[2]

    @property
    def state_calls(self) -> int:
        return self.log.calls + self.states.calls + self.rate_limit.calls

    def handle(self, records: Sequence[QueuedRecord], token: str, remaining_seconds: float) -> BatchResult:
        """Record a batch (none for a scheduled invocation) and reconcile, then queue what comes back later;
        `remaining_seconds` is what the invocation has left."""
        client, sync = self.synchronizer(token)
        client.reset_stats()
        calls_before = self.state_calls
        deadline = self.clock() + remaining_seconds - SAFETY_MARGIN_SECONDS
        report = sync.sync(records, deadline)
        now = self.clock()
        settlement = settle(report, self.queue, lambda delay: self.log.tick_due(now, now + delay))
        return BatchResult(report, settlement, client, self.state_calls - calls_before)
