"""Which LaunchDarkly segment holds an audience, found through LaunchDarkly's API rather than guessed
(docs/LAUNCHDARKLY.md, "Finding an audience's segment").

* rest writer: its key is deterministic (`RestWriter.segment_key`), so one `getSegment` at that key; the
  segment there is the audience's only if it carries the writer's tag and ownership marker, as the writer
  itself demands before writing.
* segment-audiences writer: LaunchDarkly creates the synced segment and chooses its key; no documented rule
  gives it. So the environment's big segments are listed (`getSegments`, `filter=unbounded equals true`,
  paged by limit/offset) and the synced one from Segment named after the audience (`Target.cohort_name`)
  is taken, if exactly one is.
* `--segment-key`: the operator's word; one `getSegment`.

The matching is pure functions over LaunchDarkly's `UserSegment` objects, so it is tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ld_audiences.launchdarkly import LaunchDarklyClient, json_object
from ld_audiences.writers import MANAGED_TAG, RestWriter, Target
from ld_audiences_cli.audit import AuditError, get, segments_path

PAGE_SIZE = 50  # LaunchDarkly's default is 20; its maximum is not documented, so paging follows what it returns
MAX_SEGMENTS = 100_000  # a guard against a listing that never ends (totalCount growing, offset ignored)
LISTING_FILTER = "unbounded equals true"  # synced segments are big segments [OAS getSegments]
# What `_external` of a segment synced from Twilio Segment contains: the integration's key is
# `segment-audiences` (integration-framework); the exact value LaunchDarkly puts there is unverified, so any
# value naming Segment is accepted and any other integration (Amplitude, mParticle, ...) is not.
SEGMENT_SOURCE_WORD = "segment"

Segment = Mapping[str, Any]


@dataclass(frozen=True)
class Lookup:
    """The segment found, or why none is: what was searched and what to do."""

    key: str | None
    searched: str
    problem: str = ""
    remedy: str = ""
    candidates: list[str] = field(default_factory=list)  # keys, when several match

    @property
    def found(self) -> bool:
        return self.key is not None


# ----------------------------------------------------------------------------------------- pure matching


def rest_ownership_problem(segment: Segment, target: Target) -> str:
    """Why the segment at the rest writer's key is not this audience's (empty when it is): the writer's own rule."""
    marker = RestWriter.ownership_marker(target)
    if MANAGED_TAG not in (segment.get("tags") or []):
        return f"it lacks the tag {MANAGED_TAG!r}"
    if marker not in str(segment.get("description") or ""):
        return f"its description does not end with {marker!r}"
    if segment.get("unbounded") is not True:
        return "it is not a big segment"
    if segment.get("unboundedContextKind") != target.context_kind:
        return f"it holds context kind {segment.get('unboundedContextKind')!r}, not {target.context_kind!r}"
    return ""


def is_synced_from_segment(segment: Segment) -> bool:
    external = segment.get("_external")
    return (
        segment.get("unbounded") is True
        and isinstance(external, str)
        and SEGMENT_SOURCE_WORD in external.lower()
        and segment.get("deleted") is not True
    )


def synced_matches(segments: Iterable[Segment], target: Target) -> list[Segment]:
    """Synced segments from Segment named after the audience, of its context kind (when LaunchDarkly names one:
    the same audience synced for two kinds gives two segments of one name)."""
    return [
        s
        for s in segments
        if is_synced_from_segment(s)
        and s.get("name") == target.cohort_name
        and s.get("unboundedContextKind") in (None, target.context_kind)
    ]


def synced_lookup(segments: list[Segment], target: Target, where: str) -> Lookup:
    searched = (
        f"the big segments of {where} ({len(segments)} listed) for one synced from Segment named "
        f"{target.cohort_name!r} with context kind {target.context_kind!r}"
    )
    matches = synced_matches(segments, target)
    if len(matches) == 1:
        return Lookup(str(matches[0].get("key")), searched)
    if matches:
        keys = sorted(str(s.get("key")) for s in matches)
        return Lookup(
            None,
            searched,
            f"{len(keys)} segments match: {', '.join(keys)}",
            "give the audience's segment with --segment-key",
            keys,
        )
    others = sorted(f"{s.get('key')} ({s.get('name')!r})" for s in segments if is_synced_from_segment(s))
    seen = (
        f"; synced from Segment there: {', '.join(others[:10])}" + (" …" if len(others) > 10 else "") if others else ""
    )
    return Lookup(
        None,
        searched,
        f"none matches{seen}",
        "if it was deleted, `ld-audiences resync` makes LaunchDarkly create it again with the next write; if it "
        "was renamed in LaunchDarkly, give its key with --segment-key; else check --project-key and "
        "--environment-key (the environment of the client-side ID) and --writer",
    )


