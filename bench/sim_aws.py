"""DynamoDB and SQS answered in process, behind real boto3 clients: the real client path without a network.

A botocore `before-send` handler answers each request the client has fully built (serialized, signed) with
a response botocore then parses, so the product's clients do all their own work — that is the CPU the
first-sync issue found dominant — while the answer costs no network. The answers follow DynamoDB's
semantics for what the product uses: `GetItem`, `PutItem`, `UpdateItem` (SET / REMOVE / ADD,
`if_not_exists`, `+` / `-`, every `ReturnValues`), `DeleteItem`; conditions with comparisons,
AND / OR / NOT, parentheses, attribute_(not_)exists, begins_with, BETWEEN, and
`ReturnValuesOnConditionCheckFailure`; `TransactWriteItems` (all or nothing, `CancellationReasons`, one
item once); `BatchWriteItem` and `BatchGetItem`; `Query` of the table or of a keys-only global secondary
index (key conditions, filters, COUNT, projections, either direction, pages of 1 MB or `Limit`,
`ReturnConsumedCapacity`). Values are S, N, B and BOOL. `tests/unit/test_sim_aws.py` checks the answers
against moto's.

What AWS bills is counted (`Usage`): write units (1 a started KB of the larger of the old and new item,
twice that in a transaction, the existing item's size for a failed condition; 2 an item for a cancelled
transaction), read units (1 a started 4 KB, half for an eventually consistent read; a Query's items
summed first), and index writes (an index entry put, deleted, or both when its keys change; 1 unit a
started KB of the entry, also in a transaction, since DynamoDB propagates index updates outside it).

What AWS throttles is enforced, per second of the `clock` (the simulation's virtual time), for the table
and for each index separately, from DynamoDB's documented on-demand limits:

* a partition key value serves 3,000 read units or 1,000 write units a second, or a linear combination
  (r/3,000 + w/1,000 <= 1) — DynamoDB splits hot partitions over time ("split for heat"); that is not
  modelled, so a key stays at this limit;
* the table (or index) serves `initial_read_units` / `initial_write_units` a second, or a linear
  combination: 12,000 / 4,000 for a new on-demand table, its warm throughput for one created warm. The
  ceiling follows traffic: twice the highest read (write) units of any one second at least 30 minutes
  earlier, when that is higher ("up to double the previous peak within 30 minutes"). Throttling itself
  raises no ceiling; DynamoDB's account-level quotas (40,000 a table by default) are not modelled.

A throttled request consumes nothing. A single-item call then fails with HTTP 400
`ProvisionedThroughputExceededException` (ThrottlingReasons `TableWriteKeyRangeThroughputExceeded` and
the like) when a partition key is over its limit, and `ThrottlingException` when the table is over its
ceiling: the DynamoDB Developer Guide's "Error handling" page documents ThrottlingException for
data-plane calls of on-demand tables whose request rate is too high, and the ThrottlingReason reference
documents KeyRangeThroughputExceeded for partition keys in both capacity modes; no documented reason
names the ceiling of on-demand scaling, so that answer carries none. In `TransactWriteItems` a throttled
item cancels the transaction: `TransactionCanceledException` with reason `ThrottlingError` for it, `None`
for the others (the TransactWriteItems reference). `BatchWriteItem` and `BatchGetItem` return throttled
items in `UnprocessedItems` / `UnprocessedKeys`, and fail with the throttling exception when every item
is throttled. botocore's standard retry mode retries both exceptions (not a cancelled transaction, not
unprocessed items: those are the product's); `attach(sleep=...)` makes its backoff wait on the
simulation's clock.

Only counted, not enforced: item and request size limits beyond key sizes, the 10 GB partition, burst
capacity, provisioned mode, and anything of latency (`attach(latency=...)` is the simulation's).

SQS: `SendMessage(Batch)` and `ChangeMessageVisibilityBatch` on queues the simulation owns.

Each answer may cost virtual time (`latency`): the simulation passes a function that blocks the calling
task; the answering itself is never counted as the product's CPU (`uncounted`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import io
import json
import math
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.awsrequest import AWSResponse
from sortedcontainers import SortedList

Value = tuple[str, Any]  # ("S", str) | ("N", Decimal) | ("B", bytes) | ("BOOL", bool)
Item = dict[str, Value]

PARTITION_KEY_BYTES, SORT_KEY_BYTES = 2048, 1024
PAGE_BYTES = 1024 * 1024
TRANSACTION_ITEMS, BATCH_WRITE_ITEMS = 100, 25
PARTITION_READ_UNITS, PARTITION_WRITE_UNITS = 3000.0, 1000.0
NEW_TABLE_READ_UNITS, NEW_TABLE_WRITE_UNITS = 12000.0, 4000.0
SCALING_SECONDS = 30 * 60
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/"
THROTTLED = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
    "table or index so please try again shortly. If exceptions persist, check if you have a hot key: "
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html."
)


# ------------------------------------------------------------------------------------------ values


def from_json(value: dict[str, Any]) -> Value:
    (kind, raw), *_ = value.items()
    if kind == "N":
        return ("N", Decimal(raw))
    if kind == "B":
        return ("B", base64.b64decode(raw))
    return (kind, raw)


def to_json(value: Value) -> dict[str, Any]:
    kind, raw = value
    if kind == "N":
        return {kind: format(raw, "f")}
    if kind == "B":
        return {kind: base64.b64encode(raw).decode()}
    return {kind: raw}


def item_json(item: Item, names: list[str] | None = None) -> dict[str, Any]:
    return {k: to_json(v) for k, v in item.items() if names is None or k in names}


def value_bytes(value: Value) -> int:
    kind, raw = value
    if kind == "S":
        return len(raw.encode("utf-8", "surrogatepass"))
    if kind == "B":
        return len(raw)
    return 1 if kind == "BOOL" else 21


def item_bytes(item: Item) -> int:
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


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
            if value is None or prefix is None or value[0] != prefix[0] or value[0] not in ("S", "B"):
                return False
            return bool(value[1].startswith(prefix[1]))
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


class _Top:
    """Above any key value: `(v, TOP)` bounds every index entry whose sort key is v from above."""

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True


_TOP = _Top()


@dataclass
class _Index:
    """A global secondary index projecting keys only: one entry per item that has both its key attributes,
    ordered in its partition by (index sort key, table keys) — DynamoDB leaves ties unordered."""

    table: _Table
    name: str
    hash_key: str
    range_key: str
    types: dict[str, str]
    partitions: dict[Any, SortedList] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"{self.table.name}/index/{self.name}"

    def project(self, item: Item | None) -> Item | None:
        if item is None or self.hash_key not in item or self.range_key not in item:
            return None  # sparse
        for name in (self.hash_key, self.range_key):
            if item[name][0] != self.types[name]:
                raise _Invalid(f"One or more parameter values were invalid: Type mismatch for Index Key {name}")
        names = (self.table.hash_key, self.table.range_key, self.hash_key, self.range_key)
        return {name: item[name] for name in names if name}

    def place(self, entry: Item) -> tuple[Any, tuple[Any, Any, Any]]:
        """An entry's partition and its place there."""
        table = self.table
        sk = entry[table.range_key][1] if table.range_key else None
        return entry[self.hash_key][1], (entry[self.range_key][1], entry[table.hash_key][1], sk)


