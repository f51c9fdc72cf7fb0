"""The two ways of updating a segment's included list, behind one interface (DESIGN.md, LaunchDarkly)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from ld_audiences.config import LaunchDarklySettings, WriterMode
from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError, error_details


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
    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
        """Add and remove context keys from the target's included list; raises WriteError."""


class SegmentAudiencesWriter:
    """LaunchDarkly's integration endpoint, the one Segment's destination uses; creates synced segments."""

    PATH = "/api/v2/segment-targets/segment-audiences"

    def __init__(self, client: LaunchDarklyClient, client_side_id: str) -> None:
        self._client = client
        self._client_side_id = client_side_id

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
        # LaunchDarkly names the segment after the batch's first item: every item is one audience.
        def item(key: str, value: bool) -> dict[str, object]:
            return {"userId": key, "cohortName": target.cohort_name, "cohortId": target.audience_id, "value": value}

        batch = [item(k, True) for k in add] + [item(k, False) for k in remove]
        if not batch:
            return
        body = {"environmentId": self._client_side_id, "contextKind": target.context_kind, "batch": batch}
        self._client.request("POST", self.PATH, body, deadline=deadline)


_INVALID_KEY_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")


class RestWriter:
    """The public Segments API (big segments), for accounts or instances without the integration."""

    def __init__(self, client: LaunchDarklyClient, project_key: str, environment_key: str) -> None:
        self._client = client
        self._base = f"/api/v2/segments/{quote(project_key, safe='')}/{quote(environment_key, safe='')}"
        self._existing: set[str] = set()

    @staticmethod
    def segment_key(target: Target) -> str:
        """Segment keys match `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`; Engage keys are snake_case, so this rarely
        changes anything."""
        key = _INVALID_KEY_CHARS.sub("-", target.audience_key)
        return key if key[:1].isalnum() else f"a{key}"

    def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> None:
        if not add and not remove:
            return
        key = self.segment_key(target)
        if key not in self._existing:
            self._create(target, key, deadline)
        body = {"included": {"add": list(add), "remove": list(remove)}}
        path = f"{self._base}/{quote(key, safe='')}/contexts"
        response = self._client.request("POST", path, body, deadline=deadline, expected={404})
        if response.status_code == 404:
            # Deleted in LaunchDarkly since we created it: create again and retry once.
            self._existing.discard(key)
            self._create(target, key, deadline)
            response = self._client.request("POST", path, body, deadline=deadline, expected={404})
            if response.status_code == 404:
                code, message = error_details(response)
                raise WriteError(True, 404, code, message)

    def _create(self, target: Target, key: str, deadline: float) -> None:
        body = {
            "key": key,
            "name": target.cohort_name,
            "description": f"Synced from Twilio Segment Engage audience {target.audience_id} by ld-audiences",
            "unbounded": True,
            "unboundedContextKind": target.context_kind,
            "tags": ["ld-audiences"],
        }
        response = self._client.request(
            "POST", self._base, body, deadline=deadline, expected={409}, conflict_is_transient=False
        )
        if response.status_code == 409 and error_details(response)[0] != "key_exists":
            code, message = error_details(response)
            raise WriteError(True, 409, code, message)
        self._existing.add(key)


def make_writer(settings: LaunchDarklySettings, client: LaunchDarklyClient) -> SegmentWriter:
    if settings.writer is WriterMode.REST:
        return RestWriter(client, settings.project_key, settings.environment_key)
    return SegmentAudiencesWriter(client, settings.client_side_id)
