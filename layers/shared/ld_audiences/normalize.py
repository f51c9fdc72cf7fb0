"""Turn one Segment Engage event into a membership change, a skip, or a rejection with a reason.

The rules follow Segment's own LaunchDarkly Audiences destination (docs/DESIGN.md): only audience and
journey-step computations are synced, membership is a boolean in `traits` (identify) or
`properties` (track), and the context key comes from the configured policy.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ld_audiences import limits
from ld_audiences.change import MembershipChange, format_nanoseconds, format_time
from ld_audiences.config import ContextKeyPolicy, NormalizeSettings
from ld_audiences.segment_event import SegmentEvent

SYNCED_CLASSES = frozenset({"audience", "journey_step"})

_KEY_SOURCES: dict[ContextKeyPolicy, tuple[str, ...]] = {
    ContextKeyPolicy.USER_ID_ONLY: ("userId",),
    ContextKeyPolicy.USER_ID_THEN_EMAIL: ("userId", "email"),
    ContextKeyPolicy.USER_ID_THEN_ANONYMOUS_ID: ("userId", "anonymousId"),
    ContextKeyPolicy.USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID: ("userId", "email", "anonymousId"),
    ContextKeyPolicy.EMAIL_ONLY: ("email",),
}

# The zone is optional: Segment's destination reads a timestamp without one as UTC, and so does ingest.
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    message: str
    field: str | None = None


Outcome = MembershipChange | Skipped | Rejected


def normalize(raw: Any, settings: NormalizeSettings, received_at: datetime | None = None) -> Outcome:
    """`received_at` is when ingest received the event: an event time more than `limits.MAX_FUTURE_SKEW`
    after it is refused. Only benchmarks of the rules alone leave it out."""
    if not isinstance(raw, dict):
        return Rejected("invalid_event", "an event must be a JSON object")
    try:
        event = SegmentEvent.model_validate(raw)
    except ValidationError as exc:
        return _rejected_from_validation(exc)

    personas = event.context.personas if event.context else None
    if personas is None:
        return Skipped("not_audience_event")
    if personas.computation_class not in SYNCED_CLASSES:
        return Skipped("computation_class_not_synced")

    audience_key = personas.computation_key
    if not audience_key:
        return Rejected(
            "missing_audience_key",
            "context.personas.computation_key is required",
            "context.personas.computation_key",
        )
    if not personas.computation_id:
        return Rejected(
            "missing_audience_id",
            "context.personas.computation_id is required",
            "context.personas.computation_id",
        )

    # The message id orders changes and is shown by status and redrive: it obeys the keys' rules too.
    for field, value in (
        ("context.personas.computation_key", audience_key),
        ("context.personas.computation_id", personas.computation_id),
        ("messageId", event.messageId),
    ):
        if value and (defect := limits.key_defect(value)):
            return Rejected("invalid_characters", f"{field} {defect}", field)

    included = _membership(event, audience_key, personas.computation_class == "journey_step")
    if isinstance(included, Rejected):
        return included

    found = _context_key(event, settings.policy)
    if found is None:
        sources = " or ".join(_KEY_SOURCES[settings.policy])
        return Rejected(
            "missing_context_key", f"policy {settings.policy.value} needs {sources}", _KEY_SOURCES[settings.policy][0]
        )
    source, context_key = found
    if len(context_key) > limits.MAX_CONTEXT_KEY:
        # userId and anonymousId are bounded by the event model already; an e-mail is free-form.
        return Rejected("value_too_long", f"{source} longer than {limits.MAX_CONTEXT_KEY} characters", source)
    if defect := limits.key_defect(context_key):
        return Rejected("invalid_characters", f"{source} {defect}", source)

    event_time = _event_time(event, received_at)
    if isinstance(event_time, Rejected):
        return event_time

    try:
        return MembershipChange(
            audience_id=personas.computation_id,
            audience_key=audience_key,
            context_kind=settings.context_kind,
            context_key=context_key,
            included=included,
            event_time=event_time,
            message_id=event.messageId or _fallback_message_id(raw),
            received_at=received_at.timestamp() if received_at is not None else None,
        )
    except ValidationError as exc:
        # A value the event model lets through (traits are free-form) that the queued contract refuses,
        # such as an email holding a lone surrogate: a rejection with a reason, not a crash.
        return _rejected_from_validation(exc)
    except RecursionError:
        # JSON nested just below the parser's own limit can still exhaust the stack when hashed.
        return Rejected("too_deeply_nested", "the event is nested too deeply to be processed")


def _membership(event: SegmentEvent, audience_key: str, is_journey_step: bool) -> bool | Rejected:
    source, values = ("traits", event.traits) if event.type == "identify" else ("properties", event.properties)
    field = f"{source}.{audience_key}"
    value = (values or {}).get(audience_key)
    if value is None:
        if is_journey_step:
            # Journeys send a step event with no flag when a profile enters the step.
            return True
        return Rejected("missing_membership", f"{field} is required for an audience event", field)
    if isinstance(value, bool):
        return value
    # Journeys v1 sends the membership flag as a string.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return Rejected("membership_not_boolean", f"{field} must be true or false", field)


def _context_key(event: SegmentEvent, policy: ContextKeyPolicy) -> tuple[str, str] | None:
    """The policy's first identifier the event has, with the field it came from."""
    for source in _KEY_SOURCES[policy]:
        found = _email(event) if source == "email" else (source, getattr(event, source))
        if found and found[1]:
            return found
    return None


def _email(event: SegmentEvent) -> tuple[str, str] | None:
    context_traits = event.context.traits if event.context else None
    for field, traits in (("traits", event.traits), ("context.traits", context_traits)):
        email = (traits or {}).get("email")
        if isinstance(email, str) and email.strip():
            return f"{field}.email", email.strip()
    return None


def _event_time(event: SegmentEvent, received_at: datetime | None) -> str | Rejected:
    for field in ("timestamp", "originalTimestamp", "receivedAt"):
        value = getattr(event, field)
        if value:
            parsed = parse_timestamp(value)
            if parsed is None:
                return Rejected("invalid_timestamp", f"{field} is not an RFC 3339 timestamp", field)
            # Fixed-width strings: string order is time order.
            if received_at is not None and parsed > format_time(received_at + limits.MAX_FUTURE_SKEW):
                skew = int(limits.MAX_FUTURE_SKEW.total_seconds())
                message = f"{field} is more than {skew} seconds after the time the event was received"
                return Rejected("timestamp_in_future", message, field)
            return parsed
    return Rejected("missing_timestamp", "one of timestamp, originalTimestamp, receivedAt is required", "timestamp")


def parse_timestamp(value: str) -> str | None:
    """RFC 3339 in (no zone means UTC), UTC with nine fractional digits out (Engage sends up to nine,
    Python keeps six)."""
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
        if sign:
            if int(off_h) > 23 or int(off_m) > 59:
                return None
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):  # OverflowError: an offset pushes year 1 or 9999 out of range
        return None
    return format_nanoseconds(moment, (fraction or "").ljust(9, "0"))


def _fallback_message_id(raw: dict[str, Any]) -> str:
    # Without a messageId a retried delivery must still de-duplicate: derive one from the content.
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return f"sha256_{digest[:40]}"


def _rejected_from_validation(exc: ValidationError) -> Rejected:
    error = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "string_too_long":
        return Rejected("value_too_long", f"{field}: {error['msg']}", field)
    return Rejected("invalid_field", f"{field}: {error['msg']}", field)