@dataclass
class _Table:
    name: str
    hash_key: str
    range_key: str | None
    indexes: dict[str, _Index] = field(default_factory=dict)
    partitions: dict[Any, dict[Any, Item]] = field(default_factory=dict)
    _sorted: dict[Any, SortedList] = field(default_factory=dict)  # sort keys of a partition, made for a Query

    def key_of(self, key: dict[str, Any]) -> tuple[Any, Any]:
        pk = from_json(key[self.hash_key])
        sk = from_json(key[self.range_key]) if self.range_key else None
        if value_bytes(pk) > PARTITION_KEY_BYTES or (sk is not None and value_bytes(sk) > SORT_KEY_BYTES):
            raise _Invalid("key too large")
        return pk[1], None if sk is None else sk[1]

    def get(self, pk: Any, sk: Any) -> Item | None:
        partition = self.partitions.get(pk)
        return None if partition is None else partition.get(sk)

    def write(self, pk: Any, sk: Any, before: Item | None, after: Item | None) -> None:
        """Replace `before` (None: no item) with `after` (None: deleted), in the table and its indexes."""
        partition = self.partitions.setdefault(pk, {})
        if after is None:
            partition.pop(sk, None)
            if before is not None and pk in self._sorted:
                self._sorted[pk].remove(sk)
        else:
            if sk not in partition and pk in self._sorted:
                self._sorted[pk].add(sk)
            partition[sk] = after
        for index in self.indexes.values():
            old, new = index.project(before), index.project(after)
            if old == new:
                continue
            if old is not None:
                hash_value, place = index.place(old)
                index.partitions[hash_value].remove(place)
            if new is not None:
                hash_value, place = index.place(new)
                index.partitions.setdefault(hash_value, SortedList()).add(place)

    def sorted_keys(self, pk: Any) -> SortedList:
        if pk not in self._sorted:
            self._sorted[pk] = SortedList(self.partitions.get(pk, {}))
        return self._sorted[pk]


