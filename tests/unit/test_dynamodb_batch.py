"""`BatchCalls`: BatchWriteItem and BatchGetItem in DynamoDB's groups, what DynamoDB leaves unprocessed sent
again with backoff, and only what still fails named as failed (a scripted client: no AWS)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from ld_audiences import dynamodb_batch
from ld_audiences.dynamodb_batch import BACKOFF, GET_ITEMS, ROUNDS, WRITE_ITEMS, BatchCalls, StateError

TABLE = "state"


def put(i: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}, "n": {"N": str(i)}}}}


def key(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"p{i}"}, "sk": {"S": "s"}}


class ScriptedClient:
    """Leaves unprocessed, for `rounds` calls, the items whose number `stuck` holds; fails with `error` the
    calls that carry any number in `failing`."""

    def __init__(self, stuck: set[int] = frozenset(), rounds: int = 1, failing: set[int] = frozenset()) -> None:
        self.stuck, self.rounds, self.failing = stuck, rounds, failing
        self.writes: list[list[int]] = []
        self.gets: list[dict[str, Any]] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        numbers = [int(r["PutRequest"]["Item"]["n"]["N"]) for r in RequestItems[TABLE]]
        self.writes.append(numbers)
        if self.failing & set(numbers):
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "BatchWriteItem")
        left = [put(n) for n in numbers if n in self.stuck and self._again(n)]
        return {"UnprocessedItems": {TABLE: left}} if left else {"UnprocessedItems": {}}

    def _again(self, n: int) -> bool:
        return sum(n in call for call in self.writes) <= self.rounds

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        request = RequestItems[TABLE]
        self.gets.append(request)
        numbers = [int(k["pk"]["S"][1:]) for k in request["Keys"]]
        if self.failing & set(numbers):
            raise EndpointConnectionError(endpoint_url="http://x")
        calls = len(self.gets)
        left = [key(n) for n in numbers if n in self.stuck and calls <= self.rounds]
        found = [{**key(n), "n": {"N": str(n)}} for n in numbers if key(n) not in left]
        unprocessed = {TABLE: {**request, "Keys": left}} if left else {}
        return {"Responses": {TABLE: found}, "UnprocessedKeys": unprocessed}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_writes_go_in_groups_of_twenty_five_in_order() -> None:
    client = ScriptedClient()
    batch = BatchCalls(client, TABLE)  # type: ignore[arg-type]
    assert batch.write([put(i) for i in range(60)]) == []
    assert client.writes == [list(range(0, 25)), list(range(25, 50)), list(range(50, 60))]
    assert WRITE_ITEMS == 25 and batch.calls == 3


def test_unprocessed_writes_are_sent_again_alone_after_a_doubling_jittered_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bounds: list[tuple[float, float]] = []
    monkeypatch.setattr(dynamodb_batch.random, "uniform", lambda low, high: bounds.append((low, high)) or high)
    client, sleeps = ScriptedClient(stuck={3, 7}, rounds=2), Sleeps()
    batch = BatchCalls(client, TABLE, sleep=sleeps)  # type: ignore[arg-type]
    assert batch.write([put(i) for i in range(10)]) == []
    assert client.writes == [list(range(10)), [3, 7], [3, 7]]
    assert bounds == [(0, BACKOFF), (0, 2 * BACKOFF)] and sleeps == [BACKOFF, 2 * BACKOFF]


def test_writes_still_unprocessed_after_the_last_round_are_named_failed() -> None:
    client = ScriptedClient(stuck={3, 30}, rounds=99)
    batch = BatchCalls(client, TABLE, sleep=Sleeps())  # type: ignore[arg-type]
    assert batch.write([put(i) for i in range(40)]) == [3, 30]
    assert len(client.writes) == 2 * ROUNDS


def test_a_failed_call_fails_only_its_own_group() -> None:
    client = ScriptedClient(failing={27})
    batch = BatchCalls(client, TABLE, sleep=Sleeps())  # type: ignore[arg-type]
    assert batch.write([put(i) for i in range(60)]) == list(range(25, 50))


def test_a_failed_call_after_an_unprocessed_round_fails_only_what_was_left() -> None:
    client = ScriptedClient(stuck={2}, rounds=1)
    batch = BatchCalls(client, TABLE, sleep=Sleeps())  # type: ignore[arg-type]
    original = client.batch_write_item

    def fail_second_round(RequestItems: dict[str, Any]) -> dict[str, Any]:
        if client.writes:
            client.writes.append([])
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "x"}}, "BatchWriteItem")
        return original(RequestItems)

    client.batch_write_item = fail_second_round  # type: ignore[method-assign]
    assert batch.write([put(i) for i in range(5)]) == [2]


@pytest.mark.parametrize("parallel", [True, False])
def test_groups_may_run_on_a_pool_with_the_same_result(parallel: bool) -> None:
    client = ScriptedClient(failing={70})
    with ThreadPoolExecutor(3) as pool:
        batch = BatchCalls(client, TABLE, executor=pool, sleep=Sleeps())  # type: ignore[arg-type]
        assert batch.write([put(i) for i in range(80)], parallel=parallel) == list(range(50, 75))
    assert sorted(n for call in client.writes for n in call) == list(range(80))


def test_reads_are_consistent_in_groups_of_a_hundred_with_the_projection() -> None:
    client = ScriptedClient()
    batch = BatchCalls(client, TABLE)  # type: ignore[arg-type]
    found = batch.get([key(i) for i in range(250)], projection="pk, n")
    assert sorted(int(item["n"]["N"]) for item in found) == list(range(250))
    assert [len(g["Keys"]) for g in client.gets] == [GET_ITEMS, GET_ITEMS, 50]
    assert all(g["ConsistentRead"] is True and g["ProjectionExpression"] == "pk, n" for g in client.gets)


def test_unprocessed_keys_are_read_again_and_found() -> None:
    client = ScriptedClient(stuck={4}, rounds=2)
    batch = BatchCalls(client, TABLE, sleep=Sleeps())  # type: ignore[arg-type]
    found = batch.get([key(i) for i in range(6)])
    assert sorted(int(item["n"]["N"]) for item in found) == list(range(6))
    assert [len(g["Keys"]) for g in client.gets] == [6, 1, 1]
    assert "ProjectionExpression" not in client.gets[0]


def test_a_read_that_cannot_be_completed_raises_rather_than_returning_part() -> None:
    stuck = BatchCalls(ScriptedClient(stuck={4}, rounds=99), TABLE, sleep=Sleeps())  # type: ignore[arg-type]
    with pytest.raises(StateError, match="UnprocessedKeys"):
        stuck.get([key(i) for i in range(6)])
    failing = BatchCalls(ScriptedClient(failing={1}), TABLE)  # type: ignore[arg-type]
    with pytest.raises(StateError) as raised:
        failing.get([key(i) for i in range(6)])
    assert raised.value.code == "EndpointConnectionError"
