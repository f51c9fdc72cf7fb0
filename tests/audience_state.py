"""Writing an audience's state the way the sync does (context items, summary), for the tests of what reads it."""

from __future__ import annotations

from collections.abc import Iterable

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences.context_state import ContextStates
from tests.conftest import Aws


def change(
    audience: str, key: str, included: bool, *, kind: str = "user", second: int = 0, audience_key: str = ""
) -> MembershipChange:
    return MembershipChange(
        audience_id=audience,
        audience_key=audience_key or f"{audience}_key",
        context_kind=kind,
        context_key=key,
        included=included,
        event_time=f"2026-11-20T10:00:{second:02d}.000000000Z",
        message_id=f"personas_{audience}_{kind}_{key}_{second}",
    )


def write_state(aws: Aws, changes: Iterable[MembershipChange], *, applied: bool = True) -> None:
    """Record the changes as LaunchDarkly's and note the write on the audience's summary, as the sync does
    after LaunchDarkly accepted them. `applied=False` writes what a sync before the pending log left while a
    change was being written: the newest desired state, not yet applied."""
    pending = list(changes)
    states = ContextStates(aws.dynamodb, aws.table)
    if not applied:
        for c in pending:
            aws.dynamodb.update_item(
                TableName=aws.table,
                Key=t.context_item_key(c.audience_id, c.context_kind, c.context_key),
                UpdateExpression="SET context_key = :k, desired_order = :o, desired_included = :i",
                ExpressionAttributeValues={
                    ":k": {"S": c.context_key},
                    ":o": {"S": c.order},
                    ":i": {"BOOL": c.included},
                },
            )
        return
    assert states.write(pending) == [], "every change is recorded"
    by_target: dict[tuple[str, str, str], list[MembershipChange]] = {}
    for c in pending:
        by_target.setdefault(c.target, []).append(c)
    for (audience_id, audience_key, kind), written in by_target.items():
        states.record_write(audience_id, audience_key, kind, written)


def write_audience(
    aws: Aws, audience: str, members: Iterable[str], left: Iterable[str] = (), *, kind: str = "user", second: int = 0
) -> None:
    """`members` in the audience and `left` out of it, all written to LaunchDarkly."""
    changes = [change(audience, key, True, kind=kind, second=second) for key in members]
    changes += [change(audience, key, False, kind=kind, second=second) for key in left]
    write_state(aws, changes)
