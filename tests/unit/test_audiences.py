"""`AudienceReader`: what `status`, `resync` and `audit` read of an audience from the state table (in-process
DynamoDB): summaries, exact counts, every context once through pages and cursors, uniform samples."""

from __future__ import annotations

import random

import pytest

from ld_audiences import state_table as t
from ld_audiences.audiences import Audience, AudienceReader, _proportional
from ld_audiences.context_state import ContextStates
from tests.unit.doubles import AUDIENCE, NOW, InProcessTable, change, in_process_table

MEMBERS, LEFT = 70, 30


@pytest.fixture(scope="module")
def table() -> InProcessTable:
    """One audience of MEMBERS members and LEFT contexts that left it, all in LaunchDarkly, and one context
    whose newest change is not applied yet."""
    table = in_process_table(lambda: NOW)
    states = ContextStates(table.client, table.table, clock=lambda: NOW)
    written = [change(f"m{i:03d}", True, 1) for i in range(MEMBERS)] + [
        change(f"l{i:03d}", False, 2) for i in range(LEFT)
    ]
    assert states.write(written) == []
    states.record_write(AUDIENCE.audience_id, AUDIENCE.audience_key, AUDIENCE.context_kind, written)
    pending = change("m000", False, 9)
    table.client.update_item(
        TableName=table.table,
        Key=t.context_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind, "m000"),
        UpdateExpression="SET desired_order = :o, desired_included = :i",
        ExpressionAttributeValues={":o": {"S": pending.order}, ":i": {"BOOL": False}},
    )
    return table


@pytest.fixture
def reader(table: InProcessTable) -> AudienceReader:
    return AudienceReader(table.client, table.table)


def ids(contexts: list) -> list[str]:  # type: ignore[type-arg]
    return [c.context_key for c in contexts]


def test_counts_are_exact_per_shard_and_in_total(reader: AudienceReader) -> None:
    counts = reader.counts(AUDIENCE.audience_id, AUDIENCE.context_kind)
    assert (counts.members, counts.contexts) == (MEMBERS - 1, MEMBERS + LEFT)
    assert len(counts.shard_contexts) == t.SHARDS and sum(counts.shard_contexts) == MEMBERS + LEFT


def test_pages_list_every_context_once_and_a_cursor_resumes_where_it_stopped(reader: AudienceReader) -> None:
    pages = list(reader.pages(AUDIENCE.audience_id, AUDIENCE.context_kind, limit=7))
    listed = [key for page in pages for key in ids(page.contexts)]
    assert sorted(listed) == sorted([f"m{i:03d}" for i in range(MEMBERS)] + [f"l{i:03d}" for i in range(LEFT)])
    assert all(len(page.contexts) <= 7 for page in pages) and pages[-1].cursor is None
    middle = pages[len(pages) // 2]
    assert middle.cursor is not None
    rest = reader.pages(AUDIENCE.audience_id, AUDIENCE.context_kind, cursor=middle.cursor, limit=7)
    resumed = [key for page in rest for key in ids(page.contexts)]
    done = [key for page in pages[: len(pages) // 2 + 1] for key in ids(page.contexts)]
    assert done + resumed == listed


def test_members_only_lists_the_contexts_whose_newest_state_is_included(reader: AudienceReader) -> None:
    members = list(reader.contexts(AUDIENCE.audience_id, AUDIENCE.context_kind, members_only=True))
    assert sorted(ids(members)) == [f"m{i:03d}" for i in range(1, MEMBERS)]


def test_a_context_shows_its_newest_desired_state_and_whether_launchdarkly_has_it(reader: AudienceReader) -> None:
    by_key = {c.context_key: c for c in reader.contexts(AUDIENCE.audience_id, AUDIENCE.context_kind)}
    assert (by_key["m000"].included, by_key["m000"].applied) == (False, False)
    assert (by_key["m001"].included, by_key["m001"].applied) == (True, True)
    recheck = by_key["m001"].reassert(AUDIENCE.audience_id, AUDIENCE.audience_key, AUDIENCE.context_kind)
    assert (recheck.reassert, recheck.included, recheck.order) == (True, True, change("m001", True, 1).order)


@pytest.mark.parametrize("cursor", ["32:", "x:abc", "nonsense", "-1:"])
def test_a_cursor_not_of_this_listing_is_refused(reader: AudienceReader, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        next(reader.pages(AUDIENCE.audience_id, AUDIENCE.context_kind, cursor=cursor))


def test_a_sample_has_the_size_asked_distinct_contexts_and_the_same_seed_gives_the_same(
    reader: AudienceReader,
) -> None:
    counts = reader.counts(AUDIENCE.audience_id, AUDIENCE.context_kind)
    sample = reader.sample(AUDIENCE.audience_id, AUDIENCE.context_kind, 25, counts, random.Random(4))
    assert len(sample) == 25 == len(set(ids(sample)))
    again = reader.sample(AUDIENCE.audience_id, AUDIENCE.context_kind, 25, counts, random.Random(4))
    assert ids(again) == ids(sample)
    everything = reader.sample(AUDIENCE.audience_id, AUDIENCE.context_kind, 1000, counts, random.Random(1))
    assert len(set(ids(everything))) == MEMBERS + LEFT


def test_a_split_is_proportional_and_never_above_a_weight() -> None:
    assert _proportional(10, [5, 5, 0]) == [5, 5, 0]
    assert _proportional(3, [1, 1, 1, 1]).count(1) == 3
    quotas = _proportional(7, [10, 3, 1])
    assert sum(quotas) == 7 and all(q <= w for q, w in zip(quotas, [10, 3, 1], strict=True))
    assert quotas[0] > quotas[1] >= quotas[2]
    assert _proportional(5, [0, 0]) == [0, 0] and _proportional(0, [3]) == [0]


def test_summaries_pending_audiences_and_retirement_are_read(table: InProcessTable, reader: AudienceReader) -> None:
    [summary] = reader.audiences()
    assert summary == Audience(
        AUDIENCE.audience_id,
        AUDIENCE.context_kind,
        AUDIENCE.audience_key,
        NOW,
        change("l000", False, 2).event_time,
        max((change(f"l{i:03d}", False, 2) for i in range(LEFT)), key=lambda c: c.order).message_id,
        MEMBERS + LEFT,
    )
    assert reader.retired_at(AUDIENCE.audience_id, AUDIENCE.context_kind) is None
    work = t.work_item_key(AUDIENCE.audience_id, AUDIENCE.context_kind)
    table.client.put_item(
        TableName=table.table,
        Item={
            **work,
            t.PENDING_QUEUE: {"S": t.PENDING_QUEUE_VALUE},
            t.PENDING_SINCE: {"N": "1234.5"},
            t.RETIRED_AT: {"N": "99"},
        },
    )
    try:
        assert reader.pending() == {(AUDIENCE.audience_id, AUDIENCE.context_kind): 1234.5}
        assert reader.retired_at(AUDIENCE.audience_id, AUDIENCE.context_kind) == 99.0
    finally:
        table.client.delete_item(TableName=table.table, Key=work)
    assert reader.usage.calls > 0 and reader.usage.read_units > 0