@dataclass
class Usage:
    """What AWS would bill and what it throttled, counted per call."""

    calls: Counter[str] = field(default_factory=Counter)
    write_units: float = 0.0  # the table's and its indexes'
    read_units: float = 0.0
    index_write_units: float = 0.0  # the indexes' part of write_units
    # the table's write units per (partition key, whole second of virtual time)
    partition_seconds: dict[tuple[Any, int], float] = field(default_factory=lambda: defaultdict(float))
    throttled_calls: Counter[str] = field(default_factory=Counter)  # a throttling error or a cancelled transaction
    throttled_items: Counter[str] = field(default_factory=Counter)  # items those and batches left unprocessed

    def peak_partition_wcu(self) -> float:
        return max(self.partition_seconds.values(), default=0.0)


@dataclass(frozen=True)
class _Charge:
    """Units one item's read or write consumes on one partition key of a table or index."""

    resource: str  # "<table>" or "<table>/index/<index>"
    pk: Any
    read: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class _Throttle:
    code: str
    reason: str | None
    resource: str

    def body(self) -> dict[str, Any]:
        if self.reason is None:
            return _error(self.code, "Rate of requests exceeds the allowed throughput.")
        body = _error(self.code, THROTTLED)
        body["ThrottlingReasons"] = [{"reason": self.reason, "resource": ARN + self.resource}]
        return body


def _load(read: float, write: float, read_limit: float, write_limit: float) -> float:
    return read / read_limit + write / write_limit


class _Meter:
    """One table's or index's consumption per second, and the ceiling on-demand scaling gives it."""

    def __init__(self, read_units: float, write_units: float) -> None:
        self.initial = (read_units, write_units)
        self.peak = [0.0, 0.0]  # of the seconds at least SCALING_SECONDS old
        self.seconds: dict[int, list[float]] = {}  # the younger seconds' read and write units
        self.partitions: dict[int, dict[Any, list[float]]] = {}  # the last seconds' units per partition key
        self._young: list[int] = []

    def ceiling(self, second: int) -> tuple[float, float]:
        while self._young and self._young[0] <= second - SCALING_SECONDS:
            read, write = self.seconds.pop(heapq.heappop(self._young))
            self.peak = [max(self.peak[0], read), max(self.peak[1], write)]
        return max(self.initial[0], 2 * self.peak[0]), max(self.initial[1], 2 * self.peak[1])

    def used(self, second: int) -> list[float]:
        return self.seconds.get(second, [0.0, 0.0])

    def used_by(self, second: int, pk: Any) -> list[float]:
        return self.partitions.get(second, {}).get(pk, [0.0, 0.0])

    def add(self, second: int, pk: Any, read: float, write: float) -> None:
        if second not in self.seconds:
            self.seconds[second] = [0.0, 0.0]
            heapq.heappush(self._young, second)
        if second not in self.partitions:
            # the virtual clocks of concurrent tasks differ by a CPU slice: a few seconds are kept
            for old in [s for s in self.partitions if s < second - 2]:
                del self.partitions[old]
            self.partitions[second] = {}
        for totals in (self.seconds[second], self.partitions[second].setdefault(pk, [0.0, 0.0])):
            totals[0] += read
            totals[1] += write


