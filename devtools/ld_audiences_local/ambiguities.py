"""The emulator's switches: one per behaviour LaunchDarkly's documentation leaves open (docs/LAUNCHDARKLY.md,
"Unverified"). Each value is an answer LaunchDarkly could plausibly give; the product must work under all of
them, so the writer tests run under every one."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

# postSegment documents 201/400/401/403/404/429, nothing for a key already taken: an outside review saw
# 409 key_exists; another 409 code, a 400, or a 201 that replaces the segment are as consistent with the spec.
DuplicateCreate = Literal["key_exists", "conflict", "bad_request", "overwrite"]
# getSegmentMembershipForContext documents only 200 BigSegmentTarget, and 404 for an unknown resource.
UnknownContext = Literal["not_included", "not_found"]
# The segment-audiences manifest reads the segment's identity from batch[0] but also names a per-item
# cohortIdPath ("overrides the cohort id for a single member").
MixedCohorts = Literal["per_item", "first_item"]


@dataclass(frozen=True)
class Ambiguities:
    duplicate_create: DuplicateCreate = "key_exists"
    unknown_context: UnknownContext = "not_included"
    mixed_cohorts: MixedCohorts = "per_item"
    # No limit on context keys per request is documented for either write route: None is none, a number
    # answers 400 past it.
    max_keys_per_request: int | None = None

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        limit = self.max_keys_per_request
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("max_keys_per_request must be an integer >= 1 or null")


CHOICES: dict[str, tuple[str, ...]] = {
    "duplicate_create": ("key_exists", "conflict", "bad_request", "overwrite"),
    "unknown_context": ("not_included", "not_found"),
    "mixed_cohorts": ("per_item", "first_item"),
}
# A limit the product's chunks (at most 1,000 keys) stay within, as a documented one would have to be met.
KEY_LIMIT_TO_TEST = 1000


def every_variant() -> list[Ambiguities]:
    """The defaults, then each switch moved to each of its other values alone: every answer is met once."""
    default = Ambiguities()
    variants = [default]
    for field in fields(Ambiguities):
        for value in CHOICES.get(field.name, (KEY_LIMIT_TO_TEST,)):
            if value != getattr(default, field.name):
                variants.append(replace(default, **{field.name: value}))
    return variants


def label(variant: Ambiguities) -> str:
    changed = [f"{f.name}={getattr(variant, f.name)}" for f in fields(Ambiguities)]
    moved = [c for c, f in zip(changed, fields(Ambiguities), strict=True) if getattr(variant, f.name) != f.default]
    return ",".join(moved) or "defaults"
