"""The two ways of updating a segment's included list, behind one interface (docs/DESIGN.md, "LaunchDarkly")."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from ld_audiences.config import LaunchDarklySettings, WriterMode
from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError, error_details, json_object, unanswered_before

logger = logging.getLogger(__name__)

# WriteError codes of a segment the rest writer must not write to (what the DLQ's failure reason names).
SEGMENT_NOT_MANAGED = "segment_not_managed"
CONTEXT_KIND_MISMATCH = "context_kind_mismatch"


@dataclass(frozen=True, slots=True)
class Target:
    """One LaunchDarkly segment: an Engage audience for one context kind."""

    audience_id: str
    audience_key: str
    context_kind: str

    @property
    def cohort_name(self) -> str:
        """What Segment's destination names the synced segment: `ld_segment_test` → `Ld segment test`."""
        name = self.audience_key.replace("_", " ")
        return name[:1].upper() + name[1:]


class SegmentWriter(Protocol):
    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
        """Add and remove context keys from the target's included list; raises WriteError. True when the write
        landed after an attempt that got no answer: that attempt may still be applied later."""


class SegmentAudiencesWriter:
    """LaunchDarkly's integration endpoint, the one Segment's destination uses; creates synced segments."""

    PATH = "/api/v2/segment-targets/segment-audiences"

    def __init__(self, client: LaunchDarklyClient, client_side_id: str) -> None:
        self._client = client
        self._client_side_id = client_side_id

    @staticmethod
    def segment_key(target: Target) -> str:
        """The key LaunchDarkly gives the synced segment it creates: its integration's key and the Engage
        audience id (docs/LAUNCHDARKLY.md: the best public evidence, unverified in production)."""
        return f"segment-audiences-{target.audience_id}"

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
        # LaunchDarkly names the segment after the batch's first item: every item is one audience.
        def item(key: str, value: bool) -> dict[str, object]:
            return {"userId": key, "cohortName": target.cohort_name, "cohortId": target.audience_id, "value": value}

        batch = [item(k, True) for k in add] + [item(k, False) for k in remove]
        if not batch:
            return False
        body = {"environmentId": self._client_side_id, "contextKind": target.context_kind, "batch": batch}
        response = self._client.request("POST", self.PATH, body, deadline=deadline, context_keys=[*add, *remove])
        return unanswered_before(response)


_INVALID_KEY_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")
# The tag on every segment the rest writer creates; with the description's marker, what makes it ours.
MANAGED_TAG = "ld-audiences"


