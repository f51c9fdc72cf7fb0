"""Builders for Segment Engage events as real Engage traffic shapes them (docs/DESIGN.md)."""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)


def engage_event(
    *,
    type_: str = "track",
    audience_key: str = "beta_testers",
    audience_id: str = "aud_beta",
    computation_class: str = "audience",
    value: Any = True,
    user_id: str | None = "user-1",
    anonymous_id: str | None = None,
    email: str | None = None,
    timestamp: str = "2026-11-20T10:00:00.000000000Z",
    message_id: str | None = None,
) -> dict[str, Any]:
    """An identify (membership in traits) or track (membership in properties) audience event."""
    event: dict[str, Any] = {
        "type": type_,
        "messageId": message_id or f"personas_{next(_ids):027d}",
        "timestamp": timestamp,
        "sentAt": None,
        "context": {
            "personas": {
                "computation_class": computation_class,
                "computation_id": audience_id,
                "computation_key": audience_key,
                "space_id": "spa_1",
            },
            "library": {"name": "unknown", "version": "unknown"},
        },
    }
    if user_id is not None:
        event["userId"] = user_id
    if anonymous_id is not None:
        event["anonymousId"] = anonymous_id
    membership = {} if value is ... else {audience_key: value}
    if type_ == "identify":
        event["traits"] = {**membership, **({"email": email} if email else {})}
    else:
        event["event"] = "Audience Entered" if value in (True, "true") else "Audience Exited"
        event["properties"] = {**membership, "audience_key": audience_key}
        if email:
            event["context"]["traits"] = {"email": email}
    return event
