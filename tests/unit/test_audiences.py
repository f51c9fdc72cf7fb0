"""Reading the state table per audience (`ld_audiences.audiences`) on the in-process DynamoDB
(bench/sim_aws.py, checked against moto by test_sim_aws.py): exact counts, listings that page through every
context once, audience summaries, the pending index and retirement, uniform samples, and the read units they
cost."""

from __future__ import annotations

import random

import pytest

from ld_audiences import state_table as t
from ld_audiences.audiences import AudienceReader, _proportional
from ld_audiences.state_table import SHARDS
from tests.audience_state import change, write_audience, write_state
from tests.unit.doubles import InProcessTable, in_process_table

MEMBERS = [f"member-{i}" for i in range(120)]
LEFT = [f"left-{i}" for i in range(45)]


@pytest.fixture
def aws() -> InProcessTable:
    """The state table in process; `tests.audience_state` writes it as it writes moto's."""
    return in_process_table()


@pytest.fixture
def reader(aws: InProcessTable) -> AudienceReader:
    write_audience(aws, "aud_a", MEMBERS, LEFT)
    write_audience(aws, "aud_a", ["acct-1", "acct-2"], kind="account")
    write_audience(aws, "aud_b", ["member-1", "x"], ["y"])
    return AudienceReader(aws.dynamodb, aws.table)


def test_counts_are_exact_per_audience_and_context_kind(aws: InProcessTable, reader: AudienceReader) -> None:
    counts = reader.counts("aud_a", "user")
    assert (counts.members, counts.contexts) == (120, 165)
    assert len(counts.shard_contexts) == SHARDS and sum(counts.shard_contexts) == 165
    assert max(counts.shard_contexts) < 165  # spread over the shards
    assert (reader.counts("aud_a", "account").members, reader.counts("aud_b", "user").contexts) == (2, 3)
    assert reader.counts("aud_unknown", "user").contexts == 0
    # A member who leaves later stops counting; the newest change decides.
    write_state(aws, [change("aud_a", "member-0", False, second=5)])
    assert reader.counts("aud_a", "user").members == 119


def test_listing_pages_through_every_context_once_and_resumes_from_a_cursor(reader: AudienceReader) -> None:
    pages = list(reader.pages("aud_a", "user", limit=7))
    keys = [c.context_key for page in pages for c in page.contexts]
    assert sorted(keys) == sorted(MEMBERS + LEFT)
    assert pages[-1].cursor is None and all(page.cursor for page in pages[:-1])
    members = [c.context_key for c in reader.contexts("aud_a", "user", members_only=True)]
    assert sorted(members) == sorted(MEMBERS)
    # A cursor from the middle resumes exactly after what was read.
    middle = len(pages) // 2
    first = [c.context_key for page in pages[:middle] for c in page.contexts]
    resumed = reader.pages("aud_a", "user", cursor=pages[middle - 1].cursor, limit=11)
    rest = [c.context_key for page in resumed for c in page.contexts]
    assert rest and sorted(first + rest) == sorted(MEMBERS + LEFT)
    with pytest.raises(ValueError, match="not a cursor"):
        next(reader.pages("aud_a", "user", cursor="99:abc"))


def test_contexts_carry_their_desired_state_and_whether_it_is_written(
    aws: InProcessTable, reader: AudienceReader
) -> None:
    write_state(aws, [change("aud_b", "x", False, second=9)], applied=False)  # claimed, not yet written
    states = {c.context_key: c for c in reader.contexts("aud_b", "user")}
    assert {k: (c.included, c.applied) for k, c in states.items()} == {
        "member-1": (True, True),
        "x": (False, False),
        "y": (False, True),
    }
    assert states["x"].event_time == "2026-11-20T10:00:09.000000000Z"
    assert states["x"].message_id == "personas_aud_b_user_x_9"
    reassert = states["x"].reassert("aud_b", "aud_b_key", "user")
    assert (reassert.reassert, reassert.included, reassert.order) == (
        True,
        False,
        "2026-11-20T10:00:09.000000000Z|personas_aud_b_user_x_9",
    )


