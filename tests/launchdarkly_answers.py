"""LaunchDarkly's answers shaped as its OpenAPI spec's schemas (docs/LAUNCHDARKLY.md [OAS]), every required
field present, for scripted servers: code that reads them is tested on what LaunchDarkly documents."""

from __future__ import annotations

from typing import Any

EPOCH_MS = 1_767_225_600_000


def user_segment(
    key: str,
    name: str,
    *,
    tags: list[str] | None = None,
    description: str | None = None,
    unbounded: bool = True,
    context_kind: str | None = "user",
    external: str | None = None,
    deleted: bool = False,
) -> dict[str, Any]:
    """`UserSegment`: required `_links`, `key`, `name`, `tags`, `creationDate`, `lastModifiedDate`, `version`,
    `deleted`, `rules`, `generation`; `description` omitted when none; `_external` only on synced segments."""
    segment: dict[str, Any] = {
        "_links": {"self": {"href": f"/api/v2/segments/p/e/{key}", "type": "application/json"}},
        "key": key,
        "name": name,
        "tags": tags or [],
        "creationDate": EPOCH_MS,
        "lastModifiedDate": EPOCH_MS,
        "version": 1,
        "deleted": deleted,
        "rules": [],
        "generation": 1,
        "included": [],
        "unbounded": unbounded,
    }
    if description is not None:
        segment["description"] = description
    if unbounded and context_kind is not None:
        segment["unboundedContextKind"] = context_kind
    if external is not None:
        segment["_external"] = external
    return segment


def user_segments(items: list[dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    """`UserSegments`: `{items, totalCount, _links}`."""
    return {
        "_links": {"self": {"href": "/api/v2/segments/p/e", "type": "application/json"}},
        "items": items,
        "totalCount": len(items) if total is None else total,
    }


def error(code: str, message: str) -> dict[str, str]:
    """The error body of every 4xx: `{code, message}` (and an `id`, omitted here)."""
    return {"code": code, "message": message}
