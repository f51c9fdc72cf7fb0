"""Deterministic workloads shaped like real Engage traffic (docs/DESIGN.md, "What Engage sends").

* `engage_events`: identify and track audience events, about 1/20 journey steps with Journeys v1's
  string flags, e-mails in `traits` (identify) or `context.traits` (track), 9-digit timestamps,
  `personas_<KSUID>` message ids, `sentAt: null`, plus the fields Engage sends that nobody reads.
* `sync_batch`: SQS records of membership changes for the sync function: several changes per
  context, Engage's one-event-per-identifier duplicates, SQS redeliveries, shuffled.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ld_audiences.change import MembershipChange
from ld_audiences.sync import QueuedRecord

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
EPOCH = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)


def ksuid(rng: random.Random) -> str:
    return "".join(rng.choice(_BASE62) for _ in range(27))


def timestamp(offset_ns: int) -> str:
    """RFC 3339 with nine fractional digits, as Engage sends them."""
    seconds, nanos = divmod(offset_ns, 1_000_000_000)
    return f"{EPOCH + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


@dataclass(frozen=True)
class Audience:
    audience_id: str
    key: str


def audiences(count: int) -> list[Audience]:
    names = ["beta_testers", "churn_risk_30d", "high_value_customers", "trial_expiring", "mobile_power_users"]
    names += [f"engage_audience_{i}" for i in range(len(names), count)]
    return [Audience(f"aud_{2_000_000 + i:08d}_{name[:6]}", name) for i, name in enumerate(names[:count])]


def engage_event(
    rng: random.Random,
    audience: Audience,
    *,
    user: int,
    included: bool,
    offset_ns: int,
    kind: str,
    with_user_id: bool = True,
    journey_step: bool = False,
) -> dict[str, Any]:
    """One Engage audience event (identify or track) with what Engage really puts around it."""
    email = f"customer.{user:07d}@example-mail.com"
    event_time = timestamp(offset_ns)
    flag: Any = ("true" if included else "false") if journey_step else included
    event: dict[str, Any] = {
        "type": kind,
        "messageId": f"personas_{ksuid(rng)}",
        "timestamp": event_time,
        "originalTimestamp": event_time,
        "receivedAt": timestamp(offset_ns + 41_000_000),
        "sentAt": None,
        "channel": "server",
        "version": 2,
        "anonymousId": f"anon-{rng.getrandbits(64):016x}",
        "integrations": {"All": False, "Webhooks": True},
        "context": {
            "personas": {
                "computation_class": "journey_step" if journey_step else "audience",
                "computation_id": audience.audience_id,
                "computation_key": audience.key,
                "namespace": "spa_9fA3kQx2Lm7tZc1VbN0pRw",
                "space_id": "spa_9fA3kQx2Lm7tZc1VbN0pRw",
            },
            "library": {"name": "unknown", "version": "unknown"},
        },
    }
    if with_user_id:
        event["userId"] = f"user-{user:07d}"
    if kind == "identify":
        event["traits"] = {audience.key: flag, "email": email}
    else:
        event["event"] = "Audience Entered" if included else "Audience Exited"
        event["properties"] = {"audience_key": audience.key, audience.key: flag}
        event["context"]["traits"] = {"email": email}
    return event


def engage_events(count: int, *, seed: int = 5, audience_count: int = 5, users: int = 20_000) -> list[dict[str, Any]]:
    """A realistic mix: half identify, half track; 1 in 20 journey steps ("true"/"false" strings);
    1 in 10 without userId (the e-mail is the key under `user_id_then_email`)."""
    rng = random.Random(seed)
    pool = audiences(audience_count)
    out = []
    for i in range(count):
        out.append(
            engage_event(
                rng,
                rng.choice(pool),
                user=rng.randrange(users),
                included=rng.random() < 0.7,
                offset_ns=i * 3_217_000 + rng.randrange(1_000_000),
                kind="identify" if rng.random() < 0.5 else "track",
                with_user_id=rng.random() >= 0.1,
                journey_step=rng.random() < 0.05,
            )
        )
    return out


# ----------------------------------------------------------------------------------------- sync batches


@dataclass
class SyncWorkload:
    records: list[QueuedRecord]
    changes: list[MembershipChange]  # record i carries changes[i]
    redelivered: int = 0  # records that are an SQS redelivery of another record (same body)
    identifier_duplicates: int = 0  # Engage's one-event-per-identifier copies (same change, new messageId)
    notes: dict[str, int] = field(default_factory=dict)


def _record(rng: random.Random, change: MembershipChange) -> QueuedRecord:
    return QueuedRecord(f"{rng.getrandbits(128):032x}", change.to_message())


def sync_batch(
    records: int = 10_000,
    *,
    audience_count: int = 5,
    contexts_per_audience: int = 600,
    seed: int = 7,
    start_ns: int = 0,
    redeliver: float = 0.03,
    identifier_duplicates: float = 0.07,
    replay_of: SyncWorkload | None = None,
    replay_share: float = 0.0,
) -> SyncWorkload:
    """`records` SQS records over `audience_count` audiences, each audience's changes drawn from a pool
    of `contexts_per_audience` context keys (overlapping between audiences, as one profile is in
    several audiences), so each context changes several times per batch.

    `redeliver` of the records repeat another record's body (SQS at-least-once), `identifier_duplicates`
    repeat a change under a new messageId (Engage sends one event per identifier of a profile).
    With `replay_of`, `replay_share` of the records are redeliveries of that earlier batch (late
    retries: stale or already applied).
    """
    rng = random.Random(seed)
    pool = audiences(audience_count)
    fresh = records
    out: list[MembershipChange] = []
    if replay_of is not None and replay_share > 0:
        replays = int(records * replay_share)
        out += rng.sample(replay_of.changes, min(replays, len(replay_of.changes)))
        fresh -= len(out)
    n_redeliver = int(fresh * redeliver)
    n_ident = int(fresh * identifier_duplicates)
    originals = fresh - n_redeliver - n_ident
    new: list[MembershipChange] = []
    for i in range(originals):
        audience = pool[i % audience_count]
        # A profile appears in several audiences: keys overlap between the audience pools.
        user = rng.randrange(contexts_per_audience) + (pool.index(audience) * contexts_per_audience) // 3
        new.append(
            MembershipChange(
                audience_id=audience.audience_id,
                audience_key=audience.key,
                context_kind="user",
                context_key=f"user-{user:07d}",
                included=rng.random() < 0.6,
                event_time=timestamp(start_ns + rng.randrange(3_600_000_000_000)),
                message_id=f"personas_{ksuid(rng)}",
            )
        )
    idents = [c.model_copy(update={"message_id": f"personas_{ksuid(rng)}"}) for c in rng.choices(new, k=n_ident)]
    out += new + idents
    rng.shuffle(out)
    workload_records = [_record(rng, c) for c in out]
    # SQS redeliveries: the very same body again under a new SQS messageId.
    for _ in range(n_redeliver):
        i = rng.randrange(len(out))
        out.append(out[i])
        workload_records.append(QueuedRecord(f"{rng.getrandbits(128):032x}", workload_records[i].body))
    order = list(range(len(out)))
    rng.shuffle(order)
    return SyncWorkload(
        records=[workload_records[i] for i in order],
        changes=[out[i] for i in order],
        redelivered=n_redeliver,
        identifier_duplicates=n_ident,
    )


def sqs_event(records: list[QueuedRecord], queue_arn: str = "arn:aws:sqs:us-east-1:123456789012:changes") -> str:
    """The Lambda SQS event for `records`, as the JSON text the runtime receives."""
    return json.dumps(
        {
            "Records": [
                {
                    "messageId": r.record_id,
                    "receiptHandle": "AQEB" + r.record_id * 5,
                    "body": r.body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": "1795600000000",
                        "SenderId": "AROAEXAMPLE:ld-audiences-ingest",
                        "ApproximateFirstReceiveTimestamp": "1795600000100",
                    },
                    "messageAttributes": {},
                    "md5OfBody": "0" * 32,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_arn,
                    "awsRegion": "us-east-1",
                }
                for r in records
            ]
        }
    )
