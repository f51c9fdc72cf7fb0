"""`reconcile.plan`, the decision per context, as a table: what LaunchDarkly gets from an audience's pending
changes and what it already has. Pure, no AWS."""

from __future__ import annotations

from ld_audiences.change import MembershipChange
from ld_audiences.context_state import Applied
from ld_audiences.outcomes import DUPLICATE, RETIRED, STALE, SUPERSEDED
from ld_audiences.reconcile import plan


def change(key: str, included: bool, second: int, *, message: str = "", reassert: bool = False) -> MembershipChange:
    return MembershipChange(
        audience_id="aud",
        audience_key="aud_key",
        context_kind="user",
        context_key=key,
        included=included,
        event_time=f"2026-11-20T10:00:{second:02d}.000000000Z",
        message_id=message or f"personas_{key}_{second}",
        reassert=reassert,
    )


def applied(c: MembershipChange) -> Applied:
    return Applied(c.order, c.included)


def test_the_newest_pending_change_of_a_context_is_written_and_older_ones_are_superseded() -> None:
    old, new = change("u1", True, 1), change("u1", False, 2)
    result = plan([new, old], {})
    assert result.write == [new] and result.skipped == [(old, SUPERSEDED)]


def test_what_launchdarkly_has_already_is_a_duplicate_and_anything_older_is_stale() -> None:
    have = change("u1", True, 5)
    assert plan([have], {"u1": applied(have)}).skipped == [(have, DUPLICATE)]
    older = change("u1", False, 4)
    assert plan([older], {"u1": applied(have)}).skipped == [(older, STALE)]
    newer = change("u1", False, 6)
    assert plan([newer], {"u1": applied(have)}).write == [newer]


def test_equal_times_are_ordered_by_message_id() -> None:
    have = change("u1", True, 5, message="personas_b")
    assert plan([change("u1", False, 5, message="personas_a")], {"u1": applied(have)}).write == []
    assert plan([change("u1", False, 5, message="personas_c")], {"u1": applied(have)}).write != []


def test_a_reassert_writes_what_launchdarkly_should_have_unless_a_newer_change_is_pending() -> None:
    have = change("u1", True, 5)
    reassert = change("u1", False, 1, reassert=True)  # its own state does not count
    [written] = plan([reassert], {"u1": applied(have)}).write
    assert (written.included, written.order) == (True, have.order)
    newer = change("u1", False, 9)
    result = plan([reassert, newer], {"u1": applied(have)})
    assert result.write == [newer] and result.skipped == [(reassert, SUPERSEDED)]
    # The table no longer knows the context: nothing to reassert.
    assert plan([reassert], {}).skipped == [(reassert, STALE)] and plan([reassert], {}).write == []


def test_a_reassert_beats_a_duplicate_of_what_is_applied() -> None:
    """The late-apply repair: the recheck must write even what the table says is applied."""
    have = change("u1", False, 5)
    result = plan([have, change("u1", True, 1, reassert=True)], {"u1": applied(have)})
    assert [(c.included, c.order) for c in result.write] == [(False, have.order)]
    assert result.skipped == [(have, DUPLICATE)]


def test_a_retired_audience_gets_only_removals_of_its_members_newer_than_what_they_have() -> None:
    member, gone = change("u1", True, 5), change("u2", False, 5)
    pending = [change("u1", True, 9), change("u2", True, 9), change("u3", True, 9)]
    result = plan(pending, {"u1": applied(member), "u2": applied(gone)}, retired_at=1_800_000_000.0)
    [removal] = result.write
    assert (removal.context_key, removal.included) == ("u1", False) and removal.order > member.order
    assert sorted(c.context_key for c, reason in result.skipped if reason == RETIRED) == ["u1", "u2", "u3"]


def test_a_context_launchdarkly_never_had_gets_its_newest_change() -> None:
    first, second = change("u1", True, 1), change("u2", False, 1)
    result = plan([first, second], {})
    assert sorted(result.write, key=lambda c: c.context_key) == [first, second] and result.skipped == []


def test_of_two_rechecks_of_one_context_one_is_written() -> None:
    have = change("u1", True, 5)
    one, two = change("u1", True, 1, reassert=True), change("u1", True, 2, reassert=True)
    result = plan([one, two], {"u1": applied(have)})
    assert len(result.write) == 1 and result.skipped == [(two, SUPERSEDED)]


def test_a_recheck_writes_the_state_launchdarkly_is_recorded_to_have_whatever_its_own() -> None:
    have = change("u1", False, 5, message="personas_x")
    [written] = plan([change("u1", True, 9, reassert=True)], {"u1": applied(have)}).write
    assert (written.included, written.event_time, written.message_id) == (False, have.event_time, "personas_x")


def test_a_recheck_beside_an_older_pending_change_writes_the_recorded_state_and_the_change_is_stale() -> None:
    have, older = change("u1", True, 5), change("u1", False, 3)
    result = plan([older, change("u1", False, 1, reassert=True)], {"u1": applied(have)})
    assert [(c.included, c.order) for c in result.write] == [(True, have.order)]
    assert result.skipped == [(older, STALE)]


def test_a_retirement_older_than_what_launchdarkly_has_still_removes_after_it() -> None:
    member = change("u1", True, 5)
    pending = [change("u1", True, 9), change("u1", False, 8)]
    result = plan(pending, {"u1": applied(member)}, retired_at=1_000_000_000.0)  # 2001: before the change
    [removal] = result.write
    assert removal.order > member.order and not removal.reassert and not removal.included
    assert [reason for _, reason in result.skipped] == [RETIRED, RETIRED]
