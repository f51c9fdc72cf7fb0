"""The first-sync simulation's in-process DynamoDB (bench/sim_aws/) answers the product like moto does.

The simulation times the product's real code over that stand-in, so its answers must be DynamoDB's: the
same pending-log, context-state and rate-limit sequence, and the whole sync, run against moto and against
the stand-in, each behind a real boto3 client, and every outcome and every item must agree.
"""

from __future__ import annotations

import base64
import functools
import itertools
import random
import re
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.fakes import NullDeadLetters, RecordingSession
from bench.sim_aws import InProcessDynamoDB, attach
from bench.virtual_time import LAMBDA_VCPU_MB, Cpu, VirtualTime
from ld_audiences.aws_clients import client_config
from ld_audiences.change import MembershipChange
from ld_audiences.context_state import ContextStates
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.pending_log import Lease, PendingLog
from ld_audiences.rate_limit import SharedRateLimit, Window
from ld_audiences.state_table import audience_partitions, pending_partition, table_definition, work_item_key
from ld_audiences.sync import Synchronizer
from ld_audiences.writers import SegmentAudiencesWriter, Target
from tests import audience_state
from tests.conftest import Aws


@pytest.fixture
def clients(aws: Aws) -> tuple[Any, Any]:
    """moto in server mode (not mock_aws: it would answer the stand-in's client too) and the stand-in."""
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    simulated = InProcessDynamoDB(time.time)
    simulated.create_table(table_definition(aws.table))
    moto = session.client("dynamodb", endpoint_url=aws.endpoint)
    moto.meta.events.register("before-parameter-build.dynamodb.Query", _remember_limit)
    moto.meta.events.register("after-call.dynamodb.Query", _last_key_at_the_limit)
    return moto, attach(session.client("dynamodb"), simulated)


