"""The pending log: changes recorded but not yet in LaunchDarkly, kept per audience in the state table, and the
audiences that have some, oldest first. The layout is `state_table.py`'s.

LaunchDarkly takes one audience per request and limits requests, so a request must carry everything pending
for its audience, whichever SQS batches and invocations brought it. SQS batches mix audiences; the log
regroups them. Its protocol:

* *record* (every batch): append the batch's changes of each audience as one log item, **then** bump the
  audience's work item (`pending_seq` + 1; `pending_since` and `pending_queue` if absent, which lists the
  audience in the sparse index PENDING_INDEX, ordered by `pending_since`). In that order, a work item that
  counts a batch always finds its log item written.
* *take* an audience (a reconcile): a conditional write of the work item's lease; one holder at a time, so
  one writer per audience and no per-context leases. The lease ends at its holder's deadline plus a margin.
* *read* the oldest log items, up to a budget; the reconcile writes them and *finishes*: deletes the items
  it resolved, then clears the work item if nothing else is pending and no batch was recorded since the
  take (`pending_seq` unchanged), else sets `pending_since` to the oldest change left.

What makes it safe: a batch recorded during a reconcile either was read (its item existed) or changes
`pending_seq`, so the clear fails and the audience stays listed. A crash leaves the log as it was (the lease
runs out); an item deleted but not cleared leaves an audience listed with nothing to do, which the next
reconcile clears. Recording fails only the batch's records of the audiences it could not record: SQS
retries them, and a change recorded twice is one change (the reconcile keeps one per context).

Items are compressed: a 1,000-change log item is about 50 KB, so recording and deleting a first sync costs
about 0.1 write units a change, against 1 for its context item.

*Inline*: a batch that holds a few changes of an audience (the common case when changes are spread over many
audiences) would pay a log item's write and delete for them. So while they fit, they are held in the work item
itself, one attribute each, written by the same update that lists the audience: one write unit a record instead
of three. The work item stays within 1 KB (INLINE_BYTES); a record that would overflow it goes to the log, and
a take returns the inline changes with the lease, so reading them costs nothing more. The reconcile removes the
attributes it resolved, in the update that hands the audience back. A full work item is compacted by the next
record (`pending_record.py`): the inline changes move into a log item, removed by an update conditioned on no
live lease, so a holder's inline changes are only ever removed by the holder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.dynamodb_batch import StateError, error_code
from ld_audiences.pending_codec import decode
from ld_audiences.pending_record import PendingRecorder, inline_recorded_at
from ld_audiences.writers import Target

# Audiences read from the index per page while looking for one to take.
INDEX_PAGE = 50
# Items first read from each shard of a wide log: its items hold up to ITEM_CHANGES each, and a round takes
# the oldest few over every shard.
WIDE_FIRST_ITEMS = 2


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to write one audience to LaunchDarkly until `until`."""

    target: Target
    owner: str
    until: float
    seq: int  # the work item's pending_seq when taken
    wide: bool = False  # some batch recorded more than one log item for the audience: read every log shard
    retired_at: float | None = None  # the audience is retired: its segment is emptied, its changes skipped
    inline: tuple[tuple[str, bytes], ...] = ()  # the work item's inline changes when taken: (attribute, entries)


@dataclass(frozen=True, slots=True)
class PendingItem:
    key: dict[str, Any]  # a log item's key; empty for inline changes
    received_at: float
    changes: list[MembershipChange]
    inline: str | None = None  # the work item's attribute holding these changes
    size: int = 0  # an inline attribute's bytes (name and value), as INLINE_BYTES counts them


@dataclass(frozen=True, slots=True)
class PendingRead:
    items: list[PendingItem]  # oldest first
    rest_since: float | None  # when the oldest pending change not among `items` was recorded; None: none


