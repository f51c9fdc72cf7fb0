"""Sync Lambda: an SQS batch of membership changes (or the schedule's empty event) → recorded in the pending
log, and the audiences waiting longest reconciled into LaunchDarkly segments; partial batch failures.

Only wiring lives here; every decision is in `ld_audiences.sync`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext

from ld_audiences.aws_clients import client_config
from ld_audiences.config import SEGMENTS_AT_ONCE, STATE_THREADS, SyncSettings
from ld_audiences.gc_policy import settle_after_init
from ld_audiences.outcomes import DEAD_LETTERED, QueuedRecord, SyncReport
from ld_audiences.sync_service import BatchResult, SyncService

settings = SyncSettings.from_env()
logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"ld_audiences"})
metrics = Metrics()
tracer = Tracer()
secrets = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager", config=client_config(threads=1)))
# Made once per execution environment: clients, thread pools and LaunchDarkly connections are reused.
service = SyncService(
    settings=settings,
    dynamodb=boto3.client("dynamodb", config=client_config(threads=SEGMENTS_AT_ONCE + STATE_THREADS)),
    sqs=boto3.client("sqs", config=client_config(threads=STATE_THREADS)),
    segment_pool=ThreadPoolExecutor(max_workers=SEGMENTS_AT_ONCE, thread_name_prefix="segment"),
    state_pool=ThreadPoolExecutor(max_workers=STATE_THREADS, thread_name_prefix="state"),
)
settle_after_init()  # last: everything made above lives as long as the execution environment


# log_event=False, not left to POWERTOOLS_LOGGER_LOG_EVENT: the records hold context keys, often emails.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # The schedule's event (EventBridge) has no records: the invocation only reconciles.
    records = [QueuedRecord(r["messageId"], r["body"], r.get("receiptHandle", "")) for r in event.get("Records", [])]
    token = str(secrets.get(settings.token_secret_id, max_age=settings.secrets_max_age))
    result = service.handle(records, token, context.get_remaining_time_in_millis() / 1000, refresh=read_token_again)
    report, settlement = result.report, result.settlement
    record_metrics(result)
    log_changes(report)
    logger.info(
        "batch synced",
        records=len(records),
        recorded=report.recorded,
        failed=len(settlement.failures),
        audiences=report.audiences,
        reasserts=settlement.reasserts,
        tick=settlement.tick,
        dead_lettered=report.dead_lettered,
        added=report.added,
        removed=report.removed,
        superseded=report.superseded,
        stale=report.stale,
        duplicates=report.duplicates,
        launchdarkly_responses=dict(result.responses),
        retries=result.retries,
        rate_limit_waits=result.rate_limit_waits,
        state_calls=result.state_calls,
    )
    return {"batchItemFailures": [{"itemIdentifier": record_id} for record_id in settlement.failures]}


def read_token_again() -> str:
    """The token as the secret holds it now, past the cache: LaunchDarkly refused the cached one."""
    return str(secrets.get(settings.token_secret_id, max_age=settings.secrets_max_age, force_fetch=True))


def log_changes(report: SyncReport) -> None:
    """One line per record and per change with its Segment messageId as correlation id: ERROR for a
    dead-lettered one, DEBUG for the rest (POWERTOOLS_LOGGER_SAMPLE_RATE turns DEBUG on for a share of
    invocations)."""
    debug = logger.log_level <= logging.DEBUG  # checked once: a disabled call still costs ~2 µs a record
    lines: list[tuple[str, str, str | None, str | None, str, str | None]] = [
        (f"record {r.result}", r.result, r.message_id, r.audience_id, r.detail, r.record_id) for r in report.records
    ]
    lines += [(f"change {c.result}", c.result, c.message_id, c.audience_id, c.detail, None) for c in report.changes]
    for message, result, message_id, audience_id, detail, record_id in lines:
        if result == DEAD_LETTERED or debug:
            (logger.error if result == DEAD_LETTERED else logger.debug)(
                message,
                correlation_id=message_id,
                sqs_message_id=record_id,
                audience_id=audience_id,
                detail=detail or None,
            )


def record_metrics(result: BatchResult) -> None:
    report, settlement = result.report, result.settlement
    for name, value in (
        ("ChangesRecorded", report.recorded),
        ("AudiencesReconciled", report.audiences),
        ("ContextsAdded", report.added),
        ("ContextsRemoved", report.removed),
        ("ChangesSuperseded", report.superseded),
        ("StaleChangesSkipped", report.stale),
        ("DuplicateChangesSkipped", report.duplicates),
        ("RecordsFailed", len(settlement.failures)),
        ("RecordsDeadLettered", report.dead_lettered),
        ("ReassertsQueued", settlement.reasserts),
        ("LaunchDarklyRetries", result.retries),
        ("LaunchDarklyRateLimitWaits", result.rate_limit_waits),
        ("StateTableCalls", result.state_calls),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    # Freshness: the age of the oldest change still pending (0 when none: the alarm treats a missing value as
    # a sync that does not run), and of every change written (ingest's receipt to LaunchDarkly's answer).
    oldest = report.oldest_pending
    metrics.add_metric(
        name="OldestPendingSeconds",
        unit=MetricUnit.Seconds,
        value=max(time.time() - oldest, 0.0) if oldest is not None else 0.0,
    )
    for change in report.changes:
        if change.age is not None:
            metrics.add_metric(name="ChangeAgeSeconds", unit=MetricUnit.Seconds, value=max(change.age, 0.0))
    if is_metrics_disabled():  # single_metric ignores POWERTOOLS_METRICS_DISABLED by itself
        return
    for status, count in result.responses.items():
        with single_metric(
            name="LaunchDarklyRequests", unit=MetricUnit.Count, value=count, namespace=metrics.namespace
        ) as metric:
            metric.add_dimension(name="status", value=status)