# ----------------------------------------------------------------------------------------- reads


def list_big_segments(
    client: LaunchDarklyClient, project_key: str, environment_key: str, on_page: Callable[[int, int], None]
) -> list[Segment]:
    """Every big segment of the environment (`getSegments`), page by page; `on_page(listed, total)`."""
    where = f"the segments of {project_key}/{environment_key}"
    segments: list[Segment] = []
    while len(segments) < MAX_SEGMENTS:
        query = f"?limit={PAGE_SIZE}&offset={len(segments)}&filter={quote(LISTING_FILTER, safe='')}"
        response = get(client, segments_path(project_key, environment_key) + query, where)
        if response is None:
            raise AuditError(f"LaunchDarkly knows no {project_key}/{environment_key} (404): check the keys")
        page = json_object(response)
        items = [item for item in page.get("items") or [] if isinstance(item, dict)]
        segments += items
        total = page.get("totalCount")
        on_page(len(segments), total if isinstance(total, int) else len(segments))
        # Paged by what came back, not by PAGE_SIZE: LaunchDarkly may cap the limit.
        if not items or (isinstance(total, int) and len(segments) >= total):
            return segments
    raise AuditError(f"{where} did not end after {MAX_SEGMENTS} segments: give --segment-key")


def find_segment(
    client: LaunchDarklyClient,
    writer: str,
    target: Target,
    project_key: str,
    environment_key: str,
    *,
    segment_key: str | None = None,
    on_page: Callable[[int, int], None] = lambda listed, total: None,
) -> Lookup:
    where = f"{project_key}/{environment_key}"
    if segment_key or writer == "rest":
        key = segment_key or RestWriter.segment_key(target)
        searched = f"segment {key} in {where} ({'--segment-key' if segment_key else 'the rest writer key'})"
        response = get(client, segments_path(project_key, environment_key, key), f"segment {key} in {where}")
        if response is None or json_object(response).get("deleted") is True:
            remedy = (
                "check the key, --project-key and --environment-key"
                if segment_key
                else "if the audience has members, `ld-audiences resync` creates it again; else check "
                "--project-key, --environment-key and --writer, or give --segment-key"
            )
            return Lookup(None, searched, "it does not exist", remedy)
        segment = json_object(response)
        if segment.get("unbounded") is not True:
            raise AuditError(f"segment {key} in {where} is not a big segment: ld-audiences writes only big segments")
        problem = "" if segment_key else rest_ownership_problem(segment, target)
        if problem:
            return Lookup(
                None,
                searched,
                f"a segment exists there but ld-audiences did not create it for this audience: {problem}, so the "
                "sync does not write to it (segment_not_managed)",
                f"restore the tag {MANAGED_TAG!r} and the description's marker, or delete the segment and "
                "`ld-audiences resync`; --segment-key audits it anyway",
            )
        return Lookup(key, searched)
    return synced_lookup(list_big_segments(client, project_key, environment_key, on_page), target, where)


def lines(lookup: Lookup) -> list[str]:
    if lookup.found:
        return [f"found segment {lookup.key}: searched {lookup.searched}"]
    return [
        f"segment {'not found for sure' if lookup.candidates else 'not found'}: searched {lookup.searched}: "
        f"{lookup.problem}",
        f"what to do: {lookup.remedy}",
    ]


def to_document(lookup: Lookup) -> dict[str, Any]:
    """The `segment` of `audit --output json` (docs/CLI.md)."""
    return {
        "found": lookup.found,
        "key": lookup.key,
        "searched": lookup.searched,
        "problem": lookup.problem or None,
        "remedy": lookup.remedy or None,
        "candidates": lookup.candidates,
    }
