"""The membership change: the versioned message the ingest function queues for the sync function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ld_audiences import limits

SCHEMA_VERSION: Literal[1] = 1


class MembershipChange(BaseModel):
    """One context entering (`included=True`) or leaving one audience, as of `event_time`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = SCHEMA_VERSION
    audience_id: str = Field(min_length=1, max_length=limits.MAX_QUEUED_AUDIENCE_ID)
    audience_key: str = Field(min_length=1, max_length=limits.MAX_AUDIENCE_KEY)
    context_kind: str = Field(min_length=1, max_length=limits.MAX_CONTEXT_KIND)
    context_key: str = Field(min_length=1, max_length=limits.MAX_CONTEXT_KEY)
    included: bool
    # RFC 3339 UTC with nine fractional digits: fixed width, so string order is time order.
    event_time: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")
    message_id: str = Field(min_length=1, max_length=limits.MAX_MESSAGE_ID)
    # Write this context's newest desired state again, whatever it is by then (resync, audit --repair, a
    # write whose outcome stayed unknown). Optional and left out when false, so v1 readers and writers
    # on either side of an upgrade understand each other.
    reassert: bool = False
    # When API Gateway received the event (epoch seconds): what the sync's change-age metric counts from.
    # Optional, left out when unknown (messages queued before it existed, reasserts).
    received_at: float | None = None

    @property
    def target(self) -> tuple[str, str, str]:
        """The LaunchDarkly segment a change lands in: (audience id, audience key, context kind)."""
        return (self.audience_id, self.audience_key, self.context_kind)

    @property
    def precedence(self) -> tuple[str, bool]:
        """Which of two queued changes to one context a batch keeps: the newer one, and of equal ones the
        reassert (it writes even what is already applied)."""
        return (self.order, self.reassert)

    @property
    def order(self) -> str:
        """Total order between changes to one context: later event time wins, ties go to the
        larger message id, so every invocation picks the same winner."""
        return f"{self.event_time}|{self.message_id}"

    def to_message(self) -> str:
        # ASCII only: SQS refuses (or rewrites to U+FFFD) characters such as U+FFFE/U+FFFF that JSON
        # carries unescaped, and a context key must reach LaunchDarkly exactly as it was sent.
        left_out = {name for name in ("reassert", "received_at") if not getattr(self, name)}
        return self.model_dump_json(ensure_ascii=True, exclude=left_out or None)

    @classmethod
    def from_message(cls, body: str) -> MembershipChange:
        return cls.model_validate_json(body)


def format_time(moment: datetime) -> str:
    """A UTC datetime as an event time (RFC 3339, nine fractional digits)."""
    return format_nanoseconds(moment.astimezone(UTC), f"{moment.microsecond:06d}000")


def format_nanoseconds(moment: datetime, nanoseconds: str) -> str:
    """A UTC datetime as an event time with the given nine fractional digits."""
    # By hand, not strftime: `%Y` writes year 999 as "999", which is not RFC 3339, and strftime is slower
    # (2.9 against 2.1 µs, once per event).
    m = moment
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{nanoseconds}Z"
