"""A Query of a table or of its keys-only index, one page at a time: key condition, filter, projection,
either direction, pages of 1 MB or `Limit`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sortedcontainers import SortedList

from bench.sim_aws.expressions import Scope, parse_condition
from bench.sim_aws.tables import TOP, Index, Table
from bench.sim_aws.throughput import Charge, read_units
from bench.sim_aws.values import Invalid, Item, Value, from_json, item_bytes, item_json, to_json

PAGE_BYTES = 1024 * 1024


def query_page(table: Table, request: dict[str, Any]) -> tuple[Charge, dict[str, Any]]:
    """One page of a Query of `table` or its index: what it reads (to admit and bill) and its answer."""
    index = table.indexes[request["IndexName"]] if "IndexName" in request else None
    consistent = request.get("ConsistentRead", False)
    if index is not None and consistent:
        raise Invalid("Consistent reads are not supported on global secondary indexes")
    values = {k: from_json(v) for k, v in request.get("ExpressionAttributeValues", {}).items()}
    names = request.get("ExpressionAttributeNames", {})
    hash_key = table.hash_key if index is None else index.hash_key
    pk, sort_condition = _split_key_condition(
        parse_condition(request["KeyConditionExpression"]), hash_key, values, names
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
        filter_node = parse_condition(request["FilterExpression"]) if "FilterExpression" in request else None
        projection = [
            names.get(p.strip(), p.strip()) for p in request.get("ProjectionExpression", "").split(",") if p.strip()
        ]
        scanned = size = 0
        matched: list[Item] = []
        last: Item | None = None
        for key in keys:
            item = item_of(key)
            if sort_condition is not None and not Scope(item, values, names).holds(sort_condition):
                if scanned:  # the sort keys a key condition accepts are contiguous: past them
                    break
                continue
            scanned += 1
            size += item_bytes(item)
            if filter_node is None or Scope(item, values, names).holds(filter_node):
                matched.append(item)
            if (limit is not None and scanned >= limit) or size >= PAGE_BYTES:
                last = item
                break
    except TypeError as exc:  # a key condition's value of another type than the key's
        raise Invalid(f"Query key condition not supported: {exc}") from None
    consumed = read_units(size, consistent)
    body: dict[str, Any] = {"Count": len(matched), "ScannedCount": scanned}
    if request.get("Select") != "COUNT":
        body["Items"] = [item_json(i, projection or None) for i in matched]
    if last is not None:
        key_names = [table.hash_key, table.range_key] + ([index.hash_key, index.range_key] if index else [])
        body["LastEvaluatedKey"] = {k: to_json(last[k]) for k in dict.fromkeys(key_names) if k}
    if request.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
        body["ConsumedCapacity"] = {"TableName": request["TableName"], "CapacityUnits": consumed}
    return Charge(table.name if index is None else index.resource, pk, read=consumed), body


def _keyspace(
    table: Table, index: Index | None, pk: Any, start: dict[str, Any] | None
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
    low = None if low is None else (low,) if low_inclusive else (low, TOP)
    high = None if high is None else (high, TOP) if high_inclusive else (high,)
    return low, True, high, True


def _split_key_condition(
    node: tuple[Any, ...], hash_key: str, values: dict[str, Value], names: dict[str, str]
) -> tuple[Any, tuple[Any, ...] | None]:
    """`pk = :v [AND <sort key condition>]` → (the partition key's value, the sort key condition)."""
    parts = [node[1], node[2]] if node[0] == "and" else [node]
    pk: Any = None
    rest = None
    for part in parts:
        if part[0] == "cmp" and part[1] == "=" and Scope({}, values, names).name(part[2][1]) == hash_key:
            pk = values[part[3][1]][1]
        else:
            rest = part
    if pk is None:
        raise Invalid("the key condition must name the partition key")
    return pk, rest