class PendingLog(PendingRecorder):
    """The pending log: recording (`PendingRecorder`), the index, one audience's lease, read and finish."""

    # ------------------------------------------------------------------------------------ the index

    def pending_audiences(self) -> Iterator[tuple[str, str, float]]:
        """(audience id, context kind, pending since) of every audience with pending changes, oldest first.
        The index is eventually consistent: an audience just finished may still show (its take fails)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": t.PENDING_INDEX,
            "KeyConditionExpression": "#queue = :queue",
            "ExpressionAttributeNames": {"#queue": t.PENDING_QUEUE},
            "ExpressionAttributeValues": {":queue": {"S": t.PENDING_QUEUE_VALUE}},
            "Limit": INDEX_PAGE,
        }
        start: dict[str, Any] | None = None
        while True:
            items, start = self._query(request, start)
            for item in items:
                audience_id, context_kind = t.audience_of_work_item(item)
                since = item.get(t.PENDING_SINCE, {}).get("N")
                if since is not None:  # moto's index can show an item between two attributes of an update
                    yield audience_id, context_kind, float(since)
            if not start:
                return

    def newest(self, audiences: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """When the newest pending change of each of `audiences` (id, context kind) was recorded, where known.
        Read eventually consistent: a hint for the debounce (`debounce.py`), never for correctness."""
        items = self._batch.get(
            [t.work_item_key(audience_id, context_kind) for audience_id, context_kind in audiences],
            projection=f"{t.PK}, {t.PENDING_NEWEST}",
            consistent=False,
        )
        return {
            t.audience_of_work_item(item): float(item[t.PENDING_NEWEST]["N"])
            for item in items
            if t.PENDING_NEWEST in item
        }

    def oldest_since(self) -> float | None:
        """When the oldest pending change was recorded, or None when nothing is pending."""
        return next((since for _, _, since in self.pending_audiences()), None)

    # ------------------------------------------------------------------------------------ one audience

    def take(self, audience_id: str, context_kind: str, until: float) -> Lease | None:
        """The audience's lease until `until`, or None if it has nothing pending or another holder."""
        owner = uuid.uuid4().hex
        try:
            self._calls += 1
            answer = self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(audience_id, context_kind),
                UpdateExpression="SET #owner = :owner, #until = :until",
                ConditionExpression="attribute_exists(#since) AND (attribute_not_exists(#until) OR #until < :now)",
                ExpressionAttributeNames={k: _WORK_NAMES[k] for k in ("#owner", "#until", "#since")},
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": f"{until:.3f}"},
                    ":now": {"N": f"{self._clock():.3f}"},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise StateError(error_code(exc)) from exc
        except BotoCoreError as exc:
            raise StateError(error_code(exc)) from exc
        item = answer["Attributes"]
        target = Target(audience_id, item.get(t.AUDIENCE_KEY, {}).get("S", audience_id), context_kind)
        seq = int(item.get(t.PENDING_SEQ, {}).get("N", "0"))
        retired = item.get(t.RETIRED_AT, {}).get("N")
        wide = bool(item.get(t.PENDING_WIDE, {}).get("BOOL"))
        inline = tuple(sorted((name, bytes(v["B"])) for name, v in item.items() if name.startswith(t.INLINE_PREFIX)))
        return Lease(target, owner, until, seq, wide, float(retired) if retired is not None else None, inline)

    def read(self, lease: Lease, max_changes: int) -> PendingRead:
        """The oldest log items of the leased audience holding at most `max_changes` changes (at least one
        item), read consistently. A wide log (a first sync: 1,000 changes an item, over every shard) is read a
        few items a shard first, so a round does not read megabytes to use four items."""
        target = lease.target
        # Inline changes are few (INLINE_BYTES) and already read with the lease: always all of them.
        held = [
            PendingItem({}, inline_recorded_at(name), decode(blob, target), name, len(name) + len(blob))
            for name, blob in lease.inline
        ]
        max_changes = max(max_changes - sum(len(item.changes) for item in held), 1)
        found: list[dict[str, Any]] = []
        starts: dict[int, dict[str, Any] | None] = dict.fromkeys(range(t.PENDING_SHARDS if lease.wide else 1))
        cut: dict[int, float] = {}  # shards not read to the end: when their last item read was recorded
        limit = WIDE_FIRST_ITEMS if lease.wide else max_changes
        while starts:
            for shard, start in list(starts.items()):
                items, last = self._query_log(target, shard, start, limit)
                found += items
                if last is None:
                    del starts[shard]
                    cut.pop(shard, None)
                else:
                    starts[shard] = last
                    cut[shard] = _recorded_at(items[-1]) if items else cut.get(shard, 0.0)
            if sum(int(item[t.COUNT]["N"]) for item in found) >= max_changes:
                break
            limit = max_changes
        found.sort(key=lambda item: item[t.SK]["S"])
        taken: list[PendingItem] = []
        total = 0
        for item in found:
            count = int(item[t.COUNT]["N"])
            if taken and total + count > max_changes:
                break
            total += count
            blob = item[t.ENTRIES]["B"]
            taken.append(
                PendingItem({t.PK: item[t.PK], t.SK: item[t.SK]}, _recorded_at(item), decode(bytes(blob), target))
            )
        rest = [_recorded_at(item) for item in found[len(taken) : len(taken) + 1]] + list(cut.values())
        return PendingRead(held + taken, min(rest) if rest else None)

    def _query_log(
        self, target: Target, shard: int, start: dict[str, Any] | None, limit: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a log shard, oldest first: its items, and where the next page starts (None: the end)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": t.PK},
            "ExpressionAttributeValues": {
                ":pk": {"S": t.pending_partition(target.audience_id, target.context_kind, shard)}
            },
            "ConsistentRead": True,
            "Limit": limit,
        }
        return self._query(request, start)

    def _query(
        self, request: dict[str, Any], start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a Query from `start`: its items, and where the next page starts (None: the end)."""
        if start:
            request = {**request, "ExclusiveStartKey": start}
        try:
            self._calls += 1
            answer = self._client.query(**request)
        except (ClientError, BotoCoreError) as exc:
            raise StateError(error_code(exc)) from exc
        return list(answer.get("Items", [])), answer.get("LastEvaluatedKey")

    def finish(
        self,
        lease: Lease,
        resolved: Sequence[PendingItem],
        rest_since: float | None,
        *,
        started: float,
        hold_until: float | None = None,
    ) -> None:
        """Delete the resolved items and hand the audience back: cleared from the index when nothing is left
        (`rest_since` None) and nothing was recorded since the take, else listed as pending since
        `rest_since` (or `started`, for what was recorded meanwhile). `hold_until` keeps the lease that long
        (a write whose outcome is unknown may still land; a failing LaunchDarkly is given a pause)."""
        logged = [item for item in resolved if item.inline is None]
        unresolved = self._batch.write([{"DeleteRequest": {"Key": item.key}} for item in logged])
        if unresolved:
            # Still in the log: read again next time and found written (duplicates), then deleted.
            rest_since = min([logged[i].received_at for i in unresolved] + [rest_since or started])
        # Resolved inline changes go with the update that hands the audience back (while the lease is live,
        # recorders only add others: a compaction waits for no lease).
        inline = {f"#i{i}_": item.inline for i, item in enumerate(resolved) if item.inline is not None}
        names = {**_WORK_NAMES, **inline}
        values: dict[str, Any] = {":owner": {"S": lease.owner}, ":seq": {"N": str(lease.seq)}}
        if hold_until is not None:
            values[":hold"] = {"N": f"{hold_until:.3f}"}
        if rest_since is None:
            # Nothing recorded since the take: nothing inline but what was resolved.
            pending = ", ".join(["#since", "#queue", "#wide", "#newest", "#held", *inline])
            clear = (
                f"REMOVE #owner, #until, {pending}" if hold_until is None else f"SET #until = :hold REMOVE {pending}"
            )
            old = self._update_work(lease, clear, values, "#owner = :owner AND #seq = :seq", names)
            if old is None or old.get(t.LEASE_OWNER, {}).get("S") != lease.owner:
                return  # cleared, or the lease had run out and another holder has the audience
            rest_since = started  # recorded meanwhile
        values[":since"] = {"N": f"{rest_since:.6f}"}
        values[":queue"] = {"S": t.PENDING_QUEUE_VALUE}
        listed = "SET #since = :since, #queue = :queue" + ("" if hold_until is None else ", #until = :hold")
        removed = ([] if hold_until is not None else ["#owner", "#until"]) + list(inline)
        keep = listed + (f" REMOVE {', '.join(removed)}" if removed else "")
        if inline:
            values[":freed"] = {"N": str(-sum(item.size for item in resolved if item.inline is not None))}
            keep += " ADD #held :freed"
        self._update_work(lease, keep, values, "#owner = :owner", names)

    def _update_work(
        self, lease: Lease, update: str, values: dict[str, Any], condition: str, names: dict[str, str]
    ) -> dict[str, Any] | None:
        """Update the work item if the lease is still ours; None when done, else the item as it was."""
        expressions = update + " " + condition
        try:
            self._calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(lease.target.audience_id, lease.target.context_kind),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in names.items() if _named(k, expressions)},
                ExpressionAttributeValues={k: v for k, v in values.items() if _named(k, expressions)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                old: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
                return old
            raise StateError(error_code(exc)) from exc
        except BotoCoreError as exc:
            raise StateError(error_code(exc)) from exc
        return None

    # ------------------------------------------------------------------------------------ retirement

    def retire(self, target: Target, at: float) -> float:
        """Mark the audience retired as of `at` (kept if it already was); returns when it was retired."""
        answer = self._client.update_item(
            TableName=self._table,
            Key=t.work_item_key(target.audience_id, target.context_kind),
            UpdateExpression="SET #retired = if_not_exists(#retired, :at), #key = if_not_exists(#key, :key)",
            ExpressionAttributeNames={"#retired": t.RETIRED_AT, "#key": t.AUDIENCE_KEY},
            ExpressionAttributeValues={":at": {"N": f"{at:.3f}"}, ":key": {"S": target.audience_key}},
            ReturnValues="ALL_NEW",
        )
        return float(answer["Attributes"][t.RETIRED_AT]["N"])

    def unretire(self, audience_id: str, context_kind: str) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=t.work_item_key(audience_id, context_kind),
            UpdateExpression="REMOVE #retired",
            ExpressionAttributeNames={"#retired": t.RETIRED_AT},
        )

    def retired_at(self, audience_id: str, context_kind: str) -> float | None:
        item = self._client.get_item(
            TableName=self._table, Key=t.work_item_key(audience_id, context_kind), ConsistentRead=True
        ).get("Item", {})
        retired = item.get(t.RETIRED_AT, {}).get("N")
        return float(retired) if retired is not None else None

    # ------------------------------------------------------------------------------------ ticks

    def tick_due(self, now: float, due: float) -> bool:
        """Whether a reconcile-only invocation should be queued for `due`: none is due between now and then
        (one is enough, however many invocations end with work left)."""
        try:
            self._calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.TICK_KEY,
                UpdateExpression="SET due = :due",
                ConditionExpression="attribute_not_exists(due) OR due <= :now OR due > :due",
                ExpressionAttributeValues={":due": {"N": f"{due:.3f}"}, ":now": {"N": f"{now:.3f}"}},
            )
        except ClientError as exc:
            return error_code(exc) != "ConditionalCheckFailedException"  # unknown: better one tick too many
        except BotoCoreError:
            return True
        return True


_WORK_NAMES = {
    "#owner": t.LEASE_OWNER,
    "#until": t.LEASE_UNTIL,
    "#since": t.PENDING_SINCE,
    "#queue": t.PENDING_QUEUE,
    "#seq": t.PENDING_SEQ,
    "#wide": t.PENDING_WIDE,
    "#newest": t.PENDING_NEWEST,
    "#held": t.INLINE_BYTES,
}


def _named(placeholder: str, expressions: str) -> bool:
    """Whether an expression uses `placeholder` (a name or value placeholder ends at a non-word character)."""
    at = expressions.find(placeholder)
    while at >= 0:
        end = at + len(placeholder)
        if end == len(expressions) or not (expressions[end].isalnum() or expressions[end] == "_"):
            return True
        at = expressions.find(placeholder, end)
    return False


def _recorded_at(item: dict[str, Any]) -> float:
    return float(item[t.SK]["S"].partition("#")[0])
