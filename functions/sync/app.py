"""Sync Lambda: SQS batch of membership changes → LaunchDarkly segments, partial batch failures.

Only wiring lives here; every decision is in `ld_audiences.sync`.
"""

from __future__ import annotations

import logging
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
from ld_audiences.sync import DEAD_LETTERED, QueuedRecord, SyncReport
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


# log_event=False, not left to POWERTOOLS_LOGGER_LOG_EVENT: the records hold context keys, often emails.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = [QueuedRecord(r["messageId"], r["body"], r.get("receiptHandle", "")) for r in event.get("Records", [])]
    token = str(secrets.get(settings.token_secret_id, max_age=settings.secrets_max_age))
    result = service.handle(records, token, context.get_remaining_time_in_millis() / 1000)
    report, settlement, client = result.report, result.settlement, result.client
    record_metrics(result)
    log_changes(report)
    logger.info(
        "batch synced",
        records=len(records),
        failed=len(settlement.failures),
        deferred=settlement.requeued,
        reasserts=settlement.reasserts,
        dead_lettered=report.dead_lettered,
        added=report.added,
        removed=report.removed,
        superseded=report.superseded,
        stale=report.stale,
        duplicates=report.duplicates,
        busy=report.busy,
        launchdarkly_responses=dict(client.responses),
        retries=client.retries,
        rate_limit_waits=client.rate_limit_waits,
        state_calls=result.state_calls,
    )
    return {"batchItemFailures": [{"itemIdentifier": record_id} for record_id in settlement.failures]}


def log_changes(report: SyncReport) -> None:
    """One line per change with its Segment messageId as correlation id: ERROR for a dead-lettered one,
    DEBUG for the rest (POWERTOOLS_LOGGER_SAMPLE_RATE turns DEBUG on for a share of invocations)."""
    debug = logger.log_level <= logging.DEBUG  # checked once: a disabled call still costs ~2 µs a record
    for outcome in report.outcomes:
        if outcome.result == DEAD_LETTERED:
            log = logger.error
        elif debug:
            log = logger.debug
        else:
            continue
        log(
            f"change {outcome.result}",
            correlation_id=outcome.message_id,
            sqs_message_id=outcome.record_id,
            audience_id=outcome.audience_id,
            detail=outcome.detail or None,
        )


def record_metrics(result: BatchResult) -> None:
    report, settlement, client = result.report, result.settlement, result.client
    for name, value in (
        ("ContextsAdded", report.added),
        ("ContextsRemoved", report.removed),
        ("ChangesSuperseded", report.superseded),
        ("StaleChangesSkipped", report.stale),
        ("DuplicateChangesSkipped", report.duplicates),
        ("ChangesBusy", report.busy),
        ("RecordsFailed", len(settlement.failures)),
        ("RecordsDeferred", settlement.requeued),
        ("RecordsDeadLettered", report.dead_lettered),
        ("ReassertsQueued", settlement.reasserts),
        ("LaunchDarklyRetries", client.retries),
        ("LaunchDarklyRateLimitWaits", client.rate_limit_waits),
        ("StateTableCalls", result.state_calls),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if is_metrics_disabled():  # single_metric ignores POWERTOOLS_METRICS_DISABLED by itself
        return
    for status, count in client.responses.items():
        with single_metric(
            name="LaunchDarklyRequests", unit=MetricUnit.Count, value=count, namespace=metrics.namespace
        ) as metric:
            metric.add_dimension(name="status", value=status)
