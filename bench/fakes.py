"""In-memory stand-ins for the network: what lets the benchmarks measure our code and nothing else.

None of this is product code; the product's real classes (Synchronizer, LaunchDarklyClient, the
writers, SqsChangeQueue, the handlers) run unchanged on top of these.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from ld_audiences.change import MembershipChange
from ld_audiences.state import LEASE_MARGIN_SECONDS, ClaimResult, StateStore
from ld_audiences.sync import QueuedRecord


@dataclass
class _Item:
    desired_order: str | None = None
    desired_included: bool | None = None
    applied_order: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None


class InMemoryStateStore:
    """`ld_audiences.state.StateStore` without DynamoDB: the same conditions on the same attributes.

    claim:   SET desired, lease IF (no desired OR desired <= o) AND (no applied OR applied < o)
                                  AND (no lease OR lease_until < now OR lease_owner = o);
             on failure "duplicate" when applied == o, "stale" when applied or desired is newer, else "busy".
    confirm: SET applied = o, REMOVE lease IF lease_owner = o.
    release: REMOVE lease IF lease_owner = o.
    `tests/unit/test_bench_smoke.py` checks these answers against the real store on moto.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.items: dict[tuple[str, str, str], _Item] = {}
        self.calls: Counter[str] = Counter()
        self._clock = clock

    @staticmethod
    def key(change: MembershipChange) -> tuple[str, str, str]:
        return (change.audience_id, change.context_kind, change.context_key)

    def claim(self, changes: Sequence[MembershipChange], deadline: float) -> ClaimResult:
        result = ClaimResult()
        lease_until = deadline + LEASE_MARGIN_SECONDS
        for change in changes:
            if change.reassert:
                raise NotImplementedError("the in-memory store models the claim of a change, not a reassert")
            self.calls["claim"] += 1
            item = self.items.setdefault(self.key(change), _Item())
            order, now = change.order, self._clock()
            if (
                (item.desired_order is None or item.desired_order <= order)
                and (item.applied_order is None or item.applied_order < order)
                and (item.lease_until is None or item.lease_until < now or item.lease_owner == order)
            ):
                item.desired_order, item.desired_included = order, change.included
                item.lease_owner, item.lease_until = order, lease_until
                result.claimed.append(change)
                continue
            applied = item.applied_order or ""
            if applied == order:
                result.duplicate.append(change)
            elif applied > order or (item.desired_order or "") > order:
                result.stale.append(change)
            else:
                result.busy.append(change)
        return result

    def confirm(self, changes: Sequence[MembershipChange]) -> None:
        for change in changes:
            self.calls["confirm"] += 1
            item = self.items.get(self.key(change))
            if item is not None and item.lease_owner == change.order:
                item.applied_order = change.order
                item.lease_owner = item.lease_until = None

    def release(self, changes: Sequence[MembershipChange]) -> None:
        for change in changes:
            self.calls["release"] += 1
            item = self.items.get(self.key(change))
            if item is not None and item.lease_owner == change.order:
                item.lease_owner = item.lease_until = None

    def record_write(
        self, audience_id: str, audience_key: str, context_kind: str, written: Sequence[MembershipChange]
    ) -> None:
        self.calls["record_write"] += 1

    def newest_known(self, change: MembershipChange) -> str:
        """The newest order claimed or applied for this change's context ("" when none)."""
        item = self.items.get(self.key(change))
        if item is None:
            return ""
        return max(item.desired_order or "", item.applied_order or "")


# The Synchronizer is typed against the DynamoDB store; the stand-in has the same two methods.
def as_state_store(store: InMemoryStateStore) -> StateStore:
    return store  # type: ignore[return-value]


@dataclass
class RecordedRequest:
    method: str
    url: str
    bytes: int
    items: int


@dataclass
class RecordingSession:
    """A `requests.Session` stand-in for `LaunchDarklyClient`: answers 204 like segment-audiences,
    counts requests and the bytes `requests` would send, and keeps segment state like LaunchDarkly
    (every item lands in the segment of the batch's first item)."""

    requests: list[RecordedRequest] = field(default_factory=list)
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    keep_state: bool = True

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> requests.Response:
        body = _json_bytes(json)
        batch = json.get("batch", []) if isinstance(json, dict) else []
        self.requests.append(RecordedRequest(method, url, len(body), len(batch)))
        if self.keep_state and batch:
            segment = self.members[batch[0]["cohortId"]]
            for item in batch:
                (segment.add if item["value"] else segment.discard)(item["userId"])
        response = requests.Response()
        response.status_code = 204
        response._content = b""
        response.reason = "No Content"
        response.url = url
        return response

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.requests)


def _json_bytes(body: Any) -> bytes:
    # Exactly what requests does with `json=`: json.dumps(..., allow_nan=False), UTF-8.
    return json.dumps(body, allow_nan=False).encode("utf-8")


def json_bytes(body: Any) -> int:
    return len(_json_bytes(body))


class NullDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[QueuedRecord, str]] = []

    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        self.sent.append((record, reason))
        return True


def send_batch_success(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """SQS's SendMessageBatch answer when every entry was accepted."""
    return {
        "Successful": [
            {
                "Id": e["Id"],
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(e["MessageBody"].encode(), usedforsecurity=False).hexdigest(),
            }
            for e in entries
        ],
        "Failed": [],
    }


class FakeSqsClient:
    """Accepts SendMessageBatch like SQS does (every entry successful), thread-safe, no network."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.messages = 0
        self.bytes = 0

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        size = sum(len(e["MessageBody"]) for e in Entries)
        with self._lock:
            self.calls += 1
            self.messages += len(Entries)
            self.bytes += size
        return send_batch_success(Entries)


class FakeSecretsClient:
    """What Powertools' SecretsProvider calls: `get_secret_value`."""

    def __init__(self, value: str) -> None:
        self._value = value
        self.calls = 0

    def get_secret_value(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"SecretString": self._value, "Name": "webhook-secret", "VersionId": "v1"}
