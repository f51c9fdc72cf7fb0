"""What a million changes cost, priced from what a simulated run (bench/first_sync.py) counted.

us-east-1 list prices. Counted by the simulation: sync invocations and their billed duration, DynamoDB
write and read units (what the in-process table billed), messages received (ticks and redeliveries
included), ticks and requeues sent. Derived from the change count, stated here: what ingest does (API
Gateway requests, ingest invocations, SendMessageBatch of 10), the event source's ReceiveMessage and
DeleteMessageBatch (10 messages each; the pollers' idle long polls are a fixed cost a month, not per
change), and CloudWatch log bytes (estimates below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.sim_scenario import Outcome

LAMBDA_GB_SECOND = 0.0000133334  # arm64
LAMBDA_REQUEST = 0.20 / 1e6
DYNAMODB_WRITE_UNIT = 0.625 / 1e6  # on-demand
DYNAMODB_READ_UNIT = 0.125 / 1e6
SQS_REQUEST = 0.40 / 1e6  # a 64 KB chunk; a batch of 10 changes is about 4 KB: one
API_GATEWAY_REQUEST = 3.50 / 1e6  # REST
LOG_GB = 0.50  # CloudWatch Logs ingestion

SQS_BATCH = 10  # SendMessageBatch, ReceiveMessage and DeleteMessageBatch take at most 10 messages
INGEST_MEMORY_MB = 512  # template.yaml's Globals
# Ingest's CPU a change: BENCHMARKS.md's full handler with a real botocore SQS client, 8,563 events per
# CPU-second, on a 512 MB function's share of a vCPU (1,769 MB = one), plus a fixed part per request.
INGEST_CPU_SECONDS = 1 / 8563 * 1769 / INGEST_MEMORY_MB
INGEST_REQUEST_SECONDS = 0.020
# Log bytes, estimated from the handlers' lines at the default level (INFO): per sync invocation Lambda's
# START / END / REPORT lines (~450 B with X-Ray), the "batch synced" line with its context (~1,100 B), the
# EMF document of 15 metrics (~1,300 B) and one LaunchDarklyRequests document per status (~400 B); plus a
# ChangeAgeSeconds value a change written (~20 B). Per ingest request: platform lines, "request answered",
# its EMF document (~2,000 B).
SYNC_LOG_BYTES = 3_250
SYNC_LOG_BYTES_A_CHANGE = 20
INGEST_LOG_BYTES = 2_000
SEGMENT_BATCH = 1000  # Segment's batching: events a request
COST_TARGET = 1.00  # dollars per million changes, batched


@dataclass(frozen=True)
class Cost:
    """Dollars per million changes, by service."""

    api_gateway: float
    lambda_: float
    dynamodb: float
    sqs: float
    logs: float

    @property
    def total(self) -> float:
        return self.api_gateway + self.lambda_ + self.dynamodb + self.sqs + self.logs


def per_million(
    *,
    changes: int,
    sync_invocations: int,
    sync_billed_ms: int,
    sync_memory_mb: int,
    write_units: float,
    read_units: float,
    received: int,
    sent_later: int,
    events_a_request: int,
) -> Cost:
    """`received`: messages the event source handed the sync; `sent_later`: ticks and requeues it queued."""
    scale = 1e6 / changes
    requests = math.ceil(changes / events_a_request)
    ingest_seconds = requests * INGEST_REQUEST_SECONDS + changes * INGEST_CPU_SECONDS
    lambda_ = (
        (requests + sync_invocations) * LAMBDA_REQUEST
        + ingest_seconds * INGEST_MEMORY_MB / 1024 * LAMBDA_GB_SECOND
        + sync_billed_ms / 1000 * sync_memory_mb / 1024 * LAMBDA_GB_SECOND
    )
    sends = requests * math.ceil(min(events_a_request, changes) / SQS_BATCH) + sent_later
    sqs = (sends + 2 * math.ceil(received / SQS_BATCH)) * SQS_REQUEST
    logs = (sync_invocations * SYNC_LOG_BYTES + changes * SYNC_LOG_BYTES_A_CHANGE + requests * INGEST_LOG_BYTES) / 1e9
    return Cost(
        api_gateway=requests * API_GATEWAY_REQUEST * scale,
        lambda_=lambda_ * scale,
        dynamodb=(write_units * DYNAMODB_WRITE_UNIT + read_units * DYNAMODB_READ_UNIT) * scale,
        sqs=sqs * scale,
        logs=logs * LOG_GB * scale,
    )


PRICES = (
    "us-east-1 list prices: Lambda arm64 $0.0000133334 a GB-second and $0.20 a million requests; DynamoDB "
    "on-demand $0.625 a million write units, $0.125 a million read units; SQS $0.40 a million requests (64 KB "
    "chunks); API Gateway REST $3.50 a million requests; CloudWatch Logs ingestion $0.50 a GB. Counted in the "
    "simulation: sync invocations and billed duration (memory x duration, rounded up to the ms), DynamoDB units, "
    "messages received, ticks and requeues. Derived: API Gateway and ingest requests (Segment's batching: "
    f"{SEGMENT_BATCH:,} events a request; unbatched: one), ingest's duration ({INGEST_REQUEST_SECONDS * 1000:.0f} ms "
    f"a request + {INGEST_CPU_SECONDS * 1e6:.0f} µs an event at {INGEST_MEMORY_MB} MB, from the ingest section's "
    "real-client figure), SendMessageBatch / ReceiveMessage / DeleteMessageBatch of 10 messages, log bytes "
    f"({SYNC_LOG_BYTES:,} B a sync invocation + {SYNC_LOG_BYTES_A_CHANGE} B a change written, {INGEST_LOG_BYTES:,} B "
    "an ingest request: estimates from the handlers' lines at INFO, bench/cost.py). Not per change, so not here: "
    "the pollers' idle receives, the minute schedule, alarms, dashboards, Secrets Manager."
)


def cost(o: Outcome, events_a_request: int) -> Cost:
    return per_million(
        changes=o.scenario.changes,
        sync_invocations=o.invocations,
        sync_billed_ms=o.billed_ms,
        sync_memory_mb=o.scenario.memory_mb,
        write_units=o.write_units,
        read_units=o.read_units,
        received=o.received,
        sent_later=o.deferred,
        events_a_request=events_a_request,
    )


def cost_rows(label: str, o: Outcome, target: str) -> list[list[str]]:
    rows = []
    for batching, events in ((f"batched ({SEGMENT_BATCH:,} events a request)", SEGMENT_BATCH), ("unbatched", 1)):
        c = cost(o, events)
        rows.append(
            [
                label,
                batching,
                *(f"${x:.3f}" for x in (c.api_gateway, c.lambda_, c.dynamodb, c.sqs, c.logs)),
                f"**${c.total:.2f}**",
                target,
            ]
        )
    return rows


COST_HEADER = ["scenario", "ingest", "API Gateway", "Lambda", "DynamoDB", "SQS", "CloudWatch Logs", "total", "made by"]