class _Capacity:
    """Decides which items the current second still has room for, and remembers what they consumed."""

    def __init__(self, clock: Callable[[], float], read_units: float, write_units: float) -> None:
        self._clock = clock
        self._initial = (read_units, write_units)
        self._meters: dict[str, _Meter] = {}
        self.enforced = True

    def _meter(self, resource: str) -> _Meter:
        if resource not in self._meters:
            self._meters[resource] = _Meter(*self._initial)
        return self._meters[resource]

    def admit(self, groups: list[list[_Charge]]) -> list[_Throttle | None]:
        """For each group (one item's charges), in order, why it is throttled or None: groups admitted
        before it in the same request count as consumed. Nothing is consumed here (`consume`)."""
        if not self.enforced:
            return [None] * len(groups)
        second = int(self._clock())
        earlier: dict[tuple[str, Any], list[float]] = defaultdict(lambda: [0.0, 0.0])
        verdicts: list[_Throttle | None] = []
        for group in groups:
            needed: dict[tuple[str, Any], list[float]] = defaultdict(lambda: [0.0, 0.0])
            for charge in group:
                for where in ((charge.resource, charge.pk), (charge.resource, _TOP)):
                    needed[where][0] += charge.read
                    needed[where][1] += charge.write
            verdict = self._verdict(second, needed, earlier)
            if verdict is None:
                for where, (read, write) in needed.items():
                    earlier[where][0] += read
                    earlier[where][1] += write
            verdicts.append(verdict)
        return verdicts

    def _verdict(
        self, second: int, needed: dict[tuple[str, Any], list[float]], earlier: dict[tuple[str, Any], list[float]]
    ) -> _Throttle | None:
        ceiling = None
        for (resource, pk), (read, write) in needed.items():  # a partition key over its limit outranks a ceiling
            meter = self._meter(resource)
            used = meter.used(second) if pk is _TOP else meter.used_by(second, pk)
            read, write = used[0] + earlier[(resource, pk)][0] + read, used[1] + earlier[(resource, pk)][1] + write
            kind = "Index" if "/index/" in resource else "Table"
            operation = "Write" if needed[(resource, pk)][1] else "Read"
            if pk is not _TOP and _load(read, write, PARTITION_READ_UNITS, PARTITION_WRITE_UNITS) > 1 + 1e-9:
                return _Throttle(
                    "ProvisionedThroughputExceededException", f"{kind}{operation}KeyRangeThroughputExceeded", resource
                )
            if pk is _TOP and ceiling is None and _load(read, write, *meter.ceiling(second)) > 1 + 1e-9:
                ceiling = _Throttle("ThrottlingException", None, resource)
        return ceiling

    def consume(self, group: list[_Charge]) -> None:
        if self.enforced:
            second = int(self._clock())
            for charge in group:
                self._meter(charge.resource).add(second, charge.pk, charge.read, charge.write)


@dataclass
class _Write:
    """One item's planned write: `after` None deletes it; a failed condition changes nothing."""

    table: _Table
    pk: Any
    sk: Any
    before: Item | None
    after: Item | None
    failed: bool = False


def _write_units(item: Item | None) -> float:
    return max(1, math.ceil(item_bytes(item or {}) / 1024))


def _read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


