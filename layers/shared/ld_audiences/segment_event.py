"""The part of a Twilio Segment event that audience sync reads, as a pydantic model.

Segment events carry much more (context.library, integrations, …); everything else is ignored, so
new fields from Segment never break ingestion.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ld_audiences import limits

_LENIENT = ConfigDict(extra="ignore")


def _number_as_text(value: Any) -> Any:
    """Segment's spec says strings, but some senders send numeric ids, and LaunchDarkly keys are strings.

    The rule is the one Segment's own destination applies (it reads events in JavaScript): a number is its
    decimal digits, so 1, 1.0 and 1e0 all become "1", the same key as the string "1". Only whole numbers
    JavaScript holds exactly are accepted: a fraction is no id, a larger number was already rounded by any
    JavaScript sender, and NaN or infinity (Python's parser reads `NaN` and `1e400`) is no number at all.
    """
    if value is None or type(value) is str:  # nearly every value: one cheap check (11 fields an event)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value  # booleans are refused as strings, not read as 1 and 0
    if isinstance(value, float):
        if not value.is_integer():  # NaN and infinity are not integers either
            raise ValueError("a number here must be a whole number; send other ids as strings")
        value = int(value)
    if abs(value) > limits.MAX_SAFE_INTEGER:
        raise ValueError("a number here must be at most 2^53 - 1 in size; send larger ids as strings")
    return str(value)


Text = Annotated[str | None, BeforeValidator(_number_as_text)]


class Personas(BaseModel):
    model_config = _LENIENT

    computation_class: Text = None
    computation_id: Text = Field(default=None, max_length=limits.MAX_AUDIENCE_ID)
    computation_key: Text = Field(default=None, max_length=limits.MAX_AUDIENCE_KEY)


class EventContext(BaseModel):
    model_config = _LENIENT

    personas: Personas | None = None
    traits: dict[str, Any] | None = None


class SegmentEvent(BaseModel):
    model_config = _LENIENT

    type: Text = None
    event: Text = None
    userId: Text = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    anonymousId: Text = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    messageId: Text = Field(default=None, max_length=limits.MAX_MESSAGE_ID)
    timestamp: Text = None
    originalTimestamp: Text = None
    receivedAt: Text = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: EventContext | None = None
