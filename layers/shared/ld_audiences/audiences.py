"""Reading the state table per audience: what `status`, `resync` and `audit` know about an audience.

The layout is `state_table.py`'s. Everything here is a Query (never a Scan): the audience summaries
under pk "audiences", and an audience's contexts under its SHARDS partition keys, read shard by shard
(counts run the shards at once on a small thread pool). Reads are eventually consistent (half the
price): a context changed in the last second may show its previous state, which is what LaunchDarkly
shows too until the change is written.

Every call asks DynamoDB for the read units it consumed (`ReturnConsumedCapacity: TOTAL`);
`AudienceReader.usage` adds them up, for the benchmarks and for the operator's bill.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

THREADS = 4  # shards read at once by `counts` and `sample`
PAGE_SIZE = 1000  # contexts per page of a listing (DynamoDB also stops a page at 1 MB)
_CONTEXT_ATTRIBUTES = f"{t.SK}, {t.CONTEXT_KEY}, {t.DESIRED_ORDER}, {t.DESIRED_INCLUDED}, {t.APPLIED_ORDER}"


@dataclass(frozen=True, slots=True)
class Audience:
    """An audience summary item: what the sync last wrote to LaunchDarkly for it."""

    audience_id: str
    context_kind: str
    audience_key: str
    last_write_at: float | None  # epoch seconds of the last successful write
    last_event_time: str | None  # the newest change of that write
    last_message_id: str | None
    changes_written: int


@dataclass(frozen=True, slots=True)
class ContextState:
    """One context's newest desired membership, and whether that change is known to be in LaunchDarkly."""

    context_key: str
    included: bool
    event_time: str
    message_id: str
    applied: bool  # False: the change is queued, being written, retried or dead-lettered

    def reassert(self, audience_id: str, audience_key: str, context_kind: str) -> MembershipChange:
        """The message that makes the sync write this context's newest desired state again, whatever it
        is by the time the message is handled (`MembershipChange.reassert`)."""
        return MembershipChange(
            audience_id=audience_id,
            audience_key=audience_key,
            context_kind=context_kind,
            context_key=self.context_key,
            included=self.included,
            event_time=self.event_time,
            message_id=self.message_id,
            reassert=True,
        )


@dataclass(frozen=True, slots=True)
class AudienceCounts:
    members: int  # contexts whose newest desired state is "included"
    contexts: int  # every context the table knows (members and those that left, until they expire)
    shard_contexts: tuple[int, ...]  # contexts per shard


@dataclass(frozen=True, slots=True)
class Page:
    contexts: list[ContextState]
    # Where the next page starts; None after the last. Opaque, stable across runs: `resync --resume` takes it.
    # A page may hold fewer than the limit (a shard ended, or the filter dropped some) without being the last.
    cursor: str | None


@dataclass(frozen=True, slots=True)
class ReadUsage:
    calls: int
    read_units: float


