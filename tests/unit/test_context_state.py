"""`ContextStates`: what LaunchDarkly has of each context, read and recorded in the state table (in-process
DynamoDB). A context item is written only after LaunchDarkly acknowledged its change; a member never expires."""

from __future__ import annotations

import pytest

from ld_audiences import state_table as t
from ld_audiences.context_state import RETENTION_SECONDS, Applied, ContextStates
from tests.unit.doubles import AUDIENCE, NOW, InProcessTable, change, in_process_table


@pytest.fixture
def table() -> InProcessTable:
    return in_process_table(lambda: NOW)


@pytest.fixture
def states(table: InProcessTable) -> ContextStates:
    return ContextStates(table.client, table.table, clock=lambda: NOW)


def read(states: ContextStates, *keys: str) -> dict[str, Applied]:
    return states.read(AUDIENCE.audience_id, AUDIENCE.context_kind, list(keys))


def test_what_is_recorded_is_read_back_by_context_key_and_unknown_keys_are_absent(states: ContextStates) -> None:
    member, gone = change("u1", True, 3), change("u2", False, 4)
    assert states.write([member, gone]) == []
    assert read(states, "u1", "u2", "never") == {
        "u1": Applied(member.order, True),
        "u2": Applied(gone.order, False),
    }


def test_a_newer_record_replaces_the_older(states: ContextStates) -> None:
    states.write([change("u1", True, 3)])
    newer = change("u1", False, 7)
    states.write([newer])
    assert read(states, "u1") == {"u1": Applied(newer.order, False)}


def test_only_contexts_that_left_expire(table: InProcessTable, states: ContextStates) -> None:
    states.write([change("u1", True), change("u2", False)])
    member = table.item(t.context_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind, "u1"))
    gone = table.item(t.context_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind, "u2"))
    assert member is not None and gone is not None
    assert t.EXPIRES_AT not in member
    assert gone[t.EXPIRES_AT] == {"N": str(int(NOW) + RETENTION_SECONDS)}
    assert member[t.DESIRED_ORDER] == member[t.APPLIED_ORDER] and member[t.CONTEXT_KEY] == {"S": "u1"}


def test_an_item_claimed_but_never_written_holds_nothing_of_launchdarkly(
    table: InProcessTable, states: ContextStates
) -> None:
    """Left by the sync before the pending log: a desired change, none applied."""
    key = t.context_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind, "u1")
    item = {**key, t.CONTEXT_KEY: {"S": "u1"}, t.DESIRED_ORDER: {"S": "x"}, t.DESIRED_INCLUDED: {"BOOL": True}}
    table.client.put_item(TableName=table.table, Item=item)
    assert read(states, "u1") == {}


def test_keys_of_other_audiences_and_kinds_are_apart(states: ContextStates) -> None:
    states.write([change("u1", True)])
    assert states.read("aud_other", AUDIENCE.context_kind, ["u1"]) == {}
    assert states.read(AUDIENCE.audience_id, "device", ["u1"]) == {}


def test_many_contexts_are_read_and_written_past_the_batch_limits(states: ContextStates) -> None:
    written = [change(f"u{i:03d}", i % 2 == 0) for i in range(230)]
    assert states.write(written) == []
    found = read(states, *(c.context_key for c in written))
    assert found == {c.context_key: Applied(c.order, c.included) for c in written}


def test_the_summary_notes_the_newest_change_written_and_counts_them(
    table: InProcessTable, states: ContextStates
) -> None:
    first = [change("u1", True, 3), change("u2", True, 9, message="personas_newest"), change("u3", True, 5)]
    states.record_write(AUDIENCE.audience_id, AUDIENCE.audience_key, AUDIENCE.context_kind, first)
    states.record_write(AUDIENCE.audience_id, AUDIENCE.audience_key, AUDIENCE.context_kind, [change("u4", True, 1)])
    summary = table.item(t.audience_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind))
    assert summary is not None
    assert summary["changes_written"] == {"N": "4"}
    assert summary["last_message_id"] == {"S": change("u4", True, 1).message_id}
    assert summary["audience_key"] == {"S": AUDIENCE.audience_key}
    assert float(summary["last_write_at"]["N"]) == NOW


def test_the_summary_takes_the_newest_of_a_write_not_the_last(table: InProcessTable, states: ContextStates) -> None:
    written = [change("u2", True, 9, message="personas_newest"), change("u1", True, 3)]
    states.record_write(AUDIENCE.audience_id, AUDIENCE.audience_key, AUDIENCE.context_kind, written)
    summary = table.item(t.audience_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind))
    assert summary is not None and summary["last_message_id"] == {"S": "personas_newest"}
    assert summary["last_event_time"] == {"S": written[0].event_time}