class RestWriter:
    """The public Segments API (big segments), for accounts or instances without the integration.

    A segment is written only if this writer owns it: created with the `ld-audiences` tag and a
    description naming its audience id and context kind. A segment found at the key without them (made
    by hand, or by something else) is never written: the changes fail permanently and go to the DLQ.
    """

    def __init__(self, client: LaunchDarklyClient, project_key: str, environment_key: str) -> None:
        self._client = client
        self._where = f"{project_key}/{environment_key}"
        self._base = f"/api/v2/segments/{quote(project_key, safe='')}/{quote(environment_key, safe='')}"
        self._ours: set[str] = set()  # segment keys this instance created or found to be its own

    @staticmethod
    def segment_key(target: Target) -> str:
        """`{audience key}-{context kind}-{digest}`, e.g. `beta_testers-user-3fa9c21b07de`: readable, one
        segment per audience id and context kind (the digest is of both, so audiences sharing a key, or
        keys that differ only in characters LaunchDarkly refuses, never share a segment, and a big
        segment's context kind, which cannot change, never has to), the same in every deployment, and
        within LaunchDarkly's key rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` in at most 86 characters
        (LaunchDarkly documents no maximum for segment keys; flag keys may have 256)."""
        readable = _INVALID_KEY_CHARS.sub("-", target.audience_key).lstrip("_.-")[:48] or "audience"
        kind = _INVALID_KEY_CHARS.sub("-", target.context_kind)[:24]
        identity = json.dumps([target.audience_id, target.context_kind]).encode()
        return f"{readable}-{kind}-{hashlib.sha256(identity).hexdigest()[:12]}"

    @staticmethod
    def ownership_marker(target: Target) -> str:
        """What the description of a segment this writer created ends with."""
        identity = {"audience_id": target.audience_id, "context_kind": target.context_kind}
        return "ld-audiences:" + json.dumps(identity, sort_keys=True, separators=(",", ":"))

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
        if not add and not remove:
            return False
        key = self.segment_key(target)
        if key not in self._ours:
            self._claim(target, key, deadline)
        keys = [*add, *remove]
        body = {"included": {"add": list(add), "remove": list(remove)}}
        path = f"{self._base}/{quote(key, safe='')}/contexts"
        response = self._client.request("POST", path, body, deadline=deadline, expected={404}, context_keys=keys)
        late = unanswered_before(response)
        if response.status_code == 404:
            # Deleted in LaunchDarkly since we created it: create it again and retry once.
            self._ours.discard(key)
            self._claim(target, key, deadline)
            response = self._client.request("POST", path, body, deadline=deadline, expected={404}, context_keys=keys)
            if response.status_code == 404:
                code, message = error_details(response, keys)
                raise WriteError(True, 404, code, message, outcome_unknown=late)
        return late or unanswered_before(response)

    def _claim(self, target: Target, key: str, deadline: float) -> None:
        """Make sure the segment at the key exists and is ours, by reading it: LaunchDarkly documents no answer
        to creating a key that is taken (409 key_exists was seen; 400 or another 409 code would fit the spec as
        well), so a refused create is judged by what is there afterwards, never by its status or code."""
        path = f"{self._base}/{quote(key, safe='')}"
        existing = self._client.request("GET", path, None, deadline=deadline, expected={404})
        if existing.status_code == 404:
            try:
                self._client.request(
                    "POST", self._base, self._new_segment(target, key), deadline=deadline, conflict_is_transient=False
                )
            except WriteError as refused:
                if refused.status is None or refused.status == 429 or not 400 <= refused.status < 500:
                    raise
                # Created meanwhile by another invocation (ours, then), or by someone else: read it again.
                existing = self._client.request("GET", path, None, deadline=deadline, expected={404})
                if existing.status_code == 404:
                    raise WriteError(True, refused.status, refused.code, refused.message) from refused
                self._check_ownership(target, key, json_object(existing))
        else:
            self._check_ownership(target, key, json_object(existing))
        self._ours.add(key)

    def _new_segment(self, target: Target, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "name": target.cohort_name,
            "description": f"Synced from Twilio Segment Engage audience {target.audience_key} by ld-audiences; "
            f"changes made here are overwritten. {self.ownership_marker(target)}",
            "unbounded": True,
            "unboundedContextKind": target.context_kind,
            "tags": [MANAGED_TAG],
        }

    def _check_ownership(self, target: Target, key: str, segment: dict[str, Any]) -> None:
        where = f"Segment {key} in {self._where} (audience {target.audience_id}, context kind {target.context_kind})"
        marker = self.ownership_marker(target)
        if MANAGED_TAG not in (segment.get("tags") or []) or marker not in str(segment.get("description") or ""):
            code, problem = SEGMENT_NOT_MANAGED, "exists but was not created by ld-audiences for this audience"
            remedy = (
                f"If ld-audiences created it and its tags or description were edited, restore the tag {MANAGED_TAG!r} "
                f"and a description ending with {marker!r}; otherwise delete or rename that segment."
            )
        elif segment.get("unbounded") is not True:
            code, problem = SEGMENT_NOT_MANAGED, "is not a big segment"
            remedy = "Delete it: ld-audiences creates the big segment again."
        elif segment.get("unboundedContextKind") != target.context_kind:
            code = CONTEXT_KIND_MISMATCH
            problem = f"holds context kind {segment.get('unboundedContextKind')!r}, not {target.context_kind!r}"
            remedy = "Delete it: ld-audiences creates it again with the right context kind."
        else:
            return
        logger.error(
            "%s %s, so ld-audiences does not write to it and its changes go to the dead-letter queue. %s "
            "Then move them back with `ld-audiences redrive`.",
            where,
            problem,
            remedy,
            extra={"audience_id": target.audience_id, "segment_key": key, "ld_code": code},
        )
        raise WriteError(True, 409, code, f"{where} {problem}")


def make_writer(settings: LaunchDarklySettings, client: LaunchDarklyClient) -> SegmentWriter:
    if settings.writer is WriterMode.REST:
        return RestWriter(client, settings.project_key, settings.environment_key)
    return SegmentAudiencesWriter(client, settings.client_side_id)
