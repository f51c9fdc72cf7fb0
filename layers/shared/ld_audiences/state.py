"""Per-context ordering state in DynamoDB: what makes writes stale-proof across batches, retries and
concurrent invocations. The table's layout is in `state_table.py`.

Each (audience, context kind, context key) has one item:
  desired_order / desired_included   the newest change claimed so far (`MembershipChange.order`)
  applied_order                      the newest change known to be in LaunchDarkly
  lease_owner / lease_until          who may write this context to LaunchDarkly right now, and until when:
                                     one change (its order) in one execution environment (this store)

A change is written only after it *claims* the item: nothing newer claimed or applied, and no live
lease of another change. The lease makes writers of one context take turns, so an older write can
never land after a newer one; it runs until the claimer's invocation deadline plus a margin, so a
crashed invocation blocks the context only briefly. After the write the change is *confirmed*
(applied, lease dropped); after a failed write the lease is *released* so the retry need not wait.

The lease names the execution environment as well as the change: SQS and Segment deliver the same
change twice, and a second copy in another invocation must wait like any other writer. Were the
change alone the owner, the copy would share the lease, and once the first copy confirmed (dropping
the lease) a newer change could claim and write while the copy's write was still on its way, then
land under it: a stale member.

A *reassert* (`MembershipChange.reassert`: resync, audit repair, the second look after a write whose
outcome is unknown) does not carry a state of its own: it claims the context's newest desired state as
it is in the table, and writes that again, even if it was applied already.

Every call is batched: claims, confirmations and releases are `TransactWriteItems` of up to 100 updates,
each with its own condition. A transaction is all or nothing; when some conditions fail, DynamoDB
cancels it and names each failed item with the item as the condition saw it (ALL_OLD), so one more
call writes the rest. A first sync costs 2 calls per 100 changes; the worst case, when every claim of
a group conflicts, is 1 call for the group plus 1 for whatever is left.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Longer than anything can wait upstream (Segment retries 4 h, the DLQ keeps 14 days) before being
# redriven, so an old change can never find its key forgotten and overwrite a newer state.
RETENTION_SECONDS = 30 * 24 * 3600
# A lease outlives its holder's deadline by this much: clocks of Lambda instances differ a little,
# and a request started just before the deadline may still be answered just after it.
LEASE_MARGIN_SECONDS = 5.0
TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems
# Cancellation reasons that say "not now" rather than "never": the item is in another transaction, or
# the partition is throttled. Those changes are retried like contexts another invocation is writing.
_TRY_AGAIN = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)
# How often one confirm or release retries items that were only cancelled along with others.
_ROUNDS = 5

T = TypeVar("T")


class StateError(Exception):
    """DynamoDB refused or failed a state update for reasons other than its conditions."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    @property
    def refused(self) -> bool:
        """DynamoDB will refuse this request whatever the retries (an item it cannot store)."""
        return self.code.startswith("Validation")


@dataclass(slots=True)
class ClaimResult:
    # For reasserts, `claimed` holds the state to write (the context's newest desired one), not the request.
    claimed: list[MembershipChange] = field(default_factory=list)
    stale: list[MembershipChange] = field(default_factory=list)  # something newer was claimed or applied
    duplicate: list[MembershipChange] = field(default_factory=list)  # this very change is applied
    busy: list[MembershipChange] = field(default_factory=list)  # an older change is being written now
    # DynamoDB refused the update of this one context (its code): it fails alone, never its neighbours.
    failed: list[tuple[MembershipChange, str]] = field(default_factory=list)

    def extend(self, other: ClaimResult) -> None:
        self.claimed += other.claimed
        self.stale += other.stale
        self.duplicate += other.duplicate
        self.busy += other.busy
        self.failed += other.failed


