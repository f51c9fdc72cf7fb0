"""The part of a Twilio Segment event that audience sync reads, as a pydantic model.

Segment events carry much more (context.library, integrations, …); everything else is ignored, so
new fields from Segment never break ingestion.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ld_audiences import limits

_LENIENT = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


def _finite(value: Any) -> Any:
    # Numbers are coerced to strings, but JSON has no NaN or infinity: Python's parser yields them for
    # `NaN` and `1e400`, and they must not become the context keys "nan" and "inf".
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a string or a finite number")
    return value


Text = Annotated[str | None, BeforeValidator(_finite)]


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
    # Segment's spec says strings, but some libraries send numeric ids: LaunchDarkly keys are strings.
    userId: Text = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    anonymousId: Text = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    messageId: Text = Field(default=None, max_length=limits.MAX_MESSAGE_ID)
    timestamp: Text = None
    originalTimestamp: Text = None
    receivedAt: Text = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: EventContext | None = None
