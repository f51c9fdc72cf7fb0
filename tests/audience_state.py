"""Writing an audience's state the way the sync does (claim, confirm, summary), for the tests of what reads it."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ld_audiences.change import MembershipChange
from ld_audiences.state import StateStore
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
    """Claim the changes in the state table and, if `applied`, confirm them and note the write on the audience's
    summary, as the sync does after LaunchDarkly accepted them."""
    store = StateStore(aws.dynamodb, aws.table)
    pending = list(changes)
    claim = store.claim(pending, time.time() + 30)
    assert len(claim.claimed) == len(pending), "every change claims its context"
    if applied:
        store.confirm(claim.claimed)
        by_target: dict[tuple[str, str, str], list[MembershipChange]] = {}
        for c in claim.claimed:
            by_target.setdefault(c.target, []).append(c)
        for (audience_id, audience_key, kind), written in by_target.items():
            store.record_write(audience_id, audience_key, kind, written)
    else:
        store.release(claim.claimed)


def write_audience(
    aws: Aws, audience: str, members: Iterable[str], left: Iterable[str] = (), *, kind: str = "user", second: int = 0
) -> None:
    """`members` in the audience and `left` out of it, all written to LaunchDarkly."""
    changes = [change(audience, key, True, kind=kind, second=second) for key in members]
    changes += [change(audience, key, False, kind=kind, second=second) for key in left]
    write_state(aws, changes)
