"""What LaunchDarkly has for each context: the context items of the state table (`state_table.py`), read and
written by the reconcile that holds the audience's lease (`pending_log.py`), so no per-item condition is
needed: one writer per audience at a time. An item is written after LaunchDarkly acknowledged its change,
with BatchWriteItem (one write unit a context); a change older than what an item holds is stale."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.dynamodb_batch import TableStore

if TYPE_CHECKING:
    pass

# Longer than anything can wait upstream (Segment retries 4 h, the DLQ keeps 14 days) before being
# redriven, so an old change can never find its key forgotten and overwrite a newer state.
RETENTION_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Applied:
    """A context's newest change in LaunchDarkly."""

    order: str  # MembershipChange.order
    included: bool


class ContextStates(TableStore):
    def read(self, audience_id: str, context_kind: str, keys: Sequence[str]) -> dict[str, Applied]:
        """What LaunchDarkly has of each of `keys`, by context key (absent: never written). Read consistently:
        the previous holder's writes must be seen, or a change it superseded could be written again."""
        by_hash = {t.context_hash(key): key for key in keys}
        items = self._batch.get(
            [t.hashed_context_item_key(audience_id, context_kind, digest) for digest in by_hash],
            projection=f"{t.SK}, {t.APPLIED_ORDER}, {t.DESIRED_INCLUDED}",
        )
        found: dict[str, Applied] = {}
        for item in items:
            applied = item.get(t.APPLIED_ORDER, {}).get("S")
            if applied is None:
                continue  # claimed by the sync before the pending log, never written: nothing in LaunchDarkly
            # An item of the earlier layout may hold a newer claim than its applied change; that claim's message
            # is still queued and will be written. Its membership is the newest desired one, what a reassert wants.
            found[by_hash[item[t.SK]["S"]]] = Applied(applied, item[t.DESIRED_INCLUDED]["BOOL"])
        return found

    def write(self, written: Sequence[MembershipChange], *, parallel: bool = True) -> list[MembershipChange]:
        """Record changes LaunchDarkly acknowledged; returns those that could not be recorded (they stay
        pending and are written again: a duplicate write, never a lost one). `parallel=False` makes the calls
        one after another, for a caller already running on the state pool."""
        now = int(self._clock())
        requests: list[dict[str, Any]] = []
        for change in written:
            item: dict[str, Any] = {
                **t.context_item_key(change.audience_id, change.context_kind, change.context_key),
                t.CONTEXT_KEY: {"S": change.context_key},
                t.DESIRED_ORDER: {"S": change.order},
                t.DESIRED_INCLUDED: {"BOOL": change.included},
                t.APPLIED_ORDER: {"S": change.order},
            }
            if not change.included:
                # A member is kept as long as it is one; only contexts that left the audience expire.
                item[t.EXPIRES_AT] = {"N": str(now + RETENTION_SECONDS)}
            requests.append({"PutRequest": {"Item": item}})
        return [written[i] for i in self._batch.write(requests, parallel=parallel)]

    def record_write(
        self, audience_id: str, audience_key: str, context_kind: str, written: Sequence[MembershipChange]
    ) -> None:
        """Note on the audience's summary item that `written` reached LaunchDarkly (what `status` shows)."""
        newest = max(written, key=lambda c: c.order)
        self._calls += 1
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
