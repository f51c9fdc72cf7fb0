"""DynamoDB's condition and update expressions: parsed once (cached by text), evaluated against an item."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench.sim_aws.values import Invalid, Item, Value, compare

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


def parse_condition(text: str) -> tuple[Any, ...]:
    if text not in _CONDITIONS:
        _CONDITIONS[text] = _Parser(text).condition()
    return _CONDITIONS[text]


def parse_update(text: str) -> list[tuple[Any, ...]]:
    if text not in _UPDATES:
        _UPDATES[text] = _Parser(text).update()
    return _UPDATES[text]


@dataclass
class Scope:
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
                raise Invalid("an arithmetic operand is not a number")
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
            return compare(value, ">=", self.get(node[2])) and compare(value, "<=", self.get(node[3]))
        if kind == "cmp":
            return compare(self.get(node[2]), node[1], self.get(node[3]))
        raise ValueError(kind)

    def apply(self, actions: list[tuple[Any, ...]]) -> Item:
        new = dict(self.item)
        for action in actions:
            name = self.name(action[1][1])
            if action[0] == "set":
                value = self.get(action[2])
                if value is None:
                    raise Invalid("an update refers to an attribute that does not exist")
                new[name] = value
            elif action[0] == "remove":
                new.pop(name, None)
            else:  # add
                increment = self.get(action[2])
                current = new.get(name, ("N", Decimal(0)))
                if increment is None or increment[0] != "N" or current[0] != "N":
                    raise Invalid("ADD needs numbers")
                new[name] = ("N", current[1] + increment[1])
        return new
