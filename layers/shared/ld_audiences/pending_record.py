"""Recording a batch in the pending log (`pending_log.py` has the protocol): each audience's changes held in
its work item while they fit, else appended to its log items, and the audience listed in the pending index.

A work item that has filled is *compacted* by the next record of a few changes: its inline changes and the new
ones go into one log item, and the update that lists the audience removes the inline attributes it moved. An
audience that gets a change or two a batch while it waits for LaunchDarkly (many audiences, each changing a
little) then pays a log item's write and delete per work item's worth of changes, not per change."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.dynamodb_batch import StateError, TableStore, error_code
from ld_audiences.pending_codec import decode, encode, parts
from ld_audiences.writers import Target

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# Bytes of inline changes (attribute names and values) a work item holds: with its other attributes (about
# 300 bytes and the audience key) it stays within one write unit, 1 KB, which every record, take and finish
# pays. About six single-change records.
INLINE_BYTES = 640
# A group of more changes goes to the log without being encoded to see whether it fits: a typical change takes
# 60-100 compressed bytes, and a first sync's groups of hundreds would be encoded twice for nothing.
INLINE_CHANGES = 32


class PendingRecorder(TableStore):
    """The record side of `PendingLog`."""

    def record(self, groups: Sequence[tuple[Target, Sequence[MembershipChange]]]) -> set[Target]:
        """Append each audience's changes to its log (inline when they fit) and list the audience; returns the
        audiences that could not be recorded (their records must be retried)."""
        now = self._clock()
        failed: set[Target] = set()
        logged: list[tuple[Target, Sequence[MembershipChange]]] = []
        for target, changes, outcome in self._record_inline(groups, now):
            if outcome is None:
                logged.append((target, changes))
            elif not outcome:
                failed.add(target)
        requests: list[dict[str, Any]] = []
        owners: list[Target] = []
        wide: set[Target] = set()
        for target, changes in logged:
            for index, (part, blob) in enumerate(parts(changes)):
                # A batch's first item of an audience goes to shard 0, so an audience that never gets more
                # than ITEM_CHANGES a batch is read with one Query.
                shard = index % t.PENDING_SHARDS
                if index:
                    wide.add(target)
                item = {
                    t.PK: {"S": t.pending_partition(target.audience_id, target.context_kind, shard)},
                    t.SK: {"S": f"{now:017.6f}#{uuid.uuid4().hex[:16]}"},
                    t.ENTRIES: {"B": blob},
                    t.COUNT: {"N": str(len(part))},
                }
                requests.append({"PutRequest": {"Item": item}})
                owners.append(target)
        unwritten = {owners[i] for i in self._batch.write(requests)}
        failed |= unwritten
        listed = [target for target, _ in logged if target not in unwritten]
        listing = self._map(lambda target: self._list(target, now, target in wide), listed)
        failed.update(target for target, ok in zip(listed, listing, strict=True) if not ok)
        return failed

    def _record_inline(
        self, groups: Sequence[tuple[Target, Sequence[MembershipChange]]], now: float
    ) -> list[tuple[Target, Sequence[MembershipChange], bool | None]]:
        """Hold in its work item each group that fits there, or compact a full work item with it: (target,
        changes, True when recorded, False when the work item could not be written, None when the group goes to
        the log)."""
        encoded = {target: (changes, encode(changes)) for target, changes in groups if len(changes) <= INLINE_CHANGES}
        small = {target: v for target, v in encoded.items() if _inline_size(v[1]) <= INLINE_BYTES}
        held: dict[tuple[str, str], dict[str, Any]] = {}
        if small:
            # What the work items already hold, eventually consistent (half a read unit): a work item that seems
            # full is compacted rather than tried (a refused conditional write costs a write unit); one that
            # filled meanwhile refuses the write and is compacted as the refusal shows it. The whole item, not a
            # projection: it is within 1 KB, so its inline changes cost no more read units than its size.
            try:
                items = self._batch.get(
                    [t.work_item_key(target.audience_id, target.context_kind) for target in small], consistent=False
                )
                held = {t.audience_of_work_item(item): item for item in items}
            except StateError:
                small = {}
        tried: list[tuple[Target, Sequence[MembershipChange], bytes, dict[str, Any] | None]] = []
        for target, (changes, blob) in small.items():
            item = held.get((target.audience_id, target.context_kind))
            room = item is None or int(item.get(t.INLINE_BYTES, {}).get("N", "0")) + _inline_size(blob) <= INLINE_BYTES
            if room:
                tried.append((target, changes, blob, None))
            elif item is not None and _compactable(item, now):
                tried.append((target, changes, blob, item))
        outcomes = self._map(
            lambda job: self._hold(*job[:3], now) if job[3] is None else self._compact(job[0], job[1], job[3], now),
            tried,
        )
        done = {job[0]: outcome for job, outcome in zip(tried, outcomes, strict=True)}
        return [(target, changes, done.get(target)) for target, changes in groups]

    def _compact(self, target: Target, changes: Sequence[MembershipChange], item: dict[str, Any], now: float) -> bool:
        """Move the full work item's inline changes (as `item`, a read that may be stale, shows them) and
        `changes` into one log item, then list the audience and remove what was moved, if every moved attribute
        is still there and no lease is live (a holder's finish removes what its take returned, and would free
        their bytes twice). Whether the changes were recorded."""
        moved = sorted((name, bytes(value["B"])) for name, value in item.items() if name.startswith(t.INLINE_PREFIX))
        entries = [change for _, blob in moved for change in decode(blob, target)] + list(changes)
        recorded = min(inline_recorded_at(name) for name, _ in moved)  # the item is as old as its oldest change
        log_item: dict[str, Any] = {
            t.PK: {"S": t.pending_partition(target.audience_id, target.context_kind, 0)},
            t.SK: {"S": f"{recorded:017.6f}#{uuid.uuid4().hex[:16]}"},
            t.ENTRIES: {"B": encode(entries)},
            t.COUNT: {"N": str(len(entries))},
        }
        names = {f"#m{i}": name for i, (name, _) in enumerate(moved)}
        try:
            self._calls += 2
            self._client.put_item(TableName=self._table, Item=log_item)
            self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(target.audience_id, target.context_kind),
                UpdateExpression=f"{_LISTING} REMOVE {', '.join(names)} ADD #seq :one, #held :freed",
                ConditionExpression="(attribute_not_exists(#until) OR #until < :now) AND "
                + " AND ".join(f"attribute_exists({placeholder})" for placeholder in names),
                ExpressionAttributeNames={**_LISTING_NAMES, "#held": t.INLINE_BYTES, "#until": t.LEASE_UNTIL, **names},
                ExpressionAttributeValues={
                    **_listing_values(target, now),
                    ":freed": {"N": str(-sum(len(name) + len(blob) for name, blob in moved))},
                },
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                return False  # SQS brings the records again; a log item written meanwhile holds copies
            # Taken, or changed since it was read: the log item holds copies of changes that are still inline
            # or already resolved, which a reconcile keeps once per context; the new changes are in it too.
            return self._list(target, now, wide=False)
        except BotoCoreError:
            return False
        return True

    def _hold(self, target: Target, changes: Sequence[MembershipChange], blob: bytes, now: float) -> bool | None:
        """Add the changes to the work item if it has room, else compact it with them (another recorder filled
        it since it was read): True when recorded, None when neither (they go to the log), False when the work
        item could not be written."""
        name = inline_name(now)
        size = len(name) + len(blob)
        try:
            self._calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(target.audience_id, target.context_kind),
                UpdateExpression=f"{_LISTING}, #entry = :entry ADD #seq :one, #held :size",
                ConditionExpression="attribute_not_exists(#held) OR #held <= :room",
                ExpressionAttributeNames={**_LISTING_NAMES, "#entry": name, "#held": t.INLINE_BYTES},
                ExpressionAttributeValues={
                    **_listing_values(target, now),
                    ":entry": {"B": blob},
                    ":size": {"N": str(size)},
                    ":room": {"N": str(INLINE_BYTES - size)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                return False
            full: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
            return self._compact(target, changes, full, now) if _compactable(full, now) else None
        except BotoCoreError:
            return False
        return True

    def _list(self, target: Target, now: float, wide: bool) -> bool:
        names, values, update = dict(_LISTING_NAMES), _listing_values(target, now), _LISTING
        if wide:
            update += ", #wide = :wide"
            names["#wide"], values[":wide"] = t.PENDING_WIDE, {"BOOL": True}
        try:
            self._calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(target.audience_id, target.context_kind),
                UpdateExpression=f"{update} ADD #seq :one",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except (ClientError, BotoCoreError):
            return False
        return True

    def _map(self, fn: Callable[[_In], _Out], jobs: list[_In]) -> list[_Out]:
        if len(jobs) <= 1 or self._executor is None:
            return [fn(job) for job in jobs]
        return list(self._executor.map(fn, jobs))


# What every record sets on the audience's work item (with `ADD #seq :one`): it lists the audience as pending
# since its oldest change, and bumps `pending_seq` so a reconcile under way does not clear it.
_LISTING = (
    "SET #since = if_not_exists(#since, :now), #queue = if_not_exists(#queue, :queue), #key = :key, #newest = :now"
)
_LISTING_NAMES = {
    "#since": t.PENDING_SINCE,
    "#queue": t.PENDING_QUEUE,
    "#key": t.AUDIENCE_KEY,
    "#newest": t.PENDING_NEWEST,
    "#seq": t.PENDING_SEQ,
}


def _listing_values(target: Target, now: float) -> dict[str, Any]:
    return {
        ":now": {"N": f"{now:.6f}"},
        ":queue": {"S": t.PENDING_QUEUE_VALUE},
        ":key": {"S": target.audience_key},
        ":one": {"N": "1"},
    }


# An inline attribute's name: INLINE_PREFIX, when recorded (17 characters), "_", 8 hex digits.
INLINE_NAME_LENGTH = len(t.INLINE_PREFIX) + 17 + 1 + 8


def inline_name(now: float) -> str:
    return f"{t.INLINE_PREFIX}{now:017.6f}_{uuid.uuid4().hex[:8]}"


def inline_recorded_at(name: str) -> float:
    return float(name[len(t.INLINE_PREFIX) :].partition("_")[0])


def _inline_size(blob: bytes) -> int:
    return INLINE_NAME_LENGTH + len(blob)


def _compactable(item: dict[str, Any], now: float) -> bool:
    """Whether a full work item (as read) may be compacted: it holds inline changes and no live lease. A lease
    runs to its holder's deadline plus a margin, so once it has run out no finish of its holder is under way."""
    until = item.get(t.LEASE_UNTIL, {}).get("N")
    return any(name.startswith(t.INLINE_PREFIX) for name in item) and (until is None or float(until) < now)