def test_audiences_lists_each_summary(reader: AudienceReader) -> None:
    audiences = reader.audiences()
    assert [(a.audience_id, a.context_kind, a.audience_key) for a in audiences] == [
        ("aud_a", "account", "aud_a_key"),
        ("aud_a", "user", "aud_a_key"),
        ("aud_b", "user", "aud_b_key"),
    ]
    user = audiences[1]
    assert user.changes_written == 165 and user.last_write_at is not None
    assert user.last_event_time == "2026-11-20T10:00:00.000000000Z" and user.last_message_id


def test_every_read_reports_its_read_units(reader: AudienceReader) -> None:
    before = reader.usage
    reader.counts("aud_a", "user")
    after = reader.usage
    assert after.calls >= before.calls + SHARDS  # one Query per shard at least
    assert after.read_units > before.read_units


def test_a_sample_is_distinct_contexts_of_the_audience_of_the_size_asked(reader: AudienceReader) -> None:
    counts = reader.counts("aud_a", "user")
    for seed in range(8):
        sample = reader.sample("aud_a", "user", 30, counts, random.Random(seed))
        keys = [c.context_key for c in sample]
        assert len(keys) == 30 and len(set(keys)) == 30 and set(keys) <= set(MEMBERS + LEFT)
    # The same seed draws the same sample; a sample as large as the audience is all of it.
    again = [reader.sample("aud_a", "user", 30, counts, random.Random(3)) for _ in range(2)]
    assert again[0] == again[1]
    everything = reader.sample("aud_a", "user", 500, counts, random.Random(1))
    assert sorted(c.context_key for c in everything) == sorted(MEMBERS + LEFT)


def test_samples_estimate_a_share_without_bias_and_reach_every_context(reader: AudienceReader) -> None:
    """45 of 165 contexts left the audience (27 %): the samples' shares average to it, and repeated samples
    reach (nearly) every context, not the same few (a run always starting at a shard's first key would)."""
    counts = reader.counts("aud_a", "user")
    rng = random.Random(7)
    shares, seen = [], set()
    for _ in range(40):
        sample = reader.sample("aud_a", "user", 25, counts, rng)
        shares.append(sum(not c.included for c in sample) / len(sample))
        seen |= {c.context_key for c in sample}
    # One sample's share varies by about 0.08 (25 of 165), the mean of 40 by about 0.013: four of those.
    assert abs(sum(shares) / len(shares) - 45 / 165) < 0.05
    # Runs start after a random point, so a context after a wide gap in the hash order is drawn more often:
    # 40 samples of 25 still reach most of the 165.
    assert len(seen) >= 0.8 * 165


def test_proportional_allocation_sums_to_the_size_and_never_exceeds_a_shard() -> None:
    weights = [10, 0, 3, 7, 1]
    for size in range(22):
        quotas = _proportional(size, weights)
        assert sum(quotas) == min(size, 21)
        assert all(q <= w for q, w in zip(quotas, weights, strict=True))
    assert _proportional(5, weights) == [2, 0, 1, 2, 0]  # the largest remainders get the rounding


@pytest.mark.parametrize("cursor", ["32:", "x:abc", "nonsense", "-1:"])
def test_a_cursor_not_of_this_listing_is_refused(reader: AudienceReader, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        next(reader.pages("aud_a", "user", cursor=cursor))


def test_the_pending_index_and_retirement_are_read(aws: InProcessTable, reader: AudienceReader) -> None:
    assert reader.pending() == {} and reader.retired_at("aud_a", "user") is None
    work = {
        **t.work_item_key("aud_a", "user"),
        t.PENDING_QUEUE: {"S": t.PENDING_QUEUE_VALUE},
        t.PENDING_SINCE: {"N": "1234.5"},
        t.RETIRED_AT: {"N": "99"},
    }
    aws.dynamodb.put_item(TableName=aws.table, Item=work)
    assert reader.pending() == {("aud_a", "user"): 1234.5}
    assert reader.retired_at("aud_a", "user") == 99.0
