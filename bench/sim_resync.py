"""The resync rows of the first-sync simulation: the state a resync starts from, what `status`, `resync`
and `audit` read of it (the real operator functions, on the in-process AWS, outside virtual time)."""

from __future__ import annotations

import time
from typing import Any

import boto3

from bench.sim_aws import InProcessDynamoDB, InProcessSqs, attach
from bench.sim_launchdarkly import LaunchDarklyModel, session_for
from bench.sim_scenario import QUEUE_URL, TABLE, TOKEN, Scenario
from bench.sim_workload import AUDIENCE_ID, AUDIENCE_KEY, body
from ld_audiences.aws_clients import client_config
from ld_audiences.config import STATE_THREADS
from ld_audiences_local.models.rate_window import RouteRateLimit


def _plain_client(service: str, answering: Any) -> Any:
    """A real boto3 client answered in process, outside virtual time (the tools are not timed here)."""
    session = boto3.session.Session(
        aws_access_key_id="simulated",
        aws_secret_access_key="simulated",  # noqa: S106 (nothing checks them: no network)
        region_name="us-east-1",
    )
    return attach(session.client(service, config=client_config(threads=STATE_THREADS)), answering)


def prepare_resync(scenario: Scenario, dynamodb: InProcessDynamoDB, reads: dict[str, float]) -> list[str]:
    """The state a resync starts from (every member written by the real `ContextStates`), what `status`
    reads of it, and the reasserts `ld-audiences resync` queues (their bodies, in order)."""
    from ld_audiences.audiences import AudienceReader
    from ld_audiences.change import MembershipChange
    from ld_audiences.context_state import ContextStates
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences_cli import resync, status

    client = _plain_client("dynamodb", dynamodb)
    states = ContextStates(client, TABLE)
    for start in range(0, scenario.changes, 1000):
        changes = [MembershipChange.from_message(body(i)) for i in range(start, min(start + 1000, scenario.changes))]
        states.write(changes)
        states.record_write(AUDIENCE_ID, AUDIENCE_KEY, "user", changes)
    reader = AudienceReader(client, TABLE)
    before = reader.usage
    status.collect(reader, None, None, None, audience_id=AUDIENCE_ID)
    after = reader.usage
    reads["status_read_units"], reads["status_calls"] = after.read_units - before.read_units, after.calls - before.calls
    bodies: list[str] = []
    queue = SqsChangeQueue(_plain_client("sqs", InProcessSqs(lambda sent: bodies.append(sent.body))), QUEUE_URL)
    progress = resync.resync(reader, queue, AUDIENCE_ID, AUDIENCE_KEY, "user")
    done = reader.usage
    reads["resync_read_units"], reads["resync_calls"] = done.read_units - after.read_units, done.calls - after.calls
    if progress.queued != scenario.changes or len(bodies) != scenario.changes:
        raise AssertionError(f"resync queued {progress.queued} of {scenario.changes}")
    return bodies


def audit_after_resync(dynamodb: InProcessDynamoDB, launchdarkly: LaunchDarklyModel, reads: dict[str, float]) -> None:
    """`ld-audiences audit --sample 1000` against the segment the resync restored: its reads and GETs."""
    import random

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.launchdarkly import LaunchDarklyClient
    from ld_audiences_cli import audit

    # LaunchDarkly's reads, answered at once: the audit's time is its GETs at the rate limit (reported).
    model = LaunchDarklyModel(
        clock=time.time, block=lambda seconds: None, rate_limit=RouteRateLimit(10**9), members=launchdarkly.members
    )
    client = LaunchDarklyClient("https://app.launchdarkly.com", TOKEN, session=session_for(model))
    key = f"segment-audiences-{AUDIENCE_ID}"  # the simulated segment's key, as `audit --segment-key` gives it
    reader = AudienceReader(_plain_client("dynamodb", dynamodb), TABLE)
    result = audit.audit(
        reader,
        audit.SegmentMembership(client, "default", "production", key),
        AUDIENCE_ID,
        "user",
        sample=1000,
        rng=random.Random(1),
    )
    reads.update(
        audit_read_units=result.read_units,
        audit_calls=reader.usage.calls,
        audit_gets=model.reads,
        audit_checked=result.checked,
        audit_drift=result.drift,
    )
