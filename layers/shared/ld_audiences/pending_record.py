"""Recording a batch in the pending log (`pending_log.py` has the protocol): each audience's changes held in
its work item while they fit, else appended to its log items, and the audience listed in the pending index."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.dynamodb_batch import StateError, TableStore, error_code
from ld_audiences.pending_codec import encode, parts
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
        """Hold in its work item each group that fits there: (target, changes, True when held, False when the
        work item could not be written, None when the group goes to the log)."""
        encoded = {target: (changes, encode(changes)) for target, changes in groups if len(changes) <= INLINE_CHANGES}
        small = {target: v for target, v in encoded.items() if _inline_size(v[1]) <= INLINE_BYTES}
        held: dict[tuple[str, str], int] = {}
        if small:
            # What the work items already hold, eventually consistent (half a read unit): a work item that seems
            # full is not tried (a refused conditional write costs a write unit); one that filled meanwhile
            # refuses the write, and its group goes to the log.
            try:
                items = self._batch.get(
                    [t.work_item_key(target.audience_id, target.context_kind) for target in small],
                    projection=f"{t.PK}, {t.INLINE_BYTES}",
                    consistent=False,
                )
                held = {
                    t.audience_of_work_item(item): int(item.get(t.INLINE_BYTES, {}).get("N", "0")) for item in items
                }
            except StateError:
                small = {}
        tried = [
            (target, changes, blob)
            for target, (changes, blob) in small.items()
            if held.get((target.audience_id, target.context_kind), 0) + _inline_size(blob) <= INLINE_BYTES
        ]
        outcomes = self._map(lambda job: self._hold(job[0], job[2], now), tried)
        done = {target: outcome for (target, _, _), outcome in zip(tried, outcomes, strict=True)}
        return [(target, changes, done.get(target)) for target, changes in groups]

    def _hold(self, target: Target, blob: bytes, now: float) -> bool | None:
        """Add the changes to the work item if it has room: True when held, None when it had no room, False
        when it could not be written."""
        name = inline_name(now)
        size = len(name) + len(blob)
        try:
            self._calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.work_item_key(target.audience_id, target.context_kind),
                UpdateExpression=(
                    "SET #since = if_not_exists(#since, :now), #queue = if_not_exists(#queue, :queue), #key = :key,"
                    " #newest = :now, #entry = :entry ADD #seq :one, #held :size"
                ),
                ConditionExpression="attribute_not_exists(#held) OR #held <= :room",
                ExpressionAttributeNames={
                    "#since": t.PENDING_SINCE,
                    "#queue": t.PENDING_QUEUE,
                    "#key": t.AUDIENCE_KEY,
                    "#newest": t.PENDING_NEWEST,
                    "#entry": name,
                    "#seq": t.PENDING_SEQ,
                    "#held": t.INLINE_BYTES,
                },
                ExpressionAttributeValues={
                    ":now": {"N": f"{now:.6f}"},
                    ":queue": {"S": t.PENDING_QUEUE_VALUE},
                    ":key": {"S": target.audience_key},
                    ":entry": {"B": blob},
                    ":one": {"N": "1"},
                    ":size": {"N": str(size)},
                    ":room": {"N": str(INLINE_BYTES - size)},
                },
            )
        except ClientError as exc:
            return None if error_code(exc) == "ConditionalCheckFailedException" else False
        except BotoCoreError:
            return False
        return True

    def _list(self, target: Target, now: float, wide: bool) -> bool:
        names = {"#since": t.PENDING_SINCE, "#queue": t.PENDING_QUEUE, "#key": t.AUDIENCE_KEY, "#seq": t.PENDING_SEQ}
        values: dict[str, Any] = {
            ":now": {"N": f"{now:.6f}"},
            ":queue": {"S": t.PENDING_QUEUE_VALUE},
            ":key": {"S": target.audience_key},
            ":one": {"N": "1"},
        }
        names["#newest"] = t.PENDING_NEWEST
        update = (
            "SET #since = if_not_exists(#since, :now), #queue = if_not_exists(#queue, :queue), #key = :key,"
            " #newest = :now"
        )
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


# An inline attribute's name: INLINE_PREFIX, when recorded (17 characters), "_", 8 hex digits.
INLINE_NAME_LENGTH = len(t.INLINE_PREFIX) + 17 + 1 + 8


def inline_name(now: float) -> str:
    return f"{t.INLINE_PREFIX}{now:017.6f}_{uuid.uuid4().hex[:8]}"


def inline_recorded_at(name: str) -> float:
    return float(name[len(t.INLINE_PREFIX) :].partition("_")[0])


def _inline_size(blob: bytes) -> int:
    return INLINE_NAME_LENGTH + len(blob)
