"""Per-context ordering state in DynamoDB: what makes writes stale-proof across batches, retries and
concurrent invocations.

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
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from ld_audiences.change import MembershipChange

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Longer than anything can wait upstream (Segment retries 4 h, the DLQ keeps 14 days) before being
# redriven, so an old change can never find its key forgotten and overwrite a newer state.
RETENTION_SECONDS = 30 * 24 * 3600
# A lease outlives its holder's deadline by this much: clocks of Lambda instances differ a little,
# and a request started just before the deadline may still be answered just after it.
LEASE_MARGIN_SECONDS = 5.0
PARALLEL_CALLS = 16

T = TypeVar("T")


@dataclass(slots=True)
class ClaimResult:
    claimed: list[MembershipChange] = field(default_factory=list)
    stale: list[MembershipChange] = field(default_factory=list)  # something newer was claimed or applied
    duplicate: list[MembershipChange] = field(default_factory=list)  # this very change is applied
    busy: list[MembershipChange] = field(default_factory=list)  # an older change is being written now


class StateStore:
    def __init__(self, client: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        # One store per execution environment (functions/sync/app.py), which runs one batch at a time.
        self._environment = uuid.uuid4().hex

    def _owner(self, change: MembershipChange) -> str:
        return f"{change.order}@{self._environment}"

    @staticmethod
    def key(change: MembershipChange) -> dict[str, Any]:
        # JSON keeps the three parts unambiguous whatever characters a context key holds.
        return {"pk": {"S": json.dumps([change.audience_id, change.context_kind, change.context_key])}}

    def claim(self, changes: Sequence[MembershipChange], deadline: float) -> ClaimResult:
        """Take the lease of each change's context until `deadline` (plus a margin)."""
        result = ClaimResult()
        lease_until = deadline + LEASE_MARGIN_SECONDS
        outcomes = self._map(lambda change: self._claim_one(change, lease_until), changes)
        for change, outcome in zip(changes, outcomes, strict=True):
            getattr(result, outcome).append(change)
        return result

    def confirm(self, changes: Sequence[MembershipChange]) -> None:
        """The changes are in LaunchDarkly: record them as applied and drop their leases."""
        self._map(
            lambda change: self._end_lease(
                change, "SET applied_order = :o REMOVE lease_owner, lease_until", {":o": {"S": change.order}}
            ),
            changes,
        )

    def release(self, changes: Sequence[MembershipChange]) -> None:
        """The write failed: drop the leases so the retry (or a newer change) need not wait."""
        self._map(lambda change: self._end_lease(change, "REMOVE lease_owner, lease_until"), changes)

    def _map(self, fn: Callable[[MembershipChange], T], changes: Sequence[MembershipChange]) -> list[T]:
        if len(changes) <= 1:
            return [fn(c) for c in changes]
        with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(changes))) as pool:
            return list(pool.map(fn, changes))

    def _claim_one(self, change: MembershipChange, lease_until: float) -> str:
        now = self._clock()
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self.key(change),
                UpdateExpression=(
                    "SET desired_order = :o, desired_included = :i, lease_owner = :owner, lease_until = :until,"
                    " expires_at = :expires"
                ),
                # The holder may take its own lease again (the busy retry of this invocation); a copy of
                # the same change in another invocation may not.
                ConditionExpression=(
                    "(attribute_not_exists(desired_order) OR desired_order <= :o)"
                    " AND (attribute_not_exists(applied_order) OR applied_order < :o)"
                    " AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner)"
                ),
                ExpressionAttributeValues={
                    ":o": {"S": change.order},
                    ":owner": {"S": self._owner(change)},
                    ":i": {"BOOL": change.included},
                    ":now": {"N": f"{now:.3f}"},
                    ":until": {"N": f"{lease_until:.3f}"},
                    ":expires": {"N": str(int(now) + RETENTION_SECONDS)},
                },
                # On failure, the item exactly as the condition saw it: one call, and no later write can
                # blur why the claim failed.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: dict[str, Any] = exc.response.get("Item", {})  # type: ignore[assignment]
            applied = item.get("applied_order", {}).get("S", "")
            if applied == change.order:
                return "duplicate"
            if applied > change.order or item.get("desired_order", {}).get("S", "") > change.order:
                return "stale"
            return "busy"
        return "claimed"

    def _end_lease(self, change: MembershipChange, update: str, values: dict[str, Any] | None = None) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self.key(change),
                UpdateExpression=update,
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": self._owner(change)}, **(values or {})},
            )
        except ClientError as exc:
            # Our lease expired and a newer change took it: its write comes after ours, nothing to do.
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