class InProcessDynamoDB:
    """DynamoDB's answers, bills and throttling for tables created with `create_table` (module docstring).

    `initial_read_units` / `initial_write_units`: what each table and index sustains a second before it has
    any traffic to scale from — a new on-demand table's 12,000 / 4,000 by default, or a warm throughput.
    `throttle=False` bills and counts but never throttles."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        initial_read_units: float = NEW_TABLE_READ_UNITS,
        initial_write_units: float = NEW_TABLE_WRITE_UNITS,
        throttle: bool = True,
    ) -> None:
        self.tables: dict[str, _Table] = {}
        self.usage = Usage()
        self._clock = clock
        self._capacity = _Capacity(clock, initial_read_units, initial_write_units)
        self._capacity.enforced = throttle

    def create_table(self, definition: dict[str, Any]) -> None:
        def keys(schema: list[dict[str, str]]) -> dict[str, str]:
            return {k["KeyType"]: k["AttributeName"] for k in schema}

        table_keys = keys(definition["KeySchema"])
        table = _Table(definition["TableName"], table_keys["HASH"], table_keys.get("RANGE"))
        types = {a["AttributeName"]: a["AttributeType"] for a in definition.get("AttributeDefinitions", [])}
        for spec in definition.get("GlobalSecondaryIndexes", []):
            if spec.get("Projection", {}).get("ProjectionType") != "KEYS_ONLY" or "RANGE" not in keys(
                spec["KeySchema"]
            ):
                raise NotImplementedError("only KEYS_ONLY indexes with a sort key are simulated")
            index_keys = keys(spec["KeySchema"])
            table.indexes[spec["IndexName"]] = _Index(
                table, spec["IndexName"], index_keys["HASH"], index_keys["RANGE"], types
            )
        self.tables[table.name] = table

    def table(self, name: str) -> _Table:
        return self.tables[name]

    @contextlib.contextmanager
    def unlimited(self) -> Iterator[None]:
        """Nothing is throttled, nor remembered as traffic, inside: state made outside the simulated time."""
        enforced, self._capacity.enforced = self._capacity.enforced, False
        try:
            yield
        finally:
            self._capacity.enforced = enforced

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

    # -- capacity --------------------------------------------------------------------------
    def _throttled(self, operation: str, throttle: _Throttle, items: int = 1) -> _Failed:
        self.usage.throttled_calls[operation] += 1
        self.usage.throttled_items[operation] += items
        return _Failed(throttle.body())

    def _consume(self, group: list[_Charge]) -> None:
        self._capacity.consume(group)
        second = int(self._clock())
        for charge in group:
            self.usage.read_units += charge.read
            self.usage.write_units += charge.write
            if "/index/" in charge.resource:
                self.usage.index_write_units += charge.write
            elif charge.write:
                self.usage.partition_seconds[(charge.pk, second)] += charge.write

    def _admit_one(self, operation: str, group: list[_Charge]) -> None:
        (verdict,) = self._capacity.admit([group])
        if verdict is not None:
            raise self._throttled(operation, verdict)
        self._consume(group)

    def _write_charges(self, write: _Write, factor: int) -> list[_Charge]:
        table = write.table
        if write.failed:
            return [_Charge(table.name, write.pk, write=_write_units(write.before) * factor)]
        units = max(_write_units(write.before), _write_units(write.after)) * factor
        charges = [_Charge(table.name, write.pk, write=units)]
        for index in table.indexes.values():
            old, new = index.project(write.before), index.project(write.after)
            if old != new:
                charges += [
                    _Charge(index.resource, index.place(entry)[0], write=_write_units(entry))
                    for entry in (old, new)
                    if entry is not None
                ]
        return charges

    # -- writes ----------------------------------------------------------------------------
    def _plan(self, kind: str, op: dict[str, Any]) -> _Write:
        """What a Put, Update or Delete of `op` would do to its item now."""
        table = self.table(op["TableName"])
        key = op["Key"] if kind != "Put" else {k: op["Item"][k] for k in (table.hash_key, table.range_key) if k}
        pk, sk = table.key_of(key)
        current = table.get(pk, sk)
        scope = _Scope(
            current or {},
            {k: from_json(v) for k, v in op.get("ExpressionAttributeValues", {}).items()},
            op.get("ExpressionAttributeNames", {}),
        )
        condition = op.get("ConditionExpression")
        if condition and not scope.holds(_condition(condition)):
            return _Write(table, pk, sk, current, current, failed=True)
        if kind == "Delete":
            return _Write(table, pk, sk, current, None)
        if kind == "Put":
            return _Write(table, pk, sk, current, {k: from_json(v) for k, v in op["Item"].items()})
        new = scope.apply(_update(op["UpdateExpression"])) if "UpdateExpression" in op else dict(current or {})
        new.update({k: from_json(v) for k, v in key.items()})
        return _Write(table, pk, sk, current, new)

    def _write_one(self, operation: str, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        write = self._plan(kind, request)
        self._admit_one(operation, self._write_charges(write, 1))
        if write.failed:
            body = _error("ConditionalCheckFailedException", "The conditional request failed")
            if request.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and write.before is not None:
                body["Item"] = item_json(write.before)
            raise _Failed(body)
        write.table.write(write.pk, write.sk, write.before, write.after)
        returned = _returned_values(request, write)
        return {"Attributes": item_json(returned)} if returned else {}

    def _PutItem(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._write_one("PutItem", "Put", request)

    def _UpdateItem(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._write_one("UpdateItem", "Update", request)

    def _DeleteItem(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._write_one("DeleteItem", "Delete", request)

    def _TransactWriteItems(self, request: dict[str, Any]) -> dict[str, Any]:
        entries = request["TransactItems"]
        if len(entries) > TRANSACTION_ITEMS:
            raise _Invalid(f"at most {TRANSACTION_ITEMS} items per transaction")
        writes = self._plan_all(
            [next(iter(entry.items())) for entry in entries],
            "Transaction request cannot include multiple operations on one item",
        )
        cancelled = any(write.failed for write in writes)
        groups = [
            # a cancelled transaction is billed too: 2 units an item, whatever its size
            [_Charge(write.table.name, write.pk, write=2.0)] if cancelled else self._write_charges(write, 2)
            for write in writes
        ]
        verdicts = self._capacity.admit(groups)
        throttled = sum(verdict is not None for verdict in verdicts)
        if throttled or cancelled:
            if throttled:
                self.usage.throttled_calls["TransactWriteItems"] += 1
                self.usage.throttled_items["TransactWriteItems"] += throttled
            else:
                for group in groups:
                    self._consume(group)
            reasons = [
                _cancellation_reason(entry, write, verdict)
                for entry, write, verdict in zip(entries, writes, verdicts, strict=True)
            ]
            body = _error("TransactionCanceledException", "Transaction cancelled")
            body["CancellationReasons"] = reasons
            raise _Failed(body)
        for write, group in zip(writes, groups, strict=True):
            self._consume(group)
            write.table.write(write.pk, write.sk, write.before, write.after)
        return {}

    def _BatchWriteItem(self, request: dict[str, Any]) -> dict[str, Any]:
        requests = [(name, entry) for name, entries in request["RequestItems"].items() for entry in entries]
        if len(requests) > BATCH_WRITE_ITEMS:
            raise _Invalid("Too many items requested for the BatchWriteItem call")
        writes = self._plan_all(
            [
                ("Put", {"TableName": name, **entry["PutRequest"]})
                if "PutRequest" in entry
                else ("Delete", {"TableName": name, **entry["DeleteRequest"]})
                for name, entry in requests
            ],
            "Provided list of item keys contains duplicates",
        )
        groups = [self._write_charges(write, 1) for write in writes]
        verdicts = self._capacity.admit(groups)
        if verdicts and all(verdicts):
            raise self._throttled("BatchWriteItem", verdicts[0], len(verdicts))  # type: ignore[arg-type]
        unprocessed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for (name, entry), write, group, verdict in zip(requests, writes, groups, verdicts, strict=True):
            if verdict is not None:
                unprocessed[name].append(entry)
                self.usage.throttled_items["BatchWriteItem"] += 1
                continue
            self._consume(group)
            write.table.write(write.pk, write.sk, write.before, write.after)
        return {"UnprocessedItems": dict(unprocessed)}

    def _plan_all(self, ops: list[tuple[str, dict[str, Any]]], duplicate: str) -> list[_Write]:
        """Plans of several writes, each item once: none sees another's effect."""
        writes: list[_Write] = []
        seen: set[tuple[str, Any, Any]] = set()
        for kind, op in ops:
            write = self._plan(kind, op)
            where = (write.table.name, write.pk, write.sk)
            if where in seen:
                raise _Invalid(duplicate)
            seen.add(where)
            writes.append(write)
        return writes

    # -- reads -----------------------------------------------------------------------------
    def _GetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self.table(request["TableName"])
        pk, sk = table.key_of(request["Key"])
        item = table.get(pk, sk)
        units = _read_units(item_bytes(item or {}), request.get("ConsistentRead", False))
        self._admit_one("GetItem", [_Charge(table.name, pk, read=units)])
        return {} if item is None else {"Item": item_json(item)}

    def _BatchGetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        reads: list[tuple[str, dict[str, Any], Item | None]] = []
        groups: list[list[_Charge]] = []
        for name, spec in request["RequestItems"].items():
            table = self.table(name)
            for key in spec["Keys"]:
                pk, sk = table.key_of(key)
                item = table.get(pk, sk)
                units = _read_units(item_bytes(item or {}), spec.get("ConsistentRead", False))
                reads.append((name, key, item))
                groups.append([_Charge(name, pk, read=units)])
        verdicts = self._capacity.admit(groups)
        if verdicts and all(verdicts):
            raise self._throttled("BatchGetItem", verdicts[0], len(verdicts))  # type: ignore[arg-type]
        responses: dict[str, list[dict[str, Any]]] = {name: [] for name in request["RequestItems"]}
        unprocessed: dict[str, dict[str, Any]] = {}
        for (name, key, item), group, verdict in zip(reads, groups, verdicts, strict=True):
            if verdict is not None:
                spec = unprocessed.setdefault(name, {**request["RequestItems"][name], "Keys": []})
                spec["Keys"].append(key)
                self.usage.throttled_items["BatchGetItem"] += 1
                continue
            self._consume(group)
            if item is not None:
                responses[name].append(item_json(item))
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def _Query(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self.table(request["TableName"])
        index = table.indexes[request["IndexName"]] if "IndexName" in request else None
        consistent = request.get("ConsistentRead", False)
        if index is not None and consistent:
            raise _Invalid("Consistent reads are not supported on global secondary indexes")
        values = {k: from_json(v) for k, v in request.get("ExpressionAttributeValues", {}).items()}
        names = request.get("ExpressionAttributeNames", {})
        hash_key = table.hash_key if index is None else index.hash_key
        pk, sort_condition = _split_key_condition(
            _condition(request["KeyConditionExpression"]), hash_key, values, names
        )
        order, item_of, start = _keyspace(table, index, pk, request.get("ExclusiveStartKey"))
        low, low_inclusive, high, high_inclusive = _bounds(sort_condition, values, index is not None)
        forward = request.get("ScanIndexForward", True)
        if start is not None and forward and (low is None or start >= low):
            low, low_inclusive = start, False
        if start is not None and not forward and (high is None or start <= high):
            high, high_inclusive = start, False
        try:
            keys: Iterator[Any] = order.irange(low, high, (low_inclusive, high_inclusive), reverse=not forward)
            limit = request.get("Limit")
            filter_node = _condition(request["FilterExpression"]) if "FilterExpression" in request else None
            projection = [
                names.get(p.strip(), p.strip()) for p in request.get("ProjectionExpression", "").split(",") if p.strip()
            ]
            scanned = size = 0
            matched: list[Item] = []
            last: Item | None = None
            for key in keys:
                item = item_of(key)
                if sort_condition is not None and not _Scope(item, values, names).holds(sort_condition):
                    if scanned:  # the sort keys a key condition accepts are contiguous: past them
                        break
                    continue
                scanned += 1
                size += item_bytes(item)
                if filter_node is None or _Scope(item, values, names).holds(filter_node):
                    matched.append(item)
                if (limit is not None and scanned >= limit) or size >= PAGE_BYTES:
                    last = item
                    break
        except TypeError as exc:  # a key condition's value of another type than the key's
            raise _Invalid(f"Query key condition not supported: {exc}") from None
        consumed = _read_units(size, consistent)
        self._admit_one("Query", [_Charge(table.name if index is None else index.resource, pk, read=consumed)])
        body: dict[str, Any] = {"Count": len(matched), "ScannedCount": scanned}
        if request.get("Select") != "COUNT":
            body["Items"] = [item_json(i, projection or None) for i in matched]
        if last is not None:
            key_names = [table.hash_key, table.range_key] + ([index.hash_key, index.range_key] if index else [])
            body["LastEvaluatedKey"] = {k: to_json(last[k]) for k in dict.fromkeys(key_names) if k}
        if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
            body["ConsumedCapacity"] = {"TableName": request["TableName"], "CapacityUnits": consumed}
        return body


def _keyspace(
    table: _Table, index: _Index | None, pk: Any, start: dict[str, Any] | None
) -> tuple[SortedList, Callable[[Any], Item], Any]:
    """A Query's ordered keys in a partition, the item (or index entry) of each, and where a page resumes."""
    if index is None:
        partition = table.partitions.get(pk, {})
        resume = None if start is None else from_json(start[table.range_key])[1]  # type: ignore[index]
        return table.sorted_keys(pk), partition.__getitem__, resume

    def entry(place: tuple[Any, Any, Any]) -> Item:
        return index.project(table.get(place[1], place[2])) or {}

    resume = None
    if start is not None:
        resume = index.place({k: from_json(v) for k, v in start.items()})[1]
    return index.partitions.get(pk, SortedList()), entry, resume


def _bounds(node: tuple[Any, ...] | None, values: dict[str, Value], index: bool) -> tuple[Any, bool, Any, bool]:
    """Where a sort key condition lets a Query start and end (low, inclusive, high, inclusive), None for
    open. An index orders (sort key, table keys): a bound v becomes (v,) below them all or (v, TOP) above."""
    low = high = None
    low_inclusive = high_inclusive = True
    if node is not None and node[0] == "cmp":
        op, value = node[1], values[node[3][1]][1]
        if op in ("=", ">", ">="):
            low, low_inclusive = value, op != ">"
        if op in ("=", "<", "<="):
            high, high_inclusive = value, op != "<"
    elif node is not None and node[0] == "between":
        low, high = values[node[2][1]][1], values[node[3][1]][1]
    elif node is not None and node[0] == "begins_with":
        low = values[node[2][1]][1]
    if not index:
        return low, low_inclusive, high, high_inclusive
    low = None if low is None else (low,) if low_inclusive else (low, _TOP)
    high = None if high is None else (high, _TOP) if high_inclusive else (high,)
    return low, True, high, True


def _split_key_condition(
    node: tuple[Any, ...], hash_key: str, values: dict[str, Value], names: dict[str, str]
) -> tuple[Any, tuple[Any, ...] | None]:
    """`pk = :v [AND <sort key condition>]` → (the partition key's value, the sort key condition)."""
    parts = [node[1], node[2]] if node[0] == "and" else [node]
    pk: Any = None
    rest = None
    for part in parts:
        if part[0] == "cmp" and part[1] == "=" and _Scope({}, values, names).name(part[2][1]) == hash_key:
            pk = values[part[3][1]][1]
        else:
            rest = part
    if pk is None:
        raise _Invalid("the key condition must name the partition key")
    return pk, rest


def _returned_values(request: dict[str, Any], write: _Write) -> Item | None:
    mode = request.get("ReturnValues", "NONE")
    if mode == "ALL_OLD":
        return write.before
    if mode == "ALL_NEW":
        return write.after
    if mode in ("UPDATED_OLD", "UPDATED_NEW"):
        scope = _Scope({}, {}, request.get("ExpressionAttributeNames", {}))
        updated = {scope.name(action[1][1]) for action in _update(request["UpdateExpression"])}
        source = (write.before if mode == "UPDATED_OLD" else write.after) or {}
        return {name: value for name, value in source.items() if name in updated}
    return None


def _cancellation_reason(entry: dict[str, Any], write: _Write, verdict: _Throttle | None) -> dict[str, Any]:
    if verdict is not None:
        return {"Code": "ThrottlingError", "Message": THROTTLED}
    if not write.failed:
        return {"Code": "None"}
    reason: dict[str, Any] = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
    (op,) = entry.values()
    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and write.before is not None:
        reason["Item"] = item_json(write.before)
    return reason


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
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Answer every request of a boto3 client from `service` (InProcessDynamoDB or InProcessSqs); the
    client's retries wait with `sleep` (the simulation's, to wait in virtual time)."""

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
    _retries_wait_with(client, sleep)
    return client


def _retries_wait_with(client: Any, sleep: Callable[[float], None]) -> None:
    """botocore's retry handler only computes a backoff; the endpoint then waits it with time.sleep, which
    on the virtual clock would hold every task for real time and move no virtual time. The handler is
    wrapped to wait with `sleep` itself and leave the endpoint nothing to wait."""
    service = client.meta.service_model.service_id.hyphenize()
    unique_id = f"retry-config-{service}"
    # botocore keeps no public handle on it: its emitter's registry by unique id (botocore/hooks.py)
    registered = client.meta.events._emitter._unique_id_handlers.get(unique_id)
    if registered is None:  # retries off: nothing waits
        return
    compute = registered["handler"]

    def needs_retry(**kwargs: Any) -> Any:
        delay = compute(**kwargs)
        if isinstance(delay, int | float) and not isinstance(delay, bool):
            sleep(delay)
            return 0  # not None: retry, after a time.sleep(0)
        return delay

    event = f"needs-retry.{service}"
    client.meta.events.unregister(event, unique_id=unique_id)
    client.meta.events.register(event, needs_retry, unique_id=unique_id)
