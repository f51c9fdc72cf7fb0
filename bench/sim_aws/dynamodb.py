"""`InProcessDynamoDB`: the operations the product calls, answered with DynamoDB's semantics, bills and
throttling (the package docstring, bench/sim_aws/__init__.py, says which)."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.sim_aws.expressions import Scope, parse_condition, parse_update
from bench.sim_aws.query import query_page
from bench.sim_aws.tables import Index, Table
from bench.sim_aws.throughput import (
    NEW_TABLE_READ_UNITS,
    NEW_TABLE_WRITE_UNITS,
    THROTTLED,
    Capacity,
    Charge,
    Throttle,
    Usage,
    read_units,
    write_units,
)
from bench.sim_aws.values import Invalid, Item, error_body, from_json, item_bytes, item_json

TRANSACTION_ITEMS, BATCH_WRITE_ITEMS = 100, 25


@dataclass
class _Write:
    """One item's planned write: `after` None deletes it; a failed condition changes nothing."""

    table: Table
    pk: Any
    sk: Any
    before: Item | None
    after: Item | None
    failed: bool = False


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
        self.tables: dict[str, Table] = {}
        self.usage = Usage()
        self._clock = clock
        self._capacity = Capacity(clock, initial_read_units, initial_write_units)
        self._capacity.enforced = throttle

    def create_table(self, definition: dict[str, Any]) -> None:
        def keys(schema: list[dict[str, str]]) -> dict[str, str]:
            return {k["KeyType"]: k["AttributeName"] for k in schema}

        table_keys = keys(definition["KeySchema"])
        table = Table(definition["TableName"], table_keys["HASH"], table_keys.get("RANGE"))
        types = {a["AttributeName"]: a["AttributeType"] for a in definition.get("AttributeDefinitions", [])}
        for spec in definition.get("GlobalSecondaryIndexes", []):
            if spec.get("Projection", {}).get("ProjectionType") != "KEYS_ONLY" or "RANGE" not in keys(
                spec["KeySchema"]
            ):
                raise NotImplementedError("only KEYS_ONLY indexes with a sort key are simulated")
            index_keys = keys(spec["KeySchema"])
            table.indexes[spec["IndexName"]] = Index(
                table, spec["IndexName"], index_keys["HASH"], index_keys["RANGE"], types
            )
        self.tables[table.name] = table

    def table(self, name: str) -> Table:
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
            return 400, error_body("ValidationException", f"{operation} is not simulated")
        try:
            return 200, handler(request)
        except _Failed as failed:
            return 400, failed.body
        except (Invalid, KeyError) as exc:
            return 400, error_body("ValidationException", str(exc))

    # -- capacity --------------------------------------------------------------------------
    def _throttled(self, operation: str, throttle: Throttle, items: int = 1) -> _Failed:
        self.usage.throttled_calls[operation] += 1
        self.usage.throttled_items[operation] += items
        return _Failed(throttle.body())

    def _consume(self, group: list[Charge]) -> None:
        self._capacity.consume(group)
        second = int(self._clock())
        for charge in group:
            self.usage.read_units += charge.read
            self.usage.write_units += charge.write
            if "/index/" in charge.resource:
                self.usage.index_write_units += charge.write
            elif charge.write:
                self.usage.partition_seconds[(charge.pk, second)] += charge.write

    def _admit_one(self, operation: str, group: list[Charge]) -> None:
        (verdict,) = self._capacity.admit([group])
        if verdict is not None:
            raise self._throttled(operation, verdict)
        self._consume(group)

    def _write_charges(self, write: _Write, factor: int) -> list[Charge]:
        table = write.table
        if write.failed:
            return [Charge(table.name, write.pk, write=write_units(write.before) * factor)]
        units = max(write_units(write.before), write_units(write.after)) * factor
        charges = [Charge(table.name, write.pk, write=units)]
        for index in table.indexes.values():
            old, new = index.project(write.before), index.project(write.after)
            if old != new:
                charges += [
                    Charge(index.resource, index.place(entry)[0], write=write_units(entry))
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
        scope = Scope(
            current or {},
            {k: from_json(v) for k, v in op.get("ExpressionAttributeValues", {}).items()},
            op.get("ExpressionAttributeNames", {}),
        )
        condition = op.get("ConditionExpression")
        if condition and not scope.holds(parse_condition(condition)):
            return _Write(table, pk, sk, current, current, failed=True)
        if kind == "Delete":
            return _Write(table, pk, sk, current, None)
        if kind == "Put":
            return _Write(table, pk, sk, current, {k: from_json(v) for k, v in op["Item"].items()})
        new = scope.apply(parse_update(op["UpdateExpression"])) if "UpdateExpression" in op else dict(current or {})
        new.update({k: from_json(v) for k, v in key.items()})
        return _Write(table, pk, sk, current, new)

    def _write_one(self, operation: str, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        write = self._plan(kind, request)
        self._admit_one(operation, self._write_charges(write, 1))
        if write.failed:
            body = error_body("ConditionalCheckFailedException", "The conditional request failed")
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
            raise Invalid(f"at most {TRANSACTION_ITEMS} items per transaction")
        writes = self._plan_all(
            [next(iter(entry.items())) for entry in entries],
            "Transaction request cannot include multiple operations on one item",
        )
        cancelled = any(write.failed for write in writes)
        groups = [
            # a cancelled transaction is billed too: 2 units an item, whatever its size
            [Charge(write.table.name, write.pk, write=2.0)] if cancelled else self._write_charges(write, 2)
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
            body = error_body("TransactionCanceledException", "Transaction cancelled")
            body["CancellationReasons"] = reasons
            raise _Failed(body)
        for write, group in zip(writes, groups, strict=True):
            self._consume(group)
            write.table.write(write.pk, write.sk, write.before, write.after)
        return {}

    def _BatchWriteItem(self, request: dict[str, Any]) -> dict[str, Any]:
        requests = [(name, entry) for name, entries in request["RequestItems"].items() for entry in entries]
        if len(requests) > BATCH_WRITE_ITEMS:
            raise Invalid("Too many items requested for the BatchWriteItem call")
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
                raise Invalid(duplicate)
            seen.add(where)
            writes.append(write)
        return writes

    # -- reads -----------------------------------------------------------------------------
    def _GetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        table = self.table(request["TableName"])
        pk, sk = table.key_of(request["Key"])
        item = table.get(pk, sk)
        units = read_units(item_bytes(item or {}), request.get("ConsistentRead", False))
        self._admit_one("GetItem", [Charge(table.name, pk, read=units)])
        return {} if item is None else {"Item": item_json(item)}

    def _BatchGetItem(self, request: dict[str, Any]) -> dict[str, Any]:
        reads: list[tuple[str, dict[str, Any], Item | None]] = []
        groups: list[list[Charge]] = []
        for name, spec in request["RequestItems"].items():
            table = self.table(name)
            for key in spec["Keys"]:
                pk, sk = table.key_of(key)
                item = table.get(pk, sk)
                units = read_units(item_bytes(item or {}), spec.get("ConsistentRead", False))
                reads.append((name, key, item))
                groups.append([Charge(name, pk, read=units)])
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
        charge, page = query_page(self.table(request["TableName"]), request)
        self._admit_one("Query", [charge])
        return page


def _returned_values(request: dict[str, Any], write: _Write) -> Item | None:
    mode = request.get("ReturnValues", "NONE")
    if mode == "ALL_OLD":
        return write.before
    if mode == "ALL_NEW":
        return write.after
    if mode in ("UPDATED_OLD", "UPDATED_NEW"):
        scope = Scope({}, {}, request.get("ExpressionAttributeNames", {}))
        updated = {scope.name(action[1][1]) for action in parse_update(request["UpdateExpression"])}
        source = (write.before if mode == "UPDATED_OLD" else write.after) or {}
        return {name: value for name, value in source.items() if name in updated}
    return None


def _cancellation_reason(entry: dict[str, Any], write: _Write, verdict: Throttle | None) -> dict[str, Any]:
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
