"""BatchWriteItem and BatchGetItem as DynamoDB asks clients to use them: what it leaves unprocessed (a
throttled partition, the table's ceiling) is sent again with backoff, and what still fails is named, so the
caller fails only the writes it belongs to."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WRITE_ITEMS = 25  # DynamoDB's limit per BatchWriteItem
GET_ITEMS = 100  # and per BatchGetItem
ROUNDS = 5  # calls for one group before what is still unprocessed counts as failed
BACKOFF = 0.05  # seconds before the second round, doubled each round (DynamoDB's advice: exponential)


class StateError(Exception):
    """DynamoDB refused or failed a state-table call for reasons other than its conditions."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def error_code(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


class BatchCalls:
    """BatchWriteItem / BatchGetItem on one table, groups run at once on `executor`."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        executor: Executor | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._executor = executor
        self._sleep = sleep
        self.calls = 0  # DynamoDB calls made, for benchmarks and metrics

    def write(self, requests: Sequence[dict[str, Any]], *, parallel: bool = True) -> list[int]:
        """Send PutRequest / DeleteRequest entries; returns the indexes of those that could not be written.
        `parallel=False`: one call after another (the caller is on the executor already: nesting could
        deadlock it)."""
        groups = [list(range(i, min(i + WRITE_ITEMS, len(requests)))) for i in range(0, len(requests), WRITE_ITEMS)]

        def write(group: list[int]) -> list[int]:
            return self._write_group(requests, group)

        done = self._map(write, groups) if parallel else [write(group) for group in groups]
        return [i for failed in done for i in failed]

    def get(
        self, keys: Sequence[dict[str, Any]], projection: str | None = None, *, consistent: bool = True
    ) -> list[dict[str, Any]]:
        """The items found at `keys`, read consistently unless told (half the read units); raises StateError if
        some stay unread."""
        groups = [list(keys[i : i + GET_ITEMS]) for i in range(0, len(keys), GET_ITEMS)]
        found = self._map(lambda group: self._get_group(group, projection, consistent), groups)
        return [item for items in found for item in items]

    def _write_group(self, requests: Sequence[dict[str, Any]], group: list[int]) -> list[int]:
        pending = group
        for round_ in range(ROUNDS):
            try:
                self.calls += 1
                items: Any = [requests[i] for i in pending]
                answer = self._client.batch_write_item(RequestItems={self._table: items})
            except (ClientError, BotoCoreError):
                # botocore's standard retries have already been spent on a throttled or failed call.
                return pending
            unprocessed = answer.get("UnprocessedItems", {}).get(self._table, [])
            if not unprocessed:
                return []
            left = {_identity(dict(request)) for request in unprocessed}
            pending = [i for i in pending if _identity(requests[i]) in left]
            self._backoff(round_)
        return pending

    def _get_group(self, keys: list[dict[str, Any]], projection: str | None, consistent: bool) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"Keys": keys, "ConsistentRead": consistent}
        if projection:
            request["ProjectionExpression"] = projection
        found: list[dict[str, Any]] = []
        for round_ in range(ROUNDS):
            try:
                self.calls += 1
                answer = self._client.batch_get_item(RequestItems={self._table: request})  # type: ignore[dict-item]
            except (ClientError, BotoCoreError) as exc:
                raise StateError(error_code(exc)) from exc
            found += answer.get("Responses", {}).get(self._table, [])
            unprocessed = answer.get("UnprocessedKeys", {}).get(self._table)
            if not unprocessed:
                return found
            request = dict(unprocessed)
            self._backoff(round_)
        raise StateError("UnprocessedKeys")

    def _backoff(self, round_: int) -> None:
        self._sleep(random.uniform(0, BACKOFF * 2**round_))

    def _map(self, fn: Callable[[list[Any]], list[Any]], groups: list[list[Any]]) -> list[list[Any]]:
        if len(groups) <= 1 or self._executor is None:
            return [fn(group) for group in groups]
        return list(self._executor.map(fn, groups))


def _identity(request: dict[str, Any]) -> str:
    """The item a write request is for (DynamoDB returns the unprocessed requests themselves)."""
    key = request["PutRequest"]["Item"] if "PutRequest" in request else request["DeleteRequest"]["Key"]
    return f"{key[t.PK]['S']}\0{key[t.SK]['S']}"


class TableStore:
    """What a store of the state table holds: the client, the table, batched calls on the state pool, the
    clock, and the calls it made."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._executor = executor
        self._clock = clock
        self._batch = BatchCalls(client, table, executor=executor, sleep=sleep)
        self._calls = 0

    @property
    def calls(self) -> int:
        """DynamoDB calls made, for benchmarks and metrics."""
        return self._calls + self._batch.calls
