"""The audit's choice of segment: what the writers created, and nothing that only looks like it."""

from __future__ import annotations

from ld_audiences.writers import MANAGED_TAG, RestWriter, Target
from ld_audiences_cli.segment_lookup import rest_ownership_problem, synced_lookup, synced_matches
from tests.launchdarkly_answers import user_segment

TARGET = Target("aud_1", "beta_testers", "user")  # cohort name "Beta testers"


def ours(**overrides: object) -> dict[str, object]:
    segment = user_segment(
        RestWriter.segment_key(TARGET),
        TARGET.cohort_name,
        tags=[MANAGED_TAG],
        description=f"Synced from … by ld-audiences. {RestWriter.ownership_marker(TARGET)}",
    )
    segment.update(overrides)
    return segment


def test_the_rest_writers_segment_is_its_key_with_the_tag_and_the_marker() -> None:
    assert rest_ownership_problem(ours(), TARGET) == ""
    assert "lacks the tag" in rest_ownership_problem(ours(tags=["other"]), TARGET)
    assert "description" in rest_ownership_problem(ours(description="made by hand"), TARGET)
    other_audience = Target("aud_2", "beta_testers", "user")  # same name, another audience's marker
    assert "description" in rest_ownership_problem(ours(), other_audience)
    assert "not a big segment" in rest_ownership_problem(ours(unbounded=False), TARGET)
    assert "'device'" in rest_ownership_problem(ours(unboundedContextKind="device"), TARGET)


def test_a_synced_segment_matches_by_name_source_and_kind() -> None:
    synced = user_segment("segment-audiences-aud_1", "Beta testers", external="segment-audiences")
    assert synced_matches([synced], TARGET) == [synced]
    lookalikes = [
        user_segment("rest-made", "Beta testers", tags=[MANAGED_TAG]),  # the rest writer's: not synced
        user_segment("amp", "Beta testers", external="amplitude"),  # synced from another tool
        user_segment("dev", "Beta testers", external="segment-audiences", context_kind="device"),
        user_segment("gone", "Beta testers", external="segment-audiences", deleted=True),
        user_segment("std", "Beta testers", unbounded=False),
        user_segment("other", "Beta testers 2", external="segment-audiences"),
    ]
    assert synced_matches(lookalikes, TARGET) == []


def test_a_synced_segment_without_a_context_kind_still_matches() -> None:
    synced = user_segment("s", "Beta testers", external="Segment", context_kind=None)
    assert synced_matches([synced], TARGET) == [synced]


def test_one_match_is_found_several_or_none_are_said_so() -> None:
    one = user_segment("s1", "Beta testers", external="segment-audiences")
    two = user_segment("s2", "Beta testers", external="segment-audiences")
    unrelated = user_segment("s3", "Gamers", external="segment-audiences")

    found = synced_lookup([one, unrelated], TARGET, "p/e")
    assert found.key == "s1" and "2 listed" in found.searched and "'Beta testers'" in found.searched

    ambiguous = synced_lookup([two, one], TARGET, "p/e")
    assert ambiguous.key is None and ambiguous.candidates == ["s1", "s2"]
    assert "2 segments match: s1, s2" in ambiguous.problem and "--segment-key" in ambiguous.remedy

    none = synced_lookup([unrelated], TARGET, "p/e")
    assert none.key is None and not none.candidates
    assert "s3 ('Gamers')" in none.problem  # what is there, to pick from
    assert "resync" in none.remedy and "--segment-key" in none.remedy
