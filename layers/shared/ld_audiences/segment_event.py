"""The part of a Twilio Segment event that audience sync reads, as a pydantic model.

Segment events carry much more (context.library, integrations, …); everything else is ignored, so
new fields from Segment never break ingestion.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ld_audiences import limits

_LENIENT = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Personas(BaseModel):
    model_config = _LENIENT

    computation_class: str | None = None
    computation_id: str | None = Field(default=None, max_length=limits.MAX_AUDIENCE_ID)
    computation_key: str | None = Field(default=None, max_length=limits.MAX_AUDIENCE_KEY)


class EventContext(BaseModel):
    model_config = _LENIENT

    personas: Personas | None = None
    traits: dict[str, Any] | None = None


class SegmentEvent(BaseModel):
    model_config = _LENIENT

    type: str | None = None
    event: str | None = None
    # Segment's spec says strings, but some libraries send numeric ids: LaunchDarkly keys are strings.
    userId: str | None = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    anonymousId: str | None = Field(default=None, max_length=limits.MAX_CONTEXT_KEY)
    messageId: str | None = Field(default=None, max_length=limits.MAX_MESSAGE_ID)
    timestamp: str | None = None
    originalTimestamp: str | None = None
    receivedAt: str | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    context: EventContext | None = None