class StateStore:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table
        self._executor = executor
        self._clock = clock
        # One store per execution environment (functions/sync/app.py), which runs one batch at a time.
        self._environment = uuid.uuid4().hex
        self.calls = 0  # DynamoDB calls made, for benchmarks and metrics

    def _owner(self, change: MembershipChange) -> str:
        return f"{change.order}@{self._environment}"

    @staticmethod
    def key(change: MembershipChange) -> dict[str, Any]:
        return t.context_item_key(change.audience_id, change.context_kind, change.context_key)

    # ------------------------------------------------------------------------------------ claim

    def claim(self, changes: Sequence[MembershipChange], deadline: float) -> ClaimResult:
        """Take the lease of each change's context until `deadline` (plus a margin). The changes must be
        of distinct contexts (the sync keeps the newest per context)."""
        result = ClaimResult()
        reasserts = [c for c in changes if c.reassert]
        wanted = [c for c in changes if not c.reassert] + self._current_states(reasserts, result)
        lease_until = deadline + LEASE_MARGIN_SECONDS
        for part in self._map(lambda group: self._claim_group(group, lease_until), _groups(wanted)):
            result.extend(part)
        return result

    def _claim_group(self, changes: list[MembershipChange], lease_until: float) -> ClaimResult:
        result = ClaimResult()
        remaining = changes
        while remaining:
            now = self._clock()
            updates = [self._claim_update(change, now, lease_until) for change in remaining]
            try:
                self._transact(updates)
            except _Cancelled as cancelled:
                retry: list[MembershipChange] = []
                for change, reason in zip(remaining, cancelled.reasons, strict=True):
                    code = reason.get("Code", "None")
                    if code == "None":
                        retry.append(change)  # cancelled only because another item failed
                    elif code == "ConditionalCheckFailed":
                        getattr(result, _why_not_claimed(change, reason.get("Item", {}))).append(change)
                    elif code in _TRY_AGAIN:
                        result.busy.append(change)
                    else:
                        result.failed.append((change, code))
                remaining = retry
            except StateError as exc:
                if not exc.refused:
                    raise
                # DynamoDB refused the whole call without naming an item: halve until the one that
                # causes it stands alone, so it fails without its neighbours.
                if len(remaining) == 1:
                    result.failed.append((remaining[0], exc.code))
                    return result
                middle = len(remaining) // 2
                result.extend(self._claim_group(remaining[:middle], lease_until))
                result.extend(self._claim_group(remaining[middle:], lease_until))
                return result
            else:
                result.claimed += remaining
                remaining = []
        return result

    def _claim_update(self, change: MembershipChange, now: float, lease_until: float) -> dict[str, Any]:
        values: dict[str, Any] = {
            ":o": {"S": change.order},
            ":owner": {"S": self._owner(change)},
            ":now": {"N": f"{now:.3f}"},
            ":until": {"N": f"{lease_until:.3f}"},
        }
        # The holder may take its own lease again (the busy retry of this invocation); a copy of the same
        # change in another invocation may not.
        lease_free = "(attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner)"
        if change.reassert:
            update = "SET lease_owner = :owner, lease_until = :until"
            condition = f"desired_order = :o AND {lease_free}"
        else:
            values[":k"] = {"S": change.context_key}
            values[":i"] = {"BOOL": change.included}
            update = (
                "SET context_key = :k, desired_order = :o, desired_included = :i, lease_owner = :owner,"
                " lease_until = :until"
            )
            if change.included:
                # A member is kept as long as it is one; only contexts that left the audience expire.
                update += " REMOVE expires_at"
            else:
                update += ", expires_at = :expires"
                values[":expires"] = {"N": str(int(now) + RETENTION_SECONDS)}
            condition = (
                "(attribute_not_exists(desired_order) OR desired_order <= :o)"
                f" AND (attribute_not_exists(applied_order) OR applied_order < :o) AND {lease_free}"
            )
        return {
            "Update": {
                "TableName": self._table,
                "Key": self.key(change),
                "UpdateExpression": update,
                "ConditionExpression": condition,
                "ExpressionAttributeValues": values,
                # On failure, the item exactly as the condition saw it: no later write can blur why.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _current_states(self, reasserts: list[MembershipChange], result: ClaimResult) -> list[MembershipChange]:
        """The newest desired state of each reasserted context, as a change to claim and write again.
        A context the table no longer knows has nothing to reassert (stale)."""
        current: list[MembershipChange] = []
        for group in _groups(reasserts):
            items = self._get_items([self.key(c) for c in group])
            for change in group:
                item = items.get(t.context_hash(change.context_key), {})
                order = item.get(t.DESIRED_ORDER, {}).get("S")
                if order is None:
                    result.stale.append(change)
                    continue
                event_time, _, message_id = order.partition("|")
                current.append(
                    change.model_copy(
                        update={
                            "included": item[t.DESIRED_INCLUDED]["BOOL"],
                            "event_time": event_time,
                            "message_id": message_id,
                        }
                    )
                )
        return current

    def _get_items(self, keys: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Items by sort key (the context hash), read consistently: a reassert must see the newest claim."""
        found: dict[str, dict[str, Any]] = {}
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(_ROUNDS):
            try:
                self.calls += 1
                response = self._client.batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise StateError(_code(exc)) from exc
            for item in response.get("Responses", {}).get(self._table, []):
                found[item[t.SK]["S"]] = dict(item)
            request = dict(response.get("UnprocessedKeys") or {})
            if not request:
                return found
        raise StateError("UnprocessedKeys")

    # ------------------------------------------------------------------------------------ end of a lease

    def confirm(self, changes: Sequence[MembershipChange]) -> None:
        """The changes are in LaunchDarkly: record them as applied and drop their leases."""
        self._end_leases(changes, "SET applied_order = :o REMOVE lease_owner, lease_until", with_order=True)

    def release(self, changes: Sequence[MembershipChange]) -> None:
        """The write failed: drop the leases so the retry (or a newer change) need not wait."""
        self._end_leases(changes, "REMOVE lease_owner, lease_until", with_order=False)

    def _end_leases(self, changes: Sequence[MembershipChange], update: str, *, with_order: bool) -> None:
        def end(group: list[MembershipChange]) -> None:
            remaining = group
            for _ in range(_ROUNDS):
                updates = []
                for change in remaining:
                    values = {":owner": {"S": self._owner(change)}}
                    if with_order:
                        values[":o"] = {"S": change.order}
                    updates.append(
                        {
                            "Update": {
                                "TableName": self._table,
                                "Key": self.key(change),
                                "UpdateExpression": update,
                                "ConditionExpression": "lease_owner = :owner",
                                "ExpressionAttributeValues": values,
                            }
                        }
                    )
                try:
                    self._transact(updates)
                    return
                except _Cancelled as cancelled:
                    # A failed condition means our lease ran out and a newer change took it: its write
                    # comes after ours, nothing to do. Everything else is tried again.
                    codes = [reason.get("Code", "None") for reason in cancelled.reasons]
                    unexpected = {
                        c for c in codes if c not in _TRY_AGAIN and c not in ("None", "ConditionalCheckFailed")
                    }
                    if unexpected:
                        raise StateError(", ".join(sorted(unexpected))) from None
                    remaining = [
                        c for c, code in zip(remaining, codes, strict=True) if code != "ConditionalCheckFailed"
                    ]
                    if not remaining:
                        return
            raise StateError("TransactionConflict")

        self._map(end, _groups(list(changes)))

    # ------------------------------------------------------------------------------------ audience summary

    def record_write(
        self, audience_id: str, audience_key: str, context_kind: str, written: Sequence[MembershipChange]
    ) -> None:
        """Note on the audience's summary item that `written` reached LaunchDarkly (what `status` shows)."""
        newest = max(written, key=lambda c: c.order)
        self.calls += 1
        self._client.update_item(
            TableName=self._table,
            Key=t.audience_item_key(audience_id, context_kind),
            UpdateExpression=(
                "SET audience_key = :k, last_write_at = :now, last_event_time = :e, last_message_id = :m"
                " ADD changes_written :n"
            ),
            ExpressionAttributeValues={
                ":k": {"S": audience_key},
                ":now": {"N": f"{self._clock():.3f}"},
                ":e": {"S": newest.event_time},
                ":m": {"S": newest.message_id},
                ":n": {"N": str(len(written))},
            },
        )

    # ------------------------------------------------------------------------------------ plumbing

    def _transact(self, updates: list[dict[str, Any]]) -> None:
        self.calls += 1
        try:
            # botocore fills ClientRequestToken itself and keeps it across its retries: a transaction
            # retried after a lost answer is applied once.
            self._client.transact_write_items(TransactItems=updates)  # type: ignore[arg-type]
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException":
                reasons: Any = exc.response.get("CancellationReasons")
                if isinstance(reasons, list) and len(reasons) == len(updates):
                    raise _Cancelled(reasons) from None
            raise StateError(_code(exc)) from exc

    def _map(self, fn: Callable[[list[MembershipChange]], T], groups: list[list[MembershipChange]]) -> list[T]:
        if len(groups) <= 1 or self._executor is None:
            return [fn(group) for group in groups]
        return list(self._executor.map(fn, groups))


class _Cancelled(Exception):
    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("transaction cancelled")
        self.reasons = reasons


def _why_not_claimed(change: MembershipChange, item: dict[str, Any]) -> str:
    desired = item.get(t.DESIRED_ORDER, {}).get("S", "")
    if change.reassert:
        return "stale" if desired != change.order else "busy"
    applied = item.get(t.APPLIED_ORDER, {}).get("S", "")
    if applied == change.order:
        return "duplicate"
    if applied > change.order or desired > change.order:
        return "stale"
    return "busy"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _groups(changes: Iterable[MembershipChange]) -> list[list[MembershipChange]]:
    items = list(changes)
    return [items[i : i + TRANSACTION_ITEMS] for i in range(0, len(items), TRANSACTION_ITEMS)]