class AudienceReader:
    def __init__(self, client: DynamoDBClient, table: str, *, threads: int = THREADS) -> None:
        self._client = client
        self._table = table
        self._threads = threads
        self._lock = threading.Lock()
        self._calls = 0
        self._read_units = 0.0

    @property
    def usage(self) -> ReadUsage:
        """DynamoDB calls made and read units consumed by this reader so far."""
        with self._lock:
            return ReadUsage(self._calls, self._read_units)

    # ------------------------------------------------------------------------------------ audiences

    def audiences(self) -> list[Audience]:
        """Every audience summary, by audience id and context kind."""
        found = []
        request = {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": _pk(t.AUDIENCES_PK)}
        for item in self._query(request):
            audience_id, context_kind = json.loads(item[t.SK]["S"])
            written = item.get("last_write_at", {}).get("N")
            found.append(
                Audience(
                    audience_id=audience_id,
                    context_kind=context_kind,
                    audience_key=item.get("audience_key", {}).get("S", ""),
                    last_write_at=float(written) if written is not None else None,
                    last_event_time=item.get("last_event_time", {}).get("S"),
                    last_message_id=item.get("last_message_id", {}).get("S"),
                    changes_written=int(item.get("changes_written", {}).get("N", "0")),
                )
            )
        return sorted(found, key=lambda a: (a.audience_id, a.context_kind))

    def pending(self) -> dict[tuple[str, str], float]:
        """For each audience with changes not yet in LaunchDarkly, when the oldest of them was recorded
        (epoch seconds), from the pending index (eventually consistent, like every read here)."""
        request = {
            "IndexName": t.PENDING_INDEX,
            "KeyConditionExpression": "#queue = :queue",
            "ExpressionAttributeNames": {"#queue": t.PENDING_QUEUE},
            "ExpressionAttributeValues": {":queue": {"S": t.PENDING_QUEUE_VALUE}},
        }
        return {t.audience_of_work_item(item): float(item[t.PENDING_SINCE]["N"]) for item in self._query(request)}

    def retired_at(self, audience_id: str, context_kind: str) -> float | None:
        """When the audience was retired (`ld-audiences retire`), or None."""
        with self._lock:
            self._calls += 1
        item = self._client.get_item(TableName=self._table, Key=t.work_item_key(audience_id, context_kind))
        retired = item.get("Item", {}).get(t.RETIRED_AT, {}).get("N")
        return float(retired) if retired is not None else None

    # ------------------------------------------------------------------------------------ one audience

    def counts(self, audience_id: str, context_kind: str) -> AudienceCounts:
        """Exact counts of one audience: each shard is counted by a Query that returns no items (the filter
        keeps members in `Count`, while `ScannedCount` is every context)."""

        def count(partition: str) -> tuple[int, int]:
            members = contexts = 0
            request = {
                "KeyConditionExpression": "pk = :pk",
                "FilterExpression": f"{t.DESIRED_INCLUDED} = :yes",
                "ExpressionAttributeValues": {**_pk(partition), ":yes": {"BOOL": True}},
                "Select": "COUNT",
            }
            for response in self._responses(request):
                members += response["Count"]
                contexts += response["ScannedCount"]
            return members, contexts

        with ThreadPoolExecutor(self._threads) as pool:
            per_shard = list(pool.map(count, t.audience_partitions(audience_id, context_kind)))
        return AudienceCounts(
            members=sum(m for m, _ in per_shard),
            contexts=sum(c for _, c in per_shard),
            shard_contexts=tuple(c for _, c in per_shard),
        )

    def pages(
        self,
        audience_id: str,
        context_kind: str,
        *,
        cursor: str | None = None,
        limit: int = PAGE_SIZE,
        members_only: bool = False,
    ) -> Iterator[Page]:
        """The audience's contexts (or only its members), a page at a time from `cursor` (the start by default)
        to the end, in shard then hash order."""
        shard, after = _parse_cursor(cursor)
        while True:
            partition = t.partition(audience_id, context_kind, shard)
            request: dict[str, Any] = {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": _pk(partition),
                "ProjectionExpression": _CONTEXT_ATTRIBUTES,
                "Limit": limit,
            }
            if after:
                request["ExclusiveStartKey"] = {t.PK: {"S": partition}, t.SK: {"S": after}}
            if members_only:
                request["FilterExpression"] = f"{t.DESIRED_INCLUDED} = :yes"
                request["ExpressionAttributeValues"][":yes"] = {"BOOL": True}
            response = self._call(request)
            last = response.get("LastEvaluatedKey")
            if last is not None:
                after = last[t.SK]["S"]
            else:
                shard, after = shard + 1, ""
            more = shard < t.SHARDS
            yield Page([_context(item) for item in response.get("Items", [])], f"{shard}:{after}" if more else None)
            if not more:
                return

    def contexts(self, audience_id: str, context_kind: str, *, members_only: bool = False) -> Iterator[ContextState]:
        for page in self.pages(audience_id, context_kind, members_only=members_only):
            yield from page.contexts

    def sample(
        self, audience_id: str, context_kind: str, size: int, counts: AudienceCounts, rng: random.Random
    ) -> list[ContextState]:
        """A uniform random sample of `size` of the audience's contexts (all of them when it has no more).

        The sort key is SHA-256 of the context key, so each shard holds its contexts in an order that is
        a random permutation, unrelated to anything that happened to them: any run of consecutive sort keys
        is a uniform random subset of the shard. Each shard gives one run, from a random point of the hash
        space (wrapping around past the last key), of a length proportional to its size (the largest
        remainders get the rounding). Proportional rather than equal per shard: every context then has the
        same chance (size / contexts) to be drawn, so the sample's drift share estimates the audience's
        without weights, and the shard sizes are known already (`counts`: the finite-population correction
        needs the total anyway). One run per shard costs one or two Queries per shard."""
        quotas = _proportional(min(size, counts.contexts), counts.shard_contexts)
        starts = [f"{rng.getrandbits(128):032x}" for _ in quotas]  # drawn here: the same seed, the same sample
        partitions = t.audience_partitions(audience_id, context_kind)

        def run(shard: int) -> list[ContextState]:
            wanted, start = quotas[shard], starts[shard]
            if wanted == 0:
                return []
            found = self._run(partitions[shard], "sk >= :start", start, wanted)
            if len(found) < wanted:  # wrap around: the keys before the starting point
                found += self._run(partitions[shard], "sk < :start", start, wanted - len(found))
            return found

        with ThreadPoolExecutor(self._threads) as pool:
            return [context for part in pool.map(run, range(t.SHARDS)) for context in part]

    def _run(self, partition: str, condition: str, start: str, wanted: int) -> list[ContextState]:
        request: dict[str, Any] = {
            "KeyConditionExpression": f"pk = :pk AND {condition}",
            "ExpressionAttributeValues": {**_pk(partition), ":start": {"S": start}},
            "ProjectionExpression": _CONTEXT_ATTRIBUTES,
        }
        found: list[ContextState] = []
        while len(found) < wanted:
            response = self._call({**request, "Limit": wanted - len(found)})
            found += [_context(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    # ------------------------------------------------------------------------------------ plumbing

    def _query(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for response in self._responses(request):
            yield from response.get("Items", [])

    def _responses(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page of a Query (DynamoDB stops each at 1 MB or `Limit`)."""
        request = dict(request)
        while True:
            response = self._call(request)
            yield response
            last = response.get("LastEvaluatedKey")
            if last is None:
                return
            request["ExclusiveStartKey"] = last

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = dict(
            self._client.query(TableName=self._table, ReturnConsumedCapacity="TOTAL", **request)
        )
        units = float(response.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
        with self._lock:
            self._calls += 1
            self._read_units += units
        return response


def _pk(partition: str) -> dict[str, Any]:
    return {":pk": {"S": partition}}


def _context(item: dict[str, Any]) -> ContextState:
    order = item[t.DESIRED_ORDER]["S"]
    event_time, _, message_id = order.partition("|")
    return ContextState(
        context_key=item[t.CONTEXT_KEY]["S"],
        included=item[t.DESIRED_INCLUDED]["BOOL"],
        event_time=event_time,
        message_id=message_id,
        applied=item.get(t.APPLIED_ORDER, {}).get("S") == order,
    )


def _parse_cursor(cursor: str | None) -> tuple[int, str]:
    if not cursor:
        return 0, ""
    shard, separator, after = cursor.partition(":")
    if not (separator and shard.isdigit() and int(shard) < t.SHARDS):
        raise ValueError(f"not a cursor of this listing: {cursor!r}")
    return int(shard), after


def _proportional(size: int, weights: Sequence[int]) -> list[int]:
    """`size` split in proportion to `weights` (largest remainders get the rounding), none above its weight."""
    total = sum(weights)
    if total == 0 or size <= 0:
        return [0] * len(weights)
    exact = [size * w / total for w in weights]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - quotas[i], reverse=True)
    for i in by_remainder[: size - sum(quotas)]:
        quotas[i] += 1
    return quotas
