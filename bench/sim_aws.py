"""DynamoDB and SQS answered in process, behind real boto3 clients: the real client path without a network.

A botocore `before-send` handler answers each request the client has fully built (serialized, signed) with
a response botocore then parses, so the product's clients do all their own work — that is the CPU the
first-sync issue found dominant — while the answer costs no network. The answers follow DynamoDB's
semantics for what the product uses: conditional updates (`UpdateExpression` SET / REMOVE / ADD,
`if_not_exists`, `+` / `-`; conditions with comparisons, AND / OR / NOT, attribute_(not_)exists,
begins_with, BETWEEN), `ReturnValuesOnConditionCheckFailure`, `TransactWriteItems` (all or nothing,
`CancellationReasons`, one item once), `BatchGetItem`, `GetItem`, `Query` (key conditions, filters,
COUNT, projections, pages of 1 MB, `ReturnConsumedCapacity`) — and count what AWS would bill: write and
read units per call, and write units per partition key per second (DynamoDB's 1,000 WCU partition limit).
`tests/unit/test_bench_smoke.py` checks it answers the state store like moto does.

SQS: `SendMessage(Batch)` and `ChangeMessageVisibilityBatch` on queues the simulation owns.

Each answer may cost virtual time (`latency`): the simulation passes a function that blocks the calling
task; the answering itself is never counted as the product's CPU (`uncounted`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.awsrequest import AWSResponse
from sortedcontainers import SortedList

Value = tuple[str, Any]  # ("S", str) | ("N", Decimal) | ("BOOL", bool)
Item = dict[str, Value]

PARTITION_KEY_BYTES, SORT_KEY_BYTES = 2048, 1024
PAGE_BYTES = 1024 * 1024


# ------------------------------------------------------------------------------------------ values


def from_json(value: dict[str, Any]) -> Value:
    (kind, raw), *_ = value.items()
    if kind == "N":
        return ("N", Decimal(raw))
    return (kind, raw)


def to_json(value: Value) -> dict[str, Any]:
    kind, raw = value
    return {kind: format(raw, "f") if kind == "N" else raw}


def item_json(item: Item, names: list[str] | None = None) -> dict[str, Any]:
    return {k: to_json(v) for k, v in item.items() if names is None or k in names}


def item_bytes(item: Item) -> int:
    size = 0
    for name, (kind, raw) in item.items():
        size += len(name.encode()) + (len(raw.encode()) if kind == "S" else 1 if kind == "BOOL" else 21)
    return size


def _compare(a: Value | None, op: str, b: Value | None) -> bool:
    if a is None or b is None or a[0] != b[0]:
        return op == "<>" and not (a is None and b is None)
    x, y = a[1], b[1]
    if a[0] == "S":
        x, y = x.encode("utf-8", "surrogatepass"), y.encode("utf-8", "surrogatepass")
    return {
        "=": x == y,
        "<>": x != y,
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
    }[op]


# ------------------------------------------------------------------------------------------ expressions

_TOKEN = re.compile(r"\s*(<>|<=|>=|[=<>(),+-]|:[A-Za-z0-9_]+|#[A-Za-z0-9_]+|[A-Za-z_][A-Za-z0-9_.]*)")


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"cannot parse expression at {text[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens, self.pos = _tokens(text), 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.tokens[self.pos]
        if expected is not None and token.upper() != expected:
            raise ValueError(f"expected {expected}, got {token}")
        self.pos += 1
        return token

    # conditions --------------------------------------------------------------------------
    def condition(self) -> tuple[Any, ...]:
        node = self._and()
        while (self.peek() or "").upper() == "OR":
            self.take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple[Any, ...]:
        node = self._not()
        while (self.peek() or "").upper() == "AND":
            self.take()
            node = ("and", node, self._not())
        return node

    def _not(self) -> tuple[Any, ...]:
        if (self.peek() or "").upper() == "NOT":
            self.take()
            return ("not", self._not())
        return self._primary()

    def _primary(self) -> tuple[Any, ...]:
        if self.peek() == "(":
            self.take()
            node = self.condition()
            self.take(")")
            return node
        token = self.peek() or ""
        if token in ("attribute_exists", "attribute_not_exists", "begins_with"):
            self.take()
            self.take("(")
            args = [self.operand()]
            while self.peek() == ",":
                self.take()
                args.append(self.operand())
            self.take(")")
            return (token, *args)
        left = self.operand()
        op = self.take()
        if op.upper() == "BETWEEN":
            low = self.operand()
            self.take("AND")
            return ("between", left, low, self.operand())
        return ("cmp", op, left, self.operand())

    def operand(self) -> tuple[Any, ...]:
        word = self.take()
        if word.startswith(":"):
            return ("value", word)
        if word == "if_not_exists":
            self.take("(")
            path = self.operand()
            self.take(",")
            default = self.operand()
            self.take(")")
            return ("if_not_exists", path, default)
        return ("path", word)

    # updates -----------------------------------------------------------------------------
    def update(self) -> list[tuple[Any, ...]]:
        actions: list[tuple[Any, ...]] = []
        while self.peek() is not None:
            clause = self.take().upper()
            while True:
                if clause == "SET":
                    path = self.operand()
                    self.take("=")
                    value = self.operand()
                    if self.peek() in ("+", "-"):
                        op = self.take()
                        value = ("arith", op, value, self.operand())
                    actions.append(("set", path, value))
                elif clause == "REMOVE":
                    actions.append(("remove", self.operand()))
                elif clause == "ADD":
                    path = self.operand()
                    actions.append(("add", path, self.operand()))
                else:
                    raise ValueError(f"unsupported update clause {clause}")
                if self.peek() != ",":
                    break
                self.take()
        return actions


_CONDITIONS: dict[str, tuple[Any, ...]] = {}
_UPDATES: dict[str, list[tuple[Any, ...]]] = {}


def _condition(text: str) -> tuple[Any, ...]:
    if text not in _CONDITIONS:
        _CONDITIONS[text] = _Parser(text).condition()
    return _CONDITIONS[text]


def _update(text: str) -> list[tuple[Any, ...]]:
    if text not in _UPDATES:
        _UPDATES[text] = _Parser(text).update()
    return _UPDATES[text]


@dataclass
class _Scope:
    item: Item
    values: dict[str, Value]
    names: dict[str, str]

    def name(self, token: str) -> str:
        return self.names[token] if token.startswith("#") else token

    def get(self, node: tuple[Any, ...]) -> Value | None:
        kind = node[0]
        if kind == "value":
            return self.values[node[1]]
        if kind == "path":
            return self.item.get(self.name(node[1]))
        if kind == "if_not_exists":
            current = self.get(node[1])
            return current if current is not None else self.get(node[2])
        if kind == "arith":
            left, right = self.get(node[2]), self.get(node[3])
            if left is None or right is None or left[0] != "N" or right[0] != "N":
                raise _Invalid("an arithmetic operand is not a number")
            return ("N", left[1] + right[1] if node[1] == "+" else left[1] - right[1])
        raise ValueError(kind)

    def holds(self, node: tuple[Any, ...]) -> bool:
        kind = node[0]
        if kind == "and":
            return self.holds(node[1]) and self.holds(node[2])
        if kind == "or":
            return self.holds(node[1]) or self.holds(node[2])
        if kind == "not":
            return not self.holds(node[1])
        if kind == "attribute_exists":
            return self.get(node[1]) is not None
        if kind == "attribute_not_exists":
            return self.get(node[1]) is None
        if kind == "begins_with":
            value, prefix = self.get(node[1]), self.get(node[2])
            return value is not None and prefix is not None and str(value[1]).startswith(str(prefix[1]))
        if kind == "between":
            value = self.get(node[1])
            return _compare(value, ">=", self.get(node[2])) and _compare(value, "<=", self.get(node[3]))
        if kind == "cmp":
            return _compare(self.get(node[2]), node[1], self.get(node[3]))
        raise ValueError(kind)

    def apply(self, actions: list[tuple[Any, ...]]) -> Item:
        new = dict(self.item)
        for action in actions:
            name = self.name(action[1][1])
            if action[0] == "set":
                value = self.get(action[2])
                if value is None:
                    raise _Invalid("an update refers to an attribute that does not exist")
                new[name] = value
            elif action[0] == "remove":
                new.pop(name, None)
            else:  # add
                increment = self.get(action[2])
                current = new.get(name, ("N", Decimal(0)))
                if increment is None or increment[0] != "N" or current[0] != "N":
                    raise _Invalid("ADD needs numbers")
                new[name] = ("N", current[1] + increment[1])
        return new


class _Invalid(Exception):
    pass


# ------------------------------------------------------------------------------------------ DynamoDB


@dataclass
class _Table:
    hash_key: str
    range_key: str | None
    partitions: dict[Any, dict[Any, Item]] = field(default_factory=dict)
    _sorted: dict[Any, SortedList] = field(default_factory=dict)  # sort keys of a partition, made for a Query

    def key_of(self, key: dict[str, Any]) -> tuple[Any, Any]:
        pk = from_json(key[self.hash_key])[1]
        sk = from_json(key[self.range_key])[1] if self.range_key else None
        if len(str(pk).encode()) > PARTITION_KEY_BYTES or (sk is not None and len(str(sk).encode()) > SORT_KEY_BYTES):
            raise _Invalid("key too large")
        return pk, sk

    def get(self, pk: Any, sk: Any) -> Item | None:
        partition = self.partitions.get(pk)
        return None if partition is None else partition.get(sk)

    def put(self, pk: Any, sk: Any, item: Item) -> None:
        partition = self.partitions.setdefault(pk, {})
        if sk not in partition and pk in self._sorted:
            self._sorted[pk].add(sk)
        partition[sk] = item

    def sorted_keys(self, pk: Any) -> SortedList:
        if pk not in self._sorted:
            self._sorted[pk] = SortedList(self.partitions.get(pk, {}))
        return self._sorted[pk]


@dataclass
class Usage:
    """What AWS would bill and throttle, counted per call."""

    calls: Counter[str] = field(default_factory=Counter)
    write_units: float = 0.0
    read_units: float = 0.0
    # write units per (partition key, whole second of virtual time): DynamoDB allows 1,000 per partition
    partition_seconds: dict[tuple[Any, int], float] = field(default_factory=lambda: defaultdict(float))

    def peak_partition_wcu(self) -> float:
        return max(self.partition_seconds.values(), default=0.0)


class InProcessDynamoDB:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.tables: dict[str, _Table] = {}
        self.usage = Usage()
        self._clock = clock

    def create_table(self, definition: dict[str, Any]) -> None:
        keys = {k["KeyType"]: k["AttributeName"] for k in definition["KeySchema"]}
        self.tables[definition["TableName"]] = _Table(keys["HASH"], keys.get("RANGE"))

    def table(self, name: str) -> _Table:
        return self.tables[name]

    # -- operations ------------------------------------------------------------------------
    def answer(self, operation: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.usage.calls[operation] += 1
        try:
            handler = getattr(self, f"_{operation}")
        except AttributeError:
            return 400, _error("ValidationException", f"{operation} is not simulated")
        try:
            return 200, handler(request)
        except _Failed as failed:
            return 400, failed.body
        except (_Invalid, KeyError) as exc:
            return 400, _error("ValidationException", str(exc))

    def _bill_write(self, pk: Any, before: Item | None, after: Item | None, factor: int = 1) -> None:
        size = max(item_bytes(before or {}), item_bytes(after or {}))
        units = max(1, math.ceil(size / 1024)) * factor
        self.usage.write_units += units
        self.usage.partition_seconds[(pk, int(self._clock()))] += units

    def _check_and_update(self, op: dict[str, Any]) -> tuple[_Table, Any, Any, Item | None, Item]:
        table = self.table(op["TableName"])
        pk, sk = table.key_of(op["Key"])
        current = table.get(pk, sk)
        scope = _Scope(
            current or {},
            {k: from_json(v) for k, v in op.get("ExpressionAttributeValues", {}).items()},
            op.get("ExpressionAttributeNames", {}),
        )
        condition = op.get("ConditionExpression")
        if condition and not scope.holds(_condition(condition)):
            raise _ConditionFailed(current if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None)
        new = scope.apply(_update(op["UpdateExpression"])) if "UpdateExpression" in op else dict(current or {})
        new[table.hash_key] = from_json(op["Key"][table.hash_key])
        if table.range_key:
            new[table.range_key] = from_json(op["Key"][table.range_key])
        return table, pk, sk, current, new

    def _UpdateItem(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            table, pk, sk, current, new = self._check_and_update(request)
        except _ConditionFailed as failed:
            self._bill_write(table_pk(self, request), failed.item, None)
            body = _error("ConditionalCheckFailedException", "The conditional request failed")
            if failed.item is not None:
                body["Item"] = item_json(failed.item)
            raise _Failed(body) from None
        table.put(pk, sk, new)
        self._bill_write(pk, current, new)
        return {"Attributes": item_json(new)} if request.get("ReturnValues") == "ALL_NEW" else {}

    def _TransactWriteItems(self, request: dict[str, Any]) -> dict[str, Any]:
        entries = request["TransactItems"]
        if len(entries) > 100:
            raise _Invalid("at most 100 items per transaction")
        seen: set[tuple[str, Any, Any]] = set()
        planned: list[tuple[_Table, Any, Any, Item | None, Item]] = []
        reasons: list[dict[str, Any]] = []
        for entry in entries:
            op = entry["Update"]
            table = self.table(op["TableName"])
            where = (op["TableName"], *table.key_of(op["Key"]))
            if where in seen:
                raise _Invalid("Transaction request cannot include multiple operations on one item")
            seen.add(where)
            try:
                planned.append(self._check_and_update(op))
                reasons.append({"Code": "None"})
            except _ConditionFailed as failed:
                reason: dict[str, Any] = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
                if failed.item is not None:
                    reason["Item"] = item_json(failed.item)
                reasons.append(reason)
        if any(r["Code"] != "None" for r in reasons):
            for entry in entries:  # a cancelled transaction is billed too
                self._bill_write(table_pk(self, entry["Update"]), None, None, factor=2)
            body = _error("TransactionCanceledException", "Transaction cancelled")
            body["CancellationReasons"] = reasons
            raise _Failed(body)
        for table, pk, sk, current, new in planned:
            table.put(pk, sk, new)
            self._bill_write(pk, current, new, factor=2)
        return {}

    def _GetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self.table(request["TableName"])
        item = table.get(*table.key_of(request["Key"]))
        self._bill_read(item_bytes(item or {}), request.get("ConsistentRead", False))
        return {} if item is None else {"Item": item_json(item)}

    def _BatchGetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        responses: dict[str, list[dict[str, Any]]] = {}
        for name, spec in request["RequestItems"].items():
            table = self.table(name)
            found = []
            for key in spec["Keys"]:
                item = table.get(*table.key_of(key))
                self._bill_read(item_bytes(item or {}), spec.get("ConsistentRead", False))
                if item is not None:
                    found.append(item_json(item))
            responses[name] = found
        return {"Responses": responses, "UnprocessedKeys": {}}

    def _Query(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self.table(request["TableName"])
        values = {k: from_json(v) for k, v in request.get("ExpressionAttributeValues", {}).items()}
        names = request.get("ExpressionAttributeNames", {})
        key_condition = _condition(request["KeyConditionExpression"])
        pk, sort_condition = _split_key_condition(key_condition, table, values, names)
        partition = table.partitions.get(pk, {})
        low, inclusive = _lower_bound(sort_condition, values)
        start = request.get("ExclusiveStartKey")
        if start is not None:
            after = from_json(start[table.range_key])[1]
            if low is None or after >= low:
                low, inclusive = after, False
        keys: Iterator[Any] = table.sorted_keys(pk).irange(minimum=low, inclusive=(inclusive, True))
        limit = request.get("Limit")
        filter_node = _condition(request["FilterExpression"]) if "FilterExpression" in request else None
        projection = [
            names.get(p.strip(), p.strip()) for p in request.get("ProjectionExpression", "").split(",") if p.strip()
        ]
        scanned = size = 0
        matched: list[Item] = []
        last: Item | None = None
        for sk in keys:
            item = partition[sk]
            if sort_condition is not None and not _Scope(item, values, names).holds(sort_condition):
                continue
            scanned += 1
            size += item_bytes(item)
            last = item
            if filter_node is None or _Scope(item, values, names).holds(filter_node):
                matched.append(item)
            if (limit is not None and scanned >= limit) or size >= PAGE_BYTES:
                break
        else:
            last = None
        consumed = self._bill_read(size, request.get("ConsistentRead", False))
        body: dict[str, Any] = {"Count": len(matched), "ScannedCount": scanned}
        if request.get("Select") != "COUNT":
            body["Items"] = [item_json(i, projection or None) for i in matched]
        if last is not None:
            body["LastEvaluatedKey"] = {k: to_json(last[k]) for k in (table.hash_key, table.range_key) if k}
        if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
            body["ConsumedCapacity"] = {"TableName": request["TableName"], "CapacityUnits": consumed}
        return body

    def _bill_read(self, size: int, consistent: bool) -> float:
        units = max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)
        self.usage.read_units += units
        return units


def _lower_bound(node: tuple[Any, ...] | None, values: dict[str, Value]) -> tuple[Any, bool]:
    """Where a sort key condition lets a Query start (sort keys are ordered): (value or None, inclusive)."""
    if node is None:
        return None, True
    if node[0] == "cmp" and node[1] in (">=", ">"):
        return values[node[3][1]][1], node[1] == ">="
    if node[0] in ("between", "begins_with"):
        return values[node[2][1]][1], True
    return None, True


def table_pk(db: InProcessDynamoDB, op: dict[str, Any]) -> Any:
    table = db.table(op["TableName"])
    return from_json(op["Key"][table.hash_key])[1]


def _split_key_condition(
    node: tuple[Any, ...], table: _Table, values: dict[str, Value], names: dict[str, str]
) -> tuple[Any, tuple[Any, ...] | None]:
    """`pk = :v [AND <sort key condition>]` → (the partition key's value, the sort key condition)."""
    parts = [node[1], node[2]] if node[0] == "and" else [node]
    pk: Any = None
    rest = None
    for part in parts:
        if part[0] == "cmp" and part[1] == "=" and _Scope({}, values, names).name(part[2][1]) == table.hash_key:
            pk = values[part[3][1]][1]
        else:
            rest = part
    if pk is None:
        raise _Invalid("the key condition must name the partition key")
    return pk, rest


class _ConditionFailed(Exception):
    def __init__(self, item: Item | None) -> None:
        self.item = item


class _Failed(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body


def _error(code: str, message: str) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}


# ------------------------------------------------------------------------------------------ SQS


@dataclass
class SentMessage:
    queue_url: str
    body: str
    delay_seconds: int
    message_id: str


class InProcessSqs:
    """SendMessage(Batch) and ChangeMessageVisibilityBatch, handed to the simulation's queues."""

    def __init__(
        self,
        on_send: Callable[[SentMessage], None],
        on_visibility: Callable[[str, str, int], None] = lambda url, handle, seconds: None,
    ) -> None:
        self._on_send, self._on_visibility = on_send, on_visibility
        self.calls: Counter[str] = Counter()

    def answer(self, operation: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls[operation] += 1
        url = request.get("QueueUrl", "")
        if operation == "SendMessage":
            message_id = self._send(url, request["MessageBody"], request.get("DelaySeconds", 0))
            return 200, {"MessageId": message_id, "MD5OfMessageBody": _md5(request["MessageBody"])}
        if operation == "SendMessageBatch":
            successful = [
                {
                    "Id": entry["Id"],
                    "MessageId": self._send(url, entry["MessageBody"], entry.get("DelaySeconds", 0)),
                    "MD5OfMessageBody": _md5(entry["MessageBody"]),
                }
                for entry in request["Entries"]
            ]
            return 200, {"Successful": successful, "Failed": []}
        if operation == "ChangeMessageVisibilityBatch":
            for entry in request["Entries"]:
                self._on_visibility(url, entry["ReceiptHandle"], entry["VisibilityTimeout"])
            return 200, {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}
        return 400, {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": operation}

    def _send(self, url: str, body: str, delay: int) -> str:
        message_id = str(uuid.uuid4())
        self._on_send(SentMessage(url, body, int(delay), message_id))
        return message_id


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


# ------------------------------------------------------------------------------------------ botocore


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def attach(
    client: Any,
    service: Any,
    *,
    latency: Callable[[str, dict[str, Any]], None] = lambda operation, request: None,
    uncounted: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
) -> Any:
    """Answer every request of a boto3 client from `service` (InProcessDynamoDB or InProcessSqs)."""

    def before_send(request: Any, **_: Any) -> AWSResponse:
        with uncounted():
            target = request.headers.get("X-Amz-Target", b"")
            operation = (target.decode() if isinstance(target, bytes) else target).rpartition(".")[2]
            body = json.loads(request.body or b"{}")
            status, answer = service.answer(operation, body)
            payload = json.dumps(answer).encode()
        latency(operation, body)
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(payload))

    client.meta.events.register("before-send", before_send)
    return client
