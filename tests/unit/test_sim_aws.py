"""The first-sync simulation's in-process DynamoDB (bench/sim_aws.py) answers the product like moto does.

The simulation times the product's real code over that stand-in, so its answers must be DynamoDB's: the
same state-store and rate-limit sequence runs against moto and against the stand-in, each behind a real
boto3 client, and every outcome and every item must agree.
"""

from __future__ import annotations

import random
import time
from typing import Any

import boto3
import pytest

from bench.sim_aws import InProcessDynamoDB, attach
from ld_audiences.change import MembershipChange
from ld_audiences.rate_limit import SharedRateLimit, Window
from ld_audiences.state import StateStore
from ld_audiences.state_table import audience_partitions, table_definition
from tests import audience_state
from tests.conftest import Aws


@pytest.fixture
def clients(aws: Aws) -> tuple[Any, Any]:
    """moto in server mode (not mock_aws: it would answer the stand-in's client too) and the stand-in."""
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    simulated = InProcessDynamoDB(time.time)
    simulated.create_table(table_definition(aws.table))
    return aws.dynamodb, attach(session.client("dynamodb"), simulated)


def change(key: str, second: int, included: bool = True, *, reassert: bool = False) -> MembershipChange:
    return audience_state.change("aud_1", key, included, second=second).model_copy(update={"reassert": reassert})


def everything(client: Any, table: str) -> list[dict[str, Any]]:
    items = []
    for pk in [*audience_partitions("aud_1", "user"), "audiences", "launchdarkly"]:
        items += client.query(
            TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": pk}}
        )["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_the_state_store_and_the_rate_limit_window_get_moto_s_answers(clients: tuple[Any, Any], aws: Aws) -> None:
    now = [1_800_000_000.0]
    stores = [StateStore(client, aws.table, clock=lambda: now[0]) for client in clients]
    for store in stores:  # one execution environment: the same lease owner in both
        store._environment = "environment"
    windows = [SharedRateLimit(client, aws.table) for client in clients]
    rng = random.Random(7)
    keys = [f"user-{i}" for i in range(12)]

    def both(action: str, *args: Any) -> list[Any]:
        return [getattr(target, action)(*args) for target in (stores if action != "window" else windows)]

    for step in range(120):
        now[0] += rng.choice([0.5, 3, 40])
        picked = rng.sample(keys, rng.randint(1, 5))
        kind = rng.choice(["claim", "claim", "confirm", "release", "reassert", "window"])
        changes = [change(k, rng.randint(0, 59), rng.random() < 0.7) for k in picked]
        if kind in ("claim", "reassert"):
            if kind == "reassert":
                changes = [c.model_copy(update={"reassert": True}) for c in changes]
            results = [store.claim(changes, now[0] + 10) for store in stores]
            summaries = [
                {name: sorted(c.order for c in getattr(r, name)) for name in ("claimed", "stale", "duplicate", "busy")}
                for r in results
            ]
            assert summaries[0] == summaries[1], (step, summaries)
            assert [r.failed for r in results] == [[], []]
        elif kind in ("confirm", "release"):
            both(kind, changes)
        else:
            learned = Window(rng.randint(0, 3), now[0] + rng.choice([-1, 1, 5]))
            for window in windows:
                window.learn(learned)
            assert len({window.acquire(now[0]) for window in windows}) == 1, step
        stores[0].record_write("aud_1", "beta", "user", changes) if step % 10 == 0 else None
        stores[1].record_write("aud_1", "beta", "user", changes) if step % 10 == 0 else None
    moto_items, simulated_items = (everything(client, aws.table) for client in clients)
    for items in (moto_items, simulated_items):  # the time of the summary's last write differs by nothing
        assert len(items) > 10
    assert simulated_items == moto_items


def test_a_cancelled_transaction_names_each_failed_item_with_its_old_state(clients: tuple[Any, Any], aws: Aws) -> None:
    answers = []
    for client in clients:
        store = StateStore(client, aws.table)
        store.claim([change("a", 10), change("b", 10)], time.time() + 30)
        store.confirm([change("a", 10), change("b", 10)])
        result = store.claim([change("a", 5), change("b", 10), change("c", 10)], time.time() + 30)
        answers.append(
            (
                [c.context_key for c in result.stale],
                [c.context_key for c in result.duplicate],
                [c.context_key for c in result.claimed],
            )
        )
    assert answers[0] == answers[1] == (["a"], ["b"], ["c"])
