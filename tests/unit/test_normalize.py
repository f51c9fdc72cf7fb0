"""Every normalization rule of docs/DESIGN.md: which events sync, membership values, context-key policies,
timestamps, and the reasons given for rejections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ld_audiences.change import MembershipChange
from ld_audiences.config import ContextKeyPolicy, NormalizeSettings
from ld_audiences.normalize import Rejected, Skipped, normalize, parse_timestamp
from tests.segment_events import engage_event

DEFAULT = NormalizeSettings()


def change(event: object, settings: NormalizeSettings = DEFAULT) -> MembershipChange:
    outcome = normalize(event, settings)
    assert isinstance(outcome, MembershipChange), outcome
    return outcome


def rejected(event: object, settings: NormalizeSettings = DEFAULT) -> Rejected:
    outcome = normalize(event, settings)
    assert isinstance(outcome, Rejected), outcome
    return outcome


def test_track_audience_entered_becomes_an_add() -> None:
    event = engage_event(
        type_="track",
        user_id="user1234",
        audience_key="ld_segment_test",
        audience_id="ld_segment_audience_id",
        message_id="personas_abc",
    )
    assert change(event) == MembershipChange(
        audience_id="ld_segment_audience_id",
        audience_key="ld_segment_test",
        context_kind="user",
        context_key="user1234",
        included=True,
        event_time="2026-11-20T10:00:00.000000000Z",
        message_id="personas_abc",
    )


def test_identify_reads_membership_from_traits() -> None:
    assert change(engage_event(type_="identify", value=False)).included is False
    assert change(engage_event(type_="identify", value=True)).included is True


def test_track_reads_membership_from_properties_not_traits() -> None:
    event = engage_event(type_="track", value=False)
    event["traits"] = {"beta_testers": True}
    assert change(event).included is False


@pytest.mark.parametrize("value, expected", [("true", True), ("FALSE", False), ("True", True), ("false", False)])
def test_journeys_string_booleans_are_accepted(value: str, expected: bool) -> None:
    assert change(engage_event(computation_class="journey_step", value=value)).included is expected


def test_journey_step_without_a_flag_means_entered() -> None:
    assert change(engage_event(computation_class="journey_step", value=...)).included is True


def test_audience_without_a_flag_is_rejected() -> None:
    reason = rejected(engage_event(value=...))
    assert (reason.reason, reason.field) == ("missing_membership", "properties.beta_testers")


@pytest.mark.parametrize("value", ["yes", 1, 0, None, [], {"a": 1}, "1", 1.0])
def test_non_boolean_membership_is_rejected(value: object) -> None:
    event = engage_event(type_="identify", value=value)
    reason = rejected(event)
    assert reason.reason in ("membership_not_boolean", "missing_membership")
    assert reason.field == "traits.beta_testers"


@pytest.mark.parametrize("computation_class", ["trait", "computed_trait", "", "AUDIENCE"])
def test_other_computation_classes_are_skipped(computation_class: str) -> None:
    assert normalize(engage_event(computation_class=computation_class), DEFAULT) == Skipped(
        "computation_class_not_synced"
    )


def test_events_without_personas_are_skipped() -> None:
    event = engage_event()
    del event["context"]["personas"]
    assert normalize(event, DEFAULT) == Skipped("not_audience_event")
    assert normalize({"type": "page", "userId": "u"}, DEFAULT) == Skipped("not_audience_event")


@pytest.mark.parametrize(
    "field, reason", [("computation_key", "missing_audience_key"), ("computation_id", "missing_audience_id")]
)
def test_missing_audience_identity_is_rejected(field: str, reason: str) -> None:
    event = engage_event()
    del event["context"]["personas"][field]
    outcome = rejected(event)
    assert (outcome.reason, outcome.field) == (reason, f"context.personas.{field}")


POLICY_CASES = [
    # policy, userId, email, anonymousId, expected key (None = rejected)
    (ContextKeyPolicy.USER_ID_ONLY, "u1", "a@b.co", "anon", "u1"),
    (ContextKeyPolicy.USER_ID_ONLY, None, "a@b.co", "anon", None),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL, "u1", "a@b.co", "anon", "u1"),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL, None, "a@b.co", "anon", "a@b.co"),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL, None, None, "anon", None),
    (ContextKeyPolicy.USER_ID_THEN_ANONYMOUS_ID, None, "a@b.co", "anon", "anon"),
    (ContextKeyPolicy.USER_ID_THEN_ANONYMOUS_ID, "u1", None, "anon", "u1"),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID, None, "a@b.co", "anon", "a@b.co"),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID, None, None, "anon", "anon"),
    (ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID, "", "", "", None),
    (ContextKeyPolicy.EMAIL_ONLY, "u1", "a@b.co", "anon", "a@b.co"),
    (ContextKeyPolicy.EMAIL_ONLY, "u1", None, "anon", None),
]


@pytest.mark.parametrize("type_", ["identify", "track"])
@pytest.mark.parametrize("policy, user_id, email, anonymous_id, expected", POLICY_CASES)
def test_context_key_policies(
    type_: str,
    policy: ContextKeyPolicy,
    user_id: str | None,
    email: str | None,
    anonymous_id: str | None,
    expected: str | None,
) -> None:
    settings = NormalizeSettings(policy=policy)
    event = engage_event(type_=type_, user_id=user_id, email=email, anonymous_id=anonymous_id)
    if expected is None:
        assert rejected(event, settings).reason == "missing_context_key"
    else:
        assert change(event, settings).context_key == expected


def test_email_falls_back_from_traits_to_context_traits() -> None:
    settings = NormalizeSettings(policy=ContextKeyPolicy.EMAIL_ONLY)
    event = engage_event(type_="identify", user_id=None)
    event["context"]["traits"] = {"email": "ctx@example.com"}
    assert change(event, settings).context_key == "ctx@example.com"
    event["traits"]["email"] = "traits@example.com"
    assert change(event, settings).context_key == "traits@example.com"


def test_context_kind_comes_from_settings() -> None:
    assert change(engage_event(), NormalizeSettings(context_kind="member")).context_kind == "member"


def test_numeric_user_ids_become_string_keys() -> None:
    event = engage_event()
    event["userId"] = 12345
    assert change(event).context_key == "12345"


@pytest.mark.parametrize("number", [1, 1.0, 1e0, "1"])
def test_a_number_is_its_decimal_digits_as_in_segments_destination(number: Any) -> None:
    # JavaScript (Segment's destination) reads 1, 1.0 and 1e0 as one number and turns it into "1".
    event = engage_event()
    event["userId"] = number
    assert change(event).context_key == "1"


@pytest.mark.parametrize(
    "number, key",
    [(2**53 - 1, "9007199254740991"), (-(2**53 - 1), "-9007199254740991"), (-0.0, "0"), (1e15, "1" + "0" * 15)],
)
def test_whole_numbers_javascript_holds_exactly_are_accepted(number: float, key: str) -> None:
    event = engage_event()
    event["userId"] = number
    assert change(event).context_key == key


@pytest.mark.parametrize("number", [1.5, 2**53, -(2**53), 1e16, 12345678901234567890, float("inf"), float("nan")])
def test_fractional_or_unsafe_numbers_are_refused_not_guessed(number: float) -> None:
    event = engage_event()
    event["userId"] = number
    outcome = rejected(event)
    assert (outcome.reason, outcome.field) == ("invalid_field", "userId")
    assert "as strings" in outcome.message or "number" in outcome.message


def test_the_number_rule_holds_for_audience_ids_and_message_ids_too() -> None:
    event = engage_event(audience_key="42")
    event["context"]["personas"]["computation_id"] = 7.0
    event["messageId"] = 9
    result = change(event)
    assert (result.audience_id, result.message_id) == ("7", "9")
    event["context"]["personas"]["computation_id"] = 7.5
    assert rejected(event).field == "context.personas.computation_id"


def test_booleans_are_not_ids() -> None:
    event = engage_event()
    event["userId"] = True
    assert rejected(event).field == "userId"


# Control (Cc), format (Cf: bidi, zero-width, BOM, soft hyphen, tags), line/paragraph separators and
# spaces other than U+0020.
REFUSED_CHARACTERS = [
    "\x00",
    "\r",
    "\n",
    "\t",
    "\x1b",
    "\x7f",
    "\x85",
    "\u00ad",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\U000e0041",
    "\u2028",
    "\u2029",
    "\u00a0",
    "\u3000",
]
KEY_FIELDS = [
    # where the value goes, the policy that reads it, the field a rejection names
    ("userId", ContextKeyPolicy.USER_ID_ONLY, "userId"),
    ("anonymousId", ContextKeyPolicy.USER_ID_THEN_ANONYMOUS_ID, "anonymousId"),
    ("traits.email", ContextKeyPolicy.EMAIL_ONLY, "traits.email"),
    ("context.traits.email", ContextKeyPolicy.EMAIL_ONLY, "context.traits.email"),
    ("computation_key", ContextKeyPolicy.USER_ID_ONLY, "context.personas.computation_key"),
    ("computation_id", ContextKeyPolicy.USER_ID_ONLY, "context.personas.computation_id"),
    ("messageId", ContextKeyPolicy.USER_ID_ONLY, "messageId"),
]


def event_with(where: str, value: str) -> dict[str, Any]:
    if where == "computation_key":
        return engage_event(audience_key=value)
    if where == "computation_id":
        return engage_event(audience_id=value)
    if where == "messageId":
        return engage_event(message_id=value)
    if where == "traits.email":
        return engage_event(type_="identify", user_id=None, email=value)
    if where == "context.traits.email":
        return engage_event(type_="track", user_id=None, email=value)
    if where == "anonymousId":
        return engage_event(user_id=None, anonymous_id=value)
    return engage_event(user_id=value)


@pytest.mark.parametrize("where, policy, field", KEY_FIELDS)
@pytest.mark.parametrize("char", REFUSED_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_invisible_and_control_characters_in_keys_are_refused(
    where: str, policy: ContextKeyPolicy, field: str, char: str
) -> None:
    outcome = rejected(event_with(where, f"ab{char}c@example.com"), NormalizeSettings(policy=policy))
    assert (outcome.reason, outcome.field) == ("invalid_characters", field)
    assert f"U+{ord(char):04X}" in outcome.message
    assert "ab" not in outcome.message  # the value itself is not repeated


@pytest.mark.parametrize("where, policy, field", [f for f in KEY_FIELDS if "email" not in f[0]])
@pytest.mark.parametrize("value", [" user-1", "user-1 "])
def test_keys_with_a_leading_or_trailing_space_are_refused(
    where: str, policy: ContextKeyPolicy, field: str, value: str
) -> None:
    outcome = rejected(event_with(where, value), NormalizeSettings(policy=policy))
    assert (outcome.reason, outcome.field) == ("invalid_characters", field)


@pytest.mark.parametrize("where, policy, field", KEY_FIELDS)
@pytest.mark.parametrize("value", ["jane doe", "zoë", "用户", "\U0001f680", "a\u0301", "x\uffff", "\ue000"])
def test_visible_characters_are_kept_verbatim(where: str, policy: ContextKeyPolicy, field: str, value: str) -> None:
    result = change(event_with(where, value), NormalizeSettings(policy=policy))
    assert value in (result.context_key, result.audience_key, result.audience_id, result.message_id)


def test_emails_are_trimmed_before_they_are_checked() -> None:
    settings = NormalizeSettings(policy=ContextKeyPolicy.EMAIL_ONLY)
    assert change(event_with("traits.email", " bob@example.com\n"), settings).context_key == "bob@example.com"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00.000000000Z"),
        ("2026-11-20T10:00:00.123456789Z", "2026-11-20T10:00:00.123456789Z"),
        ("2026-11-20T10:00:00.1Z", "2026-11-20T10:00:00.100000000Z"),
        ("2026-11-20T11:30:00.5+01:30", "2026-11-20T10:00:00.500000000Z"),
        ("2026-11-20T00:30:00-02:00", "2026-11-20T02:30:00.000000000Z"),
        ("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00.000000000Z"),
        ("2026-11-20 10:00:00+0000", "2026-11-20T10:00:00.000000000Z"),
        # No zone: read as UTC, as Segment's destination does.
        ("2026-11-20T10:00:00", "2026-11-20T10:00:00.000000000Z"),
        ("2026-11-20T10:00:00.000", "2026-11-20T10:00:00.000000000Z"),
        ("2026-11-20 10:00:00.123456789", "2026-11-20T10:00:00.123456789Z"),
    ],
)
def test_timestamps_normalize_to_utc_with_nine_digits(raw: str, expected: str) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw", ["yesterday", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-20T10:00", "2026-11-20T10:00:00+0"]
)
def test_bad_timestamps_are_not_parsed(raw: str) -> None:
    assert parse_timestamp(raw) is None


def test_a_naive_timestamp_is_an_accepted_event_time() -> None:
    assert change(engage_event(timestamp="2026-11-20T10:00:00.000")).event_time == "2026-11-20T10:00:00.000000000Z"


RECEIVED = datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-20T12:05:00.250000000Z",  # exactly the allowed skew ahead
        "2026-11-20T13:05:00.25+01:00",  # the same instant in another zone
        "2026-11-20T12:05:00.25",  # the same instant, no zone
        "2026-11-20T11:59:59Z",
        "1999-01-01T00:00:00Z",  # far in the past is merely stale
    ],
)
def test_event_times_up_to_the_skew_ahead_of_receipt_are_accepted(timestamp: str) -> None:
    event = engage_event(timestamp=timestamp)
    assert normalize(event, DEFAULT, RECEIVED) == change(event).model_copy(update={"received_at": RECEIVED.timestamp()})


@pytest.mark.parametrize(
    "timestamp",
    ["2026-11-20T12:05:00.250000001Z", "2026-11-20T12:05:00.251+00:00", "2026-11-20T12:05:01", "9999-12-31T23:59:59Z"],
)
def test_event_times_further_ahead_of_receipt_are_refused(timestamp: str) -> None:
    outcome = normalize(engage_event(timestamp=timestamp), DEFAULT, RECEIVED)
    assert isinstance(outcome, Rejected)
    assert (outcome.reason, outcome.field) == ("timestamp_in_future", "timestamp")
    assert "300 seconds" in outcome.message


def test_the_skew_bound_applies_to_whichever_field_gives_the_event_time() -> None:
    event = engage_event()
    del event["timestamp"]
    event["originalTimestamp"] = "2030-01-01T00:00:00Z"
    outcome = normalize(event, DEFAULT, RECEIVED)
    assert isinstance(outcome, Rejected) and outcome.field == "originalTimestamp"
    assert isinstance(normalize(event, DEFAULT, RECEIVED + timedelta(days=3000)), MembershipChange)


def test_nine_digit_timestamps_keep_their_order() -> None:
    earlier = change(engage_event(timestamp="2026-11-20T10:00:00.000000001Z"))
    later = change(engage_event(timestamp="2026-11-20T10:00:00.000000002Z"))
    assert earlier.order < later.order


def test_event_time_falls_back_to_original_timestamp_then_received_at() -> None:
    event = engage_event()
    del event["timestamp"]
    event["receivedAt"] = "2026-11-20T12:00:00Z"
    assert change(event).event_time == "2026-11-20T12:00:00.000000000Z"
    event["originalTimestamp"] = "2026-11-20T11:00:00Z"
    assert change(event).event_time == "2026-11-20T11:00:00.000000000Z"


def test_missing_or_bad_timestamps_are_rejected_with_the_field() -> None:
    event = engage_event()
    del event["timestamp"]
    assert rejected(event).reason == "missing_timestamp"
    event["timestamp"] = "soon"
    assert (rejected(event).reason, rejected(event).field) == ("invalid_timestamp", "timestamp")


def test_missing_message_id_gets_a_stable_content_id() -> None:
    event = engage_event()
    del event["messageId"]
    first, second = change(event), change(dict(event))
    assert first.message_id == second.message_id
    assert first.message_id.startswith("sha256_")
    event["timestamp"] = "2026-11-21T00:00:00Z"
    assert change(event).message_id != first.message_id


@pytest.mark.parametrize("raw", [[], "event", 42, None])
def test_non_object_events_are_rejected(raw: object) -> None:
    assert rejected(raw).reason == "invalid_event"


def test_wrong_types_are_rejected_with_the_field_path() -> None:
    event = engage_event()
    event["context"]["personas"] = "audience"
    outcome = rejected(event)
    assert (outcome.reason, outcome.field) == ("invalid_field", "context.personas")
    event = engage_event()
    event["properties"] = ["beta_testers"]
    assert rejected(event).field == "properties"


@pytest.mark.parametrize(
    "path, length",
    [
        (("userId",), 1025),
        (("context", "personas", "computation_key"), 256),
        (("context", "personas", "computation_id"), 129),
        (("messageId",), 256),
    ],
)
def test_oversize_identifiers_are_rejected_naming_the_field(path: tuple[str, ...], length: int) -> None:
    event = engage_event()
    target = event
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "x" * length
    outcome = rejected(event)
    assert outcome.reason == "value_too_long"
    assert outcome.field == ".".join(path)


def test_an_audience_id_may_be_as_long_as_launchdarkly_recommends_a_cohort_id() -> None:
    assert change(engage_event(audience_id="i" * 128)).audience_id == "i" * 128
    outcome = rejected(engage_event(audience_id="i" * 129))
    assert (outcome.reason, outcome.field) == ("value_too_long", "context.personas.computation_id")
    assert "128 characters" in outcome.message
