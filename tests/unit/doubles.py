"""In-process stand-ins for the fast tests of the core: the state table in bench/sim_aws.py's DynamoDB behind a
real boto3 client (no server, no moto), and small fakes of the pending log, LaunchDarkly and the dead-letter
queue that record what the core asked of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from bench.sim_aws import InProcessDynamoDB, attach
from ld_audiences.change import MembershipChange
from ld_audiences.launchdarkly import WriteError
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.pending_log import Lease, PendingItem, PendingRead
from ld_audiences.state_table import table_definition
from ld_audiences.writers import Target

TABLE = "state"
NOW = 1_800_000_000.0
AUDIENCE = Target("aud_1", "beta_testers", "user")


def change(
    key: str,
    included: bool = True,
    second: int = 0,
    *,
    message: str = "",
    reassert: bool = False,
    target: Target = AUDIENCE,
) -> MembershipChange:
    return MembershipChange(
        audience_id=target.audience_id,
        audience_key=target.audience_key,
        context_kind=target.context_kind,
        context_key=key,
        included=included,
        event_time=f"2026-11-20T10:00:{second:02d}.000000000Z",
        message_id=message or f"personas_{target.audience_id}_{key}_{second}_{included}",
        reassert=reassert,
        received_at=NOW - 10 if not reassert else None,
    )


@dataclass
class InProcessTable:
    db: InProcessDynamoDB
    client: Any  # a boto3 DynamoDB client answered by `db`
    table: str = TABLE

    @property
    def dynamodb(self) -> Any:
        """As `tests.conftest.Aws` names its client: the helpers that write state take either."""
        return self.client

    def item(self, key: dict[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.client.get_item(TableName=self.table, Key=key).get("Item")
        return found


def in_process_table(clock: Callable[[], float] = time.time) -> InProcessTable:
    """The state table, answered in this process (never throttled)."""
    db = InProcessDynamoDB(clock, throttle=False)
    db.create_table(table_definition(TABLE))
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    return InProcessTable(db, attach(session.client("dynamodb"), db))


@dataclass
class Finished:
    done: list[PendingItem]
    rest_since: float | None
    started: float
    hold_until: float | None


class FakeLog:
    """The pending log of one leased audience: `items` oldest first; records how the reconcile hands it back."""

    def __init__(self, *batches: Sequence[MembershipChange], rest_since: float | None = None) -> None:
        self.items = [PendingItem({"n": i}, NOW - 100 + i, list(b)) for i, b in enumerate(batches)]
        self.rest_since = rest_since
        self.finished: list[Finished] = []
        self.max_changes: list[int] = []

    def read(self, lease: Lease, max_changes: int) -> PendingRead:
        self.max_changes.append(max_changes)
        return PendingRead(list(self.items), self.rest_since)

    def finish(
        self,
        lease: Lease,
        resolved: Sequence[PendingItem],
        rest_since: float | None,
        *,
        started: float,
        hold_until: float | None = None,
    ) -> None:
        self.finished.append(Finished(list(resolved), rest_since, started, hold_until))


@dataclass
class Request:
    add: list[str]
    remove: list[str]


@dataclass
class ScriptedLaunchDarkly:
    """A SegmentWriter that keeps a segment's included list. `refuse(keys)` names the error for a request that
    holds those keys (None: accepted); `late` makes every accepted write report an earlier unanswered attempt."""

    refuse: Callable[[set[str]], WriteError | None] = lambda keys: None
    late: bool = False
    requests: list[Request] = field(default_factory=list)
    included: set[str] = field(default_factory=set)

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
        self.requests.append(Request(list(add), list(remove)))
        error = self.refuse({*add, *remove})
        if error is not None:
            raise error
        self.included = (self.included | set(add)) - set(remove)
        return self.late

    @property
    def sent(self) -> list[str]:
        """Every key of every request, in order."""
        return [key for r in self.requests for key in (*r.add, *r.remove)]


@dataclass
class Letter:
    change: MembershipChange
    reason: str
    detail: str


@dataclass
class FakeDeadLetters:
    working: bool = True
    letters: list[Letter] = field(default_factory=list)

    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        if self.working:
            self.letters.append(Letter(MembershipChange.from_message(record.body), reason, detail))
        return self.working


def refused(status: int, code: str = "invalid_request", **options: Any) -> WriteError:
    return WriteError(
        400 <= status < 500 and status not in (408, 409, 429), status, code, f"{status} {code}", **options
    )
