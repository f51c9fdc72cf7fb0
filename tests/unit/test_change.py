"""`MembershipChange`: the order between changes to one context, the precedence of a recheck, and the queued
message (what v1 readers on either side of an upgrade understand)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from ld_audiences.change import MembershipChange, format_time
from tests.unit.doubles import change


def test_a_later_event_time_orders_after_and_equal_times_go_to_the_larger_message_id() -> None:
    assert change("u1", second=2).order > change("u1", second=1).order
    assert change("u1", second=1, message="b").order > change("u1", second=1, message="a").order
    # Event times are fixed width: the string order is the time order even across digit counts.
    assert change("u1", second=10).order > change("u1", second=9).order


def test_of_two_equal_changes_a_recheck_takes_precedence_and_a_newer_change_beats_a_recheck() -> None:
    plain = change("u1", second=5, message="m")
    recheck = plain.model_copy(update={"reassert": True})
    assert recheck.precedence > plain.precedence
    assert change("u1", second=6).precedence > recheck.precedence


def test_the_message_leaves_out_what_is_unset_so_older_readers_take_it() -> None:
    plain = change("u1").model_copy(update={"received_at": None})
    assert set(json.loads(plain.to_message())) == {
        "v", "audience_id", "audience_key", "context_kind", "context_key", "included", "event_time", "message_id"
    }  # fmt: skip
    recheck = change("u1", reassert=True)
    assert json.loads(recheck.to_message())["reassert"] is True
    assert MembershipChange.from_message(recheck.to_message()) == recheck
    timed = change("u1")
    assert MembershipChange.from_message(timed.to_message()).received_at == timed.received_at


def test_the_message_is_ascii_and_keeps_any_key_exactly() -> None:
    odd = change("\ufffe\u00e9\U0001f600")
    body = odd.to_message()
    assert body.isascii() and MembershipChange.from_message(body).context_key == odd.context_key


def test_event_times_are_utc_with_nine_digits_whatever_the_zone() -> None:
    moment = datetime(999, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "0999-01-02T01:04:05.678901000Z"
    assert format_time(datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)) == "2026-11-20T10:00:00.000000000Z"
