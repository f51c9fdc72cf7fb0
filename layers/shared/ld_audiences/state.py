"""Per-context ordering state in DynamoDB: what makes writes stale-proof across batches, retries and
concurrent invocations.

Each (audience, context kind, context key) has one item:
  desired_order / desired_included   the newest change claimed so far (`MembershipChange.order`)
  applied_order                      the newest change known to be in LaunchDarkly
A change is written only after it *claims* the item (nothing newer claimed or applied), and is
*confirmed* after the write only if it is still the desired one. When a newer change was claimed
meanwhile, our write may have landed after the newer one's, so the caller writes the desired value
again: the last writer always leaves LaunchDarkly at the newest desired state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
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
PARALLEL_CALLS = 16

T = TypeVar("T")


@dataclass(slots=True)
class ClaimResult:
    claimed: list[MembershipChange] = field(default_factory=list)
    stale: list[MembershipChange] = field(default_factory=list)  # something newer exists
    duplicate: list[MembershipChange] = field(default_factory=list)  # already applied


class StateStore:
    def __init__(self, client: DynamoDBClient, table: str, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    @staticmethod
    def key(change: MembershipChange) -> dict[str, Any]:
        # JSON keeps the three parts unambiguous whatever characters a context key holds.
        return {"pk": {"S": json.dumps([change.audience_id, change.context_kind, change.context_key])}}

    def claim(self, changes: Sequence[MembershipChange]) -> ClaimResult:
        result = ClaimResult()
        for change, outcome in zip(changes, self._map(self._claim_one, changes), strict=True):
            getattr(result, outcome).append(change)
        return result

    def confirm(self, changes: Sequence[MembershipChange]) -> list[MembershipChange]:
        """Mark written changes applied; return, for keys claimed by a newer change meanwhile, that
        newer change, whose value must be written again."""
        return [newer for newer in self._map(self._confirm_one, changes) if newer is not None]

    def _map(self, fn: Callable[[MembershipChange], T], changes: Sequence[MembershipChange]) -> Iterable[T]:
        if len(changes) <= 1:
            return [fn(c) for c in changes]
        with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(changes))) as pool:
            return list(pool.map(fn, changes))

    def _claim_one(self, change: MembershipChange) -> str:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self.key(change),
                UpdateExpression="SET desired_order = :o, desired_included = :i, expires_at = :t",
                ConditionExpression=(
                    "(attribute_not_exists(desired_order) OR desired_order <= :o)"
                    " AND (attribute_not_exists(applied_order) OR applied_order < :o)"
                ),
                ExpressionAttributeValues={
                    ":o": {"S": change.order},
                    ":i": {"BOOL": change.included},
                    ":t": {"N": str(int(self._clock()) + RETENTION_SECONDS)},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item = self._get(change)
            return "duplicate" if item.get("applied_order", {}).get("S") == change.order else "stale"
        return "claimed"

    def _confirm_one(self, change: MembershipChange) -> MembershipChange | None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self.key(change),
                UpdateExpression="SET applied_order = :o",
                ConditionExpression=(
                    "desired_order = :o AND (attribute_not_exists(applied_order) OR applied_order < :o)"
                ),
                ExpressionAttributeValues={":o": {"S": change.order}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item = self._get(change)
            desired = item.get("desired_order", {}).get("S", "")
            # Even when the newer change is already applied, our write may have landed after its write.
            if desired > change.order:
                event_time, _, message_id = desired.partition("|")
                return change.model_copy(
                    update={
                        "included": item["desired_included"]["BOOL"],
                        "event_time": event_time,
                        "message_id": message_id,
                    }
                )
        return None

    def _get(self, change: MembershipChange) -> dict[str, Any]:
        response = self._client.get_item(TableName=self._table, Key=self.key(change), ConsistentRead=True)
        return response.get("Item", {})
