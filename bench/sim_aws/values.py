"""DynamoDB's wire format as the in-process DynamoDB keeps it: typed values, items, their sizes and
comparisons, and the error body of a request DynamoDB refuses."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

Value = tuple[str, Any]  # ("S", str) | ("N", Decimal) | ("B", bytes) | ("BOOL", bool)
Item = dict[str, Value]


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


def compare(a: Value | None, op: str, b: Value | None) -> bool:
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


class Invalid(Exception):
    pass


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}
