"""The in-process DynamoDB's tables and their keys-only global secondary indexes: items by key, kept
sorted where a Query needs an order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from bench.sim_aws.values import Invalid, Item, from_json, value_bytes

PARTITION_KEY_BYTES, SORT_KEY_BYTES = 2048, 1024


class Top:
    """Above any key value: `(v, TOP)` bounds every index entry whose sort key is v from above."""

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True


TOP = Top()


@dataclass
class Index:
    """A global secondary index projecting keys only: one entry per item that has both its key attributes,
    ordered in its partition by (index sort key, table keys) — DynamoDB leaves ties unordered."""

    table: Table
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
                raise Invalid(f"One or more parameter values were invalid: Type mismatch for Index Key {name}")
        names = (self.table.hash_key, self.table.range_key, self.hash_key, self.range_key)
        return {name: item[name] for name in names if name}

    def place(self, entry: Item) -> tuple[Any, tuple[Any, Any, Any]]:
        """An entry's partition and its place there."""
        table = self.table
        sk = entry[table.range_key][1] if table.range_key else None
        return entry[self.hash_key][1], (entry[self.range_key][1], entry[table.hash_key][1], sk)


@dataclass
class Table:
    name: str
    hash_key: str
    range_key: str | None
    indexes: dict[str, Index] = field(default_factory=dict)
    partitions: dict[Any, dict[Any, Item]] = field(default_factory=dict)
    _sorted: dict[Any, SortedList] = field(default_factory=dict)  # sort keys of a partition, made for a Query

    def key_of(self, key: dict[str, Any]) -> tuple[Any, Any]:
        pk = from_json(key[self.hash_key])
        sk = from_json(key[self.range_key]) if self.range_key else None
        if value_bytes(pk) > PARTITION_KEY_BYTES or (sk is not None and value_bytes(sk) > SORT_KEY_BYTES):
            raise Invalid("key too large")
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
