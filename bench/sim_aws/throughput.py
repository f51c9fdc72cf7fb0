"""What DynamoDB bills (`Usage`) and what it throttles (`Capacity`): per partition key and per table or
index, per second of the simulation's clock, as the package docstring (bench/sim_aws/__init__.py) says."""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.sim_aws.tables import TOP
from bench.sim_aws.values import Item, error_body, item_bytes

PARTITION_READ_UNITS, PARTITION_WRITE_UNITS = 3000.0, 1000.0
NEW_TABLE_READ_UNITS, NEW_TABLE_WRITE_UNITS = 12000.0, 4000.0
SCALING_SECONDS = 30 * 60
ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/"
THROTTLED = (
    "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your "
    "table or index so please try again shortly. If exceptions persist, check if you have a hot key: "
    "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html."
)


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
class Charge:
    """Units one item's read or write consumes on one partition key of a table or index."""

    resource: str  # "<table>" or "<table>/index/<index>"
    pk: Any
    read: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class Throttle:
    code: str
    reason: str | None
    resource: str

    def body(self) -> dict[str, Any]:
        if self.reason is None:
            return error_body(self.code, "Rate of requests exceeds the allowed throughput.")
        body = error_body(self.code, THROTTLED)
        body["ThrottlingReasons"] = [{"reason": self.reason, "resource": ARN + self.resource}]
        return body


def _load(read: float, write: float, read_limit: float, write_limit: float) -> float:
    return read / read_limit + write / write_limit


class Meter:
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


class Capacity:
    """Decides which items the current second still has room for, and remembers what they consumed."""

    def __init__(self, clock: Callable[[], float], read_units: float, write_units: float) -> None:
        self._clock = clock
        self._initial = (read_units, write_units)
        self._meters: dict[str, Meter] = {}
        self.enforced = True

    def _meter(self, resource: str) -> Meter:
        if resource not in self._meters:
            self._meters[resource] = Meter(*self._initial)
        return self._meters[resource]

    def admit(self, groups: list[list[Charge]]) -> list[Throttle | None]:
        """For each group (one item's charges), in order, why it is throttled or None: groups admitted
        before it in the same request count as consumed. Nothing is consumed here (`consume`)."""
        if not self.enforced:
            return [None] * len(groups)
        second = int(self._clock())
        earlier: dict[tuple[str, Any], list[float]] = defaultdict(lambda: [0.0, 0.0])
        verdicts: list[Throttle | None] = []
        for group in groups:
            needed: dict[tuple[str, Any], list[float]] = defaultdict(lambda: [0.0, 0.0])
            for charge in group:
                for where in ((charge.resource, charge.pk), (charge.resource, TOP)):
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
    ) -> Throttle | None:
        ceiling = None
        for (resource, pk), (read, write) in needed.items():  # a partition key over its limit outranks a ceiling
            meter = self._meter(resource)
            used = meter.used(second) if pk is TOP else meter.used_by(second, pk)
            read, write = used[0] + earlier[(resource, pk)][0] + read, used[1] + earlier[(resource, pk)][1] + write
            kind = "Index" if "/index/" in resource else "Table"
            operation = "Write" if needed[(resource, pk)][1] else "Read"
            if pk is not TOP and _load(read, write, PARTITION_READ_UNITS, PARTITION_WRITE_UNITS) > 1 + 1e-9:
                return Throttle(
                    "ProvisionedThroughputExceededException", f"{kind}{operation}KeyRangeThroughputExceeded", resource
                )
            if pk is TOP and ceiling is None and _load(read, write, *meter.ceiling(second)) > 1 + 1e-9:
                ceiling = Throttle("ThrottlingException", None, resource)
        return ceiling

    def consume(self, group: list[Charge]) -> None:
        if self.enforced:
            second = int(self._clock())
            for charge in group:
                self._meter(charge.resource).add(second, charge.pk, charge.read, charge.write)


def write_units(item: Item | None) -> float:
    return max(1, math.ceil(item_bytes(item or {}) / 1024))


def read_units(size: int, consistent: bool) -> float:
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)