def _remember_limit(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["query_limit"] = params.get("Limit")


def _last_key_at_the_limit(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """DynamoDB answers a Query page that stops at its Limit with a LastEvaluatedKey, whether or not more items
    follow (its Query reference: "If DynamoDB processes the number of items up to the limit ..., it stops the
    operation and returns ... a key in LastEvaluatedKey"); moto only when more follow. The stand-in answers as
    DynamoDB, so moto's answer is completed the same way (base-table queries; the index pages never fill here)."""
    limit, items = context.get("query_limit"), parsed.get("Items", [])
    if limit and parsed.get("ScannedCount") == limit and items and "LastEvaluatedKey" not in parsed:
        parsed["LastEvaluatedKey"] = {"pk": items[-1]["pk"], "sk": items[-1]["sk"]}


def change(key: str, second: int, included: bool = True, *, reassert: bool = False) -> MembershipChange:
    return audience_state.change("aud_1", key, included, second=second).model_copy(update={"reassert": reassert})


def everything(client: Any, table: str) -> list[dict[str, Any]]:
    items = []
    pks = ["audiences", "launchdarkly"]
    for audience in ("aud_1", "aud_2"):
        pks += audience_partitions(audience, "user") + [pending_partition(audience, "user", p) for p in range(4)]
        pks.append(work_item_key(audience, "user")["pk"]["S"])
    for pk in pks:
        items += client.query(
            TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": pk}}
        )["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_the_pending_log_context_states_and_rate_limit_window_get_moto_s_answers(
    clients: tuple[Any, Any], aws: Aws
) -> None:
    """A random sequence of what the sync does to the state table — record batches, take, read and finish
    an audience, write and read context items, ask for a tick, spend the rate-limit window — against moto
    and the stand-in in lockstep: every answer, then every item, the same."""
    now = [1_800_000_000.0]
    # the same lease owners and log item ids in both
    uuids = [(uuid.UUID(int=i) for i in itertools.count()) for _ in (0, 1)]

    def fixed_uuid(side: int) -> Any:
        return mock.patch("ld_audiences.pending_log.uuid.uuid4", side_effect=uuids[side])

    logs = [PendingLog(client, aws.table, clock=lambda: now[0]) for client in clients]
    states = [ContextStates(client, aws.table, clock=lambda: now[0]) for client in clients]
    windows = [SharedRateLimit(client, aws.table) for client in clients]
    targets = [Target("aud_1", "beta", "user"), Target("aud_2", "gamma", "user")]
    leases: list[Lease | None] = [None, None]  # by audience: the same lease (owner, until, seq) in both
    rng = random.Random(7)
    keys = [f"user-{i}" for i in range(12)]

    def both(objects: list[Any], method: str, *args: Any) -> Any:
        found = []
        for side in (0, 1):
            with fixed_uuid(side):
                found.append(getattr(objects[side], method)(*args))
        assert found[0] == found[1], (method, found)
        return found[0]

    def take(log: PendingLog, audience_id: str, until: float) -> Any:
        lease = log.take(audience_id, "user", until)
        return lease and (lease.owner, lease.until, lease.seq)

    def read_finish(log: PendingLog, lease: Lease, budget: int, keep: int, started: float) -> Any:
        read = log.read(lease, budget)
        resolved, rest = read.items[:keep], read.items[keep:]
        rest_since = min([i.received_at for i in rest] + ([read.rest_since] if read.rest_since else []), default=None)
        log.finish(lease, resolved, rest_since, started=started)
        return [(i.key, i.received_at, [c.order for c in i.changes]) for i in read.items], read.rest_since

    sides = [
        SimpleNamespace(take=functools.partial(take, log), read_finish=functools.partial(read_finish, log))
        for log in logs
    ]

    for step in range(150):
        now[0] += rng.choice([0.5, 3, 40])
        which = rng.randrange(2)
        target = targets[which]
        picked = rng.sample(keys, rng.randint(1, 5))
        changes = [
            change(k, rng.randint(0, 59), rng.random() < 0.7).model_copy(update={"audience_id": target.audience_id})
            for k in picked
        ]
        kind = rng.choice(["record", "record", "take", "read_finish", "states", "index", "tick", "window"])
        if kind == "record":
            both(logs, "record", [(target, changes)])
        elif kind == "take":
            taken = both(sides, "take", target.audience_id, now[0] + 30)
            lease = Lease(target, *taken) if taken else leases[which]
            leases[which] = lease
        elif kind == "read_finish" and (lease := leases[which]) is not None:
            both(sides, "read_finish", lease, rng.choice([1, 3, 1000]), rng.randint(0, 3), now[0] - 1)
            leases[which] = None
        elif kind == "states":
            both(states, "write", changes)
            both(states, "read", target.audience_id, "user", picked)
            if step % 3 == 0:
                both(states, "record_write", target.audience_id, target.audience_key, "user", changes)
        elif kind == "index":
            both(
                [SimpleNamespace(audiences=lambda log=log: list(log.pending_audiences())) for log in logs], "audiences"
            )
        elif kind == "tick":
            both(logs, "tick_due", now[0], now[0] + rng.choice([1, 5, 60]))
        else:
            learned = Window(rng.randint(0, 3), now[0] + rng.choice([-1, 1, 5]))
            for window in windows:
                window.learn(learned)
            assert len({window.acquire(now[0]) for window in windows}) == 1, step
    moto_items, simulated_items = (everything(client, aws.table) for client in clients)
    assert len(moto_items) > 10
    assert simulated_items == moto_items


def test_the_synchronizer_leaves_the_same_table_and_segments_on_moto_and_on_the_stand_in(
    clients: tuple[Any, Any], aws: Aws
) -> None:
    """The whole sync, record then reconcile, over both: the same report, LaunchDarkly writes and items, with
    batches that supersede, repeat and go stale, over two audiences and chunks of 3."""
    rng = random.Random(11)
    batches = [
        [
            QueuedRecord(
                f"m-{b}-{i}",
                change(f"user-{rng.randrange(15)}", rng.randint(0, 59), rng.random() < 0.7)
                .model_copy(update={"audience_id": rng.choice(["aud_1", "aud_2"])})
                .to_message(),
            )
            for i in range(25)
        ]
        for b in range(4)
    ]
    results = []
    for client in clients:
        session = RecordingSession()
        launchdarkly = LaunchDarklyClient("https://app.launchdarkly.com", "api-x", session=session)  # type: ignore[arg-type]
        sync = Synchronizer(
            writer=SegmentAudiencesWriter(launchdarkly, "client-side-id"),
            log=PendingLog(client, aws.table, clock=lambda: 1_800_000_000.0),
            states=ContextStates(client, aws.table, clock=lambda: 1_800_000_000.0),
            dead_letters=NullDeadLetters(),
            chunk_size=3,
            reconcile_seconds=600,
            clock=lambda: 1_800_000_000.0,
        )
        reports = []
        ids = (uuid.UUID(int=i) for i in itertools.count())
        with mock.patch("ld_audiences.pending_log.uuid.uuid4", side_effect=ids):
            for batch in batches:
                report = sync.sync(batch, deadline=1_800_000_600.0)
                reports.append((dict(report.counts), report.audiences, report.next_tick))
        results.append((reports, [(r.items, r.bytes) for r in session.requests], session.members))
    assert results[0] == results[1]
    assert sum(sum(counts.get(k, 0) for k in ("added", "removed")) for counts, _, _ in results[0][0]) > 0
    moto_items, simulated_items = (everything(client, aws.table) for client in clients)
    assert simulated_items == moto_items


# ----------------------------------------------------------------------------------------- the new sync's operations

INDEX = "by-group"
INDEXED_TABLE: dict[str, Any] = {
    "BillingMode": "PAY_PER_REQUEST",
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": kind}
        for name, kind in (("pk", "S"), ("sk", "S"), ("g", "S"), ("r", "N"))
    ],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    "GlobalSecondaryIndexes": [
        {
            "IndexName": INDEX,
            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ],
}
VALUES: dict[str, Any] = {
    ":v": {"N": "3"},
    ":w": {"N": "7"},
    ":z": {"N": "0"},
    ":one": {"N": "1"},
    ":g": {"S": "group-a"},
    ":h": {"S": "group-b"},
    ":r": {"N": "42"},
    ":b": {"B": b"\x00\xffbinary"},
}


@pytest.fixture
def indexed(aws: Aws) -> tuple[tuple[Any, Any], str]:
    """A table with a keys-only global secondary index, in moto and in the stand-in."""
    name = f"indexed-{uuid.uuid4().hex[:8]}"
    aws.dynamodb.create_table(TableName=name, **INDEXED_TABLE)
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    simulated = InProcessDynamoDB(time.time)
    simulated.create_table({"TableName": name, **INDEXED_TABLE})
    return (aws.dynamodb, attach(session.client("dynamodb"), simulated)), name


def answers(clients: tuple[Any, Any], operation: str, **request: Any) -> list[Any]:
    """What each client answers: the response without metadata, or the error code and the item it returns."""
    text = " ".join(
        str(request.get(k, "")) for k in ("ConditionExpression", "UpdateExpression", "KeyConditionExpression")
    )
    used = {k: v for k, v in VALUES.items() if re.search(re.escape(k) + r"\b", text)}
    if used and "ExpressionAttributeValues" not in request:
        request["ExpressionAttributeValues"] = used
    found = []
    for client in clients:
        try:
            response = getattr(client, operation)(**request)
        except ClientError as exc:
            found.append((exc.response["Error"]["Code"], exc.response.get("Item")))
        else:
            # moto adds an empty ItemCollectionMetrics nobody asked for
            extra = ("ResponseMetadata", "ConsumedCapacity", "ItemCollectionMetrics")
            found.append({k: v for k, v in response.items() if k not in extra})
    return found


def pages(client: Any, **request: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.query(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def contents(client: Any, table: str) -> tuple[list[Any], list[Any]]:
    """Every item, and every index entry of both groups."""
    items = [
        pages(client, TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": p}})
        for p in "ab"
    ]
    entries = [
        pages(
            client,
            TableName=table,
            IndexName=INDEX,
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": g},
        )
        for g in (VALUES[":g"], VALUES[":h"])
    ]
    return items, entries


# (expression, whether every attribute it names changes value): moto finds UPDATED_OLD / UPDATED_NEW by
# comparing the item before and after, DynamoDB returns what the expression names, so those are asked
# only where the two agree.
UPDATES = [
    ("SET n = if_not_exists(n, :z) + :one ADD c :one", True),
    ("SET r = r + :one", True),  # r missing: both refuse
    ("SET g = :g, r = if_not_exists(r, :z) + :one", False),
    ("SET #b = :b REMOVE g", False),
    ("ADD c :one SET r = if_not_exists(r, :v), g = :h", False),
    ("REMOVE r SET n = :w", False),
]
CONDITIONS = [
    None,
    "attribute_exists(pk)",
    "attribute_not_exists(pk)",
    "(n >= :v AND n <= :w) OR c <> :one",
    "NOT (n = :v) AND attribute_exists(g)",
    "n < :w",
]


def test_single_item_writes_and_their_returned_values_get_moto_s_answers(indexed: tuple[tuple[Any, Any], str]) -> None:
    clients, table = indexed
    rng = random.Random(11)
    for step in range(250):
        key = {"pk": {"S": rng.choice("ab")}, "sk": {"S": str(rng.randint(1, 5))}}
        condition = rng.choice(CONDITIONS)
        request: dict[str, Any] = {"TableName": table, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if condition:
            request["ConditionExpression"] = condition
        kind = rng.choice(["put_item", "update_item", "update_item", "delete_item"])
        if kind == "put_item":
            item = {**key, "n": {"N": str(rng.randint(0, 9))}, "blob": {"B": rng.randbytes(rng.randint(1, 40))}}
            if rng.random() < 0.6:
                item |= {"g": rng.choice([VALUES[":g"], VALUES[":h"]]), "r": {"N": str(rng.randint(0, 99))}}
            request |= {"Item": item, "ReturnValues": rng.choice(["NONE", "ALL_OLD"])}
        elif kind == "update_item":
            expression, changes_all = rng.choice(UPDATES)
            returned = ["NONE", "ALL_NEW", "ALL_OLD"] + (["UPDATED_NEW", "UPDATED_OLD"] if changes_all else [])
            request |= {"Key": key, "UpdateExpression": expression, "ReturnValues": rng.choice(returned)}
            if "#b" in expression:
                request["ExpressionAttributeNames"] = {"#b": "blob"}
        else:
            request |= {"Key": key, "ReturnValues": rng.choice(["NONE", "ALL_OLD"])}
        moto, simulated = answers(clients, kind, **request)
        if str(request.get("ReturnValues")).startswith("UPDATED") and "Attributes" in moto:
            # moto counts the keys of an item the update creates as updated; an expression cannot name them
            moto["Attributes"] = {k: v for k, v in moto["Attributes"].items() if k not in key}
        assert simulated == moto, (step, request)
    assert contents(clients[1], table) == contents(clients[0], table)
    assert any(contents(clients[0], table)[1])


def test_batch_writes_get_moto_s_answers(indexed: tuple[tuple[Any, Any], str]) -> None:
    clients, table = indexed
    rng = random.Random(5)
    for _ in range(20):
        keys = rng.sample([(p, str(s)) for p in "ab" for s in range(13)], rng.randint(1, 25))
        requests = [
            {"DeleteRequest": {"Key": {"pk": {"S": p}, "sk": {"S": s}}}}
            if rng.random() < 0.3
            else {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": p},
                        "sk": {"S": s},
                        "g": VALUES[":g"],
                        "r": {"N": str(rng.randint(0, 9999))},
                        "blob": {"B": rng.randbytes(2000)},
                    }
                }
            }
            for p, s in keys
        ]
        moto, simulated = answers(clients, "batch_write_item", RequestItems={table: requests})
        assert simulated == moto == {"UnprocessedItems": {}}
    twice = [{"DeleteRequest": {"Key": {"pk": {"S": "a"}, "sk": {"S": "1"}}}}] * 2
    assert {a[0] for a in answers(clients, "batch_write_item", RequestItems={table: twice})} == {"ValidationException"}
    assert contents(clients[1], table) == contents(clients[0], table)


def test_queries_of_the_table_and_of_the_index_get_moto_s_answers(indexed: tuple[tuple[Any, Any], str]) -> None:
    clients, table = indexed
    for client in clients:
        for start in range(0, 60, 20):
            client.batch_write_item(
                RequestItems={
                    table: [
                        {
                            "PutRequest": {
                                "Item": {
                                    "pk": {"S": "a"},
                                    "sk": {"S": f"s{i:02d}"},
                                    **({"g": VALUES[":g"], "r": {"N": str(100 - i)}} if i % 3 else {}),
                                }
                            }
                        }
                        for i in range(start, start + 20)
                    ]
                }
            )
    table_queries = [
        ("pk = :p", {}),
        ("pk = :p AND sk > :s", {":s": {"S": "s17"}}),
        ("pk = :p AND begins_with(sk, :s)", {":s": {"S": "s2"}}),
        ("pk = :p AND sk BETWEEN :s AND :t", {":s": {"S": "s05"}, ":t": {"S": "s33"}}),
        ("pk = :p AND sk <= :s", {":s": {"S": "s40"}}),
    ]
    for condition, values in table_queries:
        for forward, limit, consistent in ((True, 7, True), (False, 4, False), (True, 100, False)):
            request = {
                "TableName": table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": {":p": {"S": "a"}, **values},
                "ScanIndexForward": forward,
                "Limit": limit,
                "ConsistentRead": consistent,
            }
            assert pages(clients[1], **request) == pages(clients[0], **request), request
    index_queries = [
        ("g = :g", {}),
        ("g = :g AND r > :r", {":r": {"N": "70"}}),
        ("g = :g AND r < :r", {":r": {"N": "70"}}),
        ("g = :g AND r BETWEEN :r AND :t", {":r": {"N": "50"}, ":t": {"N": "80"}}),
        ("g = :g AND r = :r", {":r": {"N": "64"}}),
    ]
    for condition, values in index_queries:
        for forward, limit in ((True, 6), (False, 5), (False, 100)):
            request = {
                "TableName": table,
                "IndexName": INDEX,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": {":g": VALUES[":g"], **values},
                "ScanIndexForward": forward,
                "Limit": limit,
            }
            found = [pages(client, **request) for client in clients]
            assert found[1] == found[0], request
    request = {"TableName": table, "IndexName": INDEX, "KeyConditionExpression": "g = :g", "ConsistentRead": True}
    assert [a[0] for a in answers(clients, "query", **request)] == ["ValidationException"] * 2


# ----------------------------------------------------------------------------------------- billing and throttling


class Clock:
    """Virtual time the stand-in reads and botocore's retries wait on."""

    def __init__(self, now: float) -> None:
        self.now, self.slept = now, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stand_in(
    clock: Callable[[], float], sleep: Callable[[float], None], attempts: int | None = None, **limits: Any
) -> tuple[InProcessDynamoDB, Any]:
    """The stand-in with the indexed table "t", and a client configured as the product's (or with `attempts`)."""
    db = InProcessDynamoDB(clock, **limits)
    db.create_table({"TableName": "t", **INDEXED_TABLE})
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    config = client_config(threads=1)
    if attempts is not None:
        config = config.merge(Config(retries={"mode": "standard", "total_max_attempts": attempts}))
    return db, attach(session.client("dynamodb", config=config), db, sleep=sleep)


def put(pk: str, sk: str, size: int = 1000, **extra: Any) -> dict[str, Any]:
    """A PutItem request of one write unit (size < 1 KB) on partition key pk."""
    return {"TableName": "t", "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "x": {"B": b"x" * size}, **extra}}


def put_directly(db: InProcessDynamoDB, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """PutItem without a client (fast): binary values as they travel, in base64."""
    item = {k: {"B": base64.b64encode(v["B"]).decode()} if "B" in v else v for k, v in request["Item"].items()}
    return db.answer("PutItem", {**request, "Item": item})


def fill(db: InProcessDynamoDB, pk: str, units: int) -> None:
    for i in range(units):
        assert put_directly(db, put(pk, f"fill-{i}"))[0] == 200


def test_writes_are_billed_by_size_and_index_writes_by_what_changes_in_the_index() -> None:
    db = InProcessDynamoDB(Clock(1_800_000_000.5))
    db.create_table({"TableName": "t", **INDEXED_TABLE})
    key = {"pk": {"S": "a"}, "sk": {"S": "1"}}

    def update(expression: str, values: dict[str, Any] | None = None) -> tuple[float, float]:
        before = (db.usage.write_units, db.usage.index_write_units)
        request = {"TableName": "t", "Key": key, "UpdateExpression": expression}
        assert db.answer("UpdateItem", request | ({"ExpressionAttributeValues": values} if values else {}))[0] == 200
        return db.usage.write_units - before[0], db.usage.index_write_units - before[1]

    assert put_directly(db, put("a", "1", size=3000))[0] == 200
    assert db.usage.write_units == 3  # binary billed by its length: 3 started KB
    assert update("SET g = :g", {":g": VALUES[":g"]}) == (3, 0)  # one index key: not in the index
    assert update("SET r = :r", {":r": VALUES[":r"]}) == (4, 1)  # appears: a put
    assert update("SET n = :w", {":w": VALUES[":w"]}) == (3, 0)  # index keys unchanged
    assert update("SET r = :v", {":v": VALUES[":v"]}) == (5, 2)  # moves: a delete and a put
    assert update("REMOVE g") == (4, 1)  # disappears: a delete
    assert db.answer("DeleteItem", {"TableName": "t", "Key": key})[0] == 200
    assert db.usage.write_units == 3 + 3 + 4 + 3 + 5 + 4 + 3  # a delete is billed by the deleted item


def test_a_burst_above_a_partition_key_s_limit_is_throttled_and_botocore_retries_land_it_later() -> None:
    random.seed(3)  # botocore's backoff jitter: the waits are the same every run
    simulated = VirtualTime(1_800_000_000.5)
    db, client = stand_in(simulated.time, simulated.sleep)
    fill(db, "hot", 1000)  # outside any task: all in the first second
    landed: list[float] = []

    def task() -> None:
        client.put_item(**put("cold", "1"))  # another key of the same second has its own 1,000
        client.put_item(**put("hot", "late"))
        landed.append(simulated.time())

    began = time.perf_counter()
    simulated.run(task, cpu=Cpu(LAMBDA_VCPU_MB))
    assert landed[0] >= 1_800_000_001 and time.perf_counter() - began < landed[0] - 1_800_000_000.5
    assert db.usage.throttled_calls["PutItem"] >= 1 and max(db.usage.partition_seconds.values()) == 1000
    impatient_db, impatient = stand_in(simulated.time, simulated.sleep, attempts=1)  # no retries: the error
    fill(impatient_db, "hot", 1000)
    with pytest.raises(ClientError) as raised:
        impatient.put_item(**put("hot", "again"))
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert raised.value.response["ThrottlingReasons"][0]["reason"] == "TableWriteKeyRangeThroughputExceeded"


def test_index_writes_count_against_the_index_s_own_partition_limit() -> None:
    clock = Clock(1_800_000_000.5)
    db, _ = stand_in(clock, clock.sleep)
    group = {"g": VALUES[":g"]}
    for i in range(1000):  # a thousand table keys, one index partition
        assert put_directly(db, put(f"p{i}", "1", **group, r={"N": str(i)}))[0] == 200
    status, body = put_directly(db, put("p-last", "1", **group, r={"N": "-1"}))
    assert (status, body["ThrottlingReasons"][0]["reason"]) == (400, "IndexWriteKeyRangeThroughputExceeded")
    assert put_directly(db, put("p-last", "1"))[0] == 200  # not in the index: only the table's partition


def test_a_transaction_with_a_throttled_item_is_cancelled_and_writes_nothing() -> None:
    clock = Clock(1_800_000_000.5)
    db, client = stand_in(clock, clock.sleep)
    fill(db, "hot", 999)
    items = [{"Put": put(pk, "tx")} for pk in ("cold", "hot", "warm")]  # 2 units each: "hot" goes to 1,001
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in raised.value.response["CancellationReasons"]] == ["None", "ThrottlingError", "None"]
    assert db.usage.calls["TransactWriteItems"] == 1  # botocore does not retry a cancelled transaction
    assert (db.usage.throttled_calls["TransactWriteItems"], db.usage.throttled_items["TransactWriteItems"]) == (1, 1)
    assert db.table("t").get("cold", "tx") is None and db.usage.write_units == 999  # nothing consumed


def test_a_batch_write_returns_its_throttled_items_unprocessed_and_fails_when_all_are() -> None:
    clock = Clock(1_800_000_000.5)
    db, client = stand_in(clock, clock.sleep, attempts=1)
    fill(db, "hot", 1000)
    requests = [{"PutRequest": {"Item": put(pk, "b")["Item"]}} for pk in ("hot", "cold")]
    response = client.batch_write_item(RequestItems={"t": requests})
    assert response["UnprocessedItems"] == {"t": [requests[0]]}
    assert db.table("t").get("cold", "b") is not None and db.table("t").get("hot", "b") is None
    with pytest.raises(ClientError) as raised:
        client.batch_write_item(RequestItems={"t": [requests[0]]})
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert db.usage.throttled_items["BatchWriteItem"] == 2


def test_the_table_s_ceiling_doubles_only_30_minutes_after_a_higher_peak() -> None:
    start = 1_800_000_000.5
    clock = Clock(start)
    db, _ = stand_in(clock, clock.sleep, initial_write_units=100)

    def writable(second: float) -> int:
        """How many one-unit writes on distinct keys the table takes in that second."""
        clock.now = second
        for i in range(1000):
            status, body = put_directly(db, put(f"{second}-{i}", "1"))
            if status != 200:
                assert body["__type"].endswith("#ThrottlingException") and "ThrottlingReasons" not in body
                return i
        return 1000

    assert writable(start) == 100
    assert writable(start + 60) == 100  # a throttled second raises nothing
    assert writable(start + 1799) == 100
    assert writable(start + 1800) == 200  # twice the peak of 30 minutes before
    assert writable(start + 3599) == 200
    assert writable(start + 3600) == 400
