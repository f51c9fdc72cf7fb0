"""What the LaunchDarkly emulator holds: the projects and environments that exist, and the segments with their
members, in LaunchDarkly's representations (docs/LAUNCHDARKLY.md)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from ld_audiences_local.emulator_requests import ApiError, JSONValue

SEGMENT_KEY_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# What a new LaunchDarkly account starts with: project "default" with these two environments.
DEFAULT_ENVIRONMENTS = ("default/production", "default/test")
# The integration key of LaunchDarkly's Segment integration; synced segments are keyed "{it}-{cohortId}".
SYNCED_SEGMENT_SOURCE = "segment-audiences"

Address = tuple[str, str, str]  # (project, environment, segment key)


def digest(text: str) -> str:
    """24 hex digits, the shape of LaunchDarkly's ids, stable for the same text."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def self_link(href: str) -> dict[str, JSONValue]:
    return {"self": {"href": href, "type": "application/json"}}


@dataclass(frozen=True)
class Environment:
    project: str
    key: str
    client_side_id: str  # LaunchDarkly's environment `_id`

    def to_json(self) -> dict[str, JSONValue]:
        """LaunchDarkly's `Environment` representation; the keys are stand-ins, never real secrets."""
        hashed = digest(f"{self.project}/{self.key}")
        return {
            "_links": self_link(f"/api/v2/projects/{quote(self.project)}/environments/{quote(self.key)}"),
            "_id": self.client_side_id,
            "key": self.key,
            "name": self.key,
            "apiKey": f"sdk-emulator-{hashed}",
            "mobileKey": f"mob-emulator-{hashed}",
            "color": "F5A623",
            "defaultTtl": 0,
            "secureMode": False,
            "defaultTrackEvents": False,
            "requireComments": False,
            "confirmChanges": False,
            "tags": [],
            "critical": False,
        }


@dataclass
class Segment:
    project: str
    environment: str
    key: str
    name: str
    description: str | None
    tags: list[str]
    unbounded: bool
    context_kind: str | None
    creation_date: int
    generation: int
    included: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    # Synced segments only: the environment's client-side ID and the cohort they were created for.
    client_side_id: str | None = None
    cohort_id: str | None = None

    @property
    def synced(self) -> bool:
        return self.cohort_id is not None

    @property
    def path(self) -> str:
        return f"/api/v2/segments/{quote(self.project)}/{quote(self.environment)}/{quote(self.key)}"

    def to_json(self) -> dict[str, JSONValue]:
        """LaunchDarkly's `UserSegment` representation. Big segments list no members."""
        doc: dict[str, JSONValue] = {
            "_links": self_link(self.path),
            "key": self.key,
            "name": self.name,
            "tags": list(self.tags),
            "creationDate": self.creation_date,
            "lastModifiedDate": self.creation_date,
            "version": 1,
            "deleted": False,
            "rules": [],
            "unbounded": self.unbounded,
            "generation": self.generation,
        }
        if self.description is not None:
            doc["description"] = self.description
        if self.unbounded:
            doc["unboundedContextKind"] = self.context_kind
        else:
            doc["included"] = sorted(self.included)
            doc["excluded"] = sorted(self.excluded)
        if self.synced:
            doc["_external"] = SYNCED_SEGMENT_SOURCE
        return doc

    @property
    def inspection_id(self) -> str:
        """Synced segments by client-side ID and cohort, as the segment-audiences writer knows them."""
        if self.synced:
            return f"{self.client_side_id}/{self.cohort_id}"
        return f"{self.project}/{self.environment}/{self.key}"

    def inspection(self) -> dict[str, JSONValue]:
        """The emulator's own view, members included (GET /emulator/segments)."""
        where: dict[str, JSONValue]
        if self.synced:
            where = {"kind": "synced", "key": self.cohort_id, "environment": self.client_side_id}
        else:
            kind = "big" if self.unbounded else "standard"
            where = {"kind": kind, "key": self.key, "project": self.project, "environment": self.environment}
        return {
            "id": self.inspection_id,
            **where,
            "name": self.name,
            "contextKind": self.context_kind,
            "included": sorted(self.included),
            "excluded": sorted(self.excluded),
            # Where LaunchDarkly's REST API finds it.
            "projectKey": self.project,
            "environmentKey": self.environment,
            "segmentKey": self.key,
        }


def parse_environments(environments: Iterable[str], client_side_ids: Iterable[str]) -> list[Environment]:
    """`project/environment` keys; the i-th client-side ID is the i-th environment's (the others get one)."""
    keys, ids = list(environments), list(client_side_ids)
    if len(ids) > len(keys):
        raise ValueError("more client-side IDs than environments: each client-side ID belongs to one environment")
    parsed: list[Environment] = []
    for i, text in enumerate(keys):
        project, _, environment = text.partition("/")
        if not (SEGMENT_KEY_RE.match(project) and SEGMENT_KEY_RE.match(environment)):
            raise ValueError(f"environment {text!r} is not PROJECT_KEY/ENVIRONMENT_KEY")
        parsed.append(Environment(project, environment, ids[i] if i < len(ids) else digest(text)))
    if len({(e.project, e.key) for e in parsed}) < len(parsed) or len({e.client_side_id for e in parsed}) < len(parsed):
        raise ValueError("environments and client-side IDs must be unique")
    return parsed


class Account:
    """One LaunchDarkly account: its fixed projects and environments, and its segments behind `lock`
    (handlers run in server threads; methods that say so expect the caller to hold it)."""

    def __init__(self, environments: Iterable[Environment]) -> None:
        envs = list(environments)
        self.environments = {(e.project, e.key): e for e in envs}
        self.by_client_side_id = {e.client_side_id: e for e in envs}
        self.lock = threading.Lock()
        self.segments: dict[Address, Segment] = {}
        self._generations: dict[Address, int] = {}  # creations per key, deletions included

    def environment(self, project: str, key: str) -> Environment:
        """404 for an unknown project or environment, as LaunchDarkly answers."""
        env = self.environments.get((project, key))
        if env is None:
            known = any(e.project == project for e in self.environments.values())
            raise ApiError(404, "not_found", "Unknown environment" if known else "Unknown project")
        return env

    def segment(self, env: Environment, key: str) -> Segment:
        """The lock is held; 404 for a segment that does not exist."""
        segment = self.segments.get((env.project, env.key, key))
        if segment is None:
            raise ApiError(404, "not_found", "Unknown segment")
        return segment

    def new_segment(
        self,
        address: Address,
        name: str,
        description: str | None,
        tags: list[str],
        unbounded: bool,
        context_kind: str | None,
    ) -> Segment:
        """Create and store a segment (the lock is held); a key created again counts a new generation."""
        generation = self._generations.get(address, 0) + 1
        self._generations[address] = generation
        project, environment, key = address
        now = int(time.time() * 1000)
        segment = Segment(project, environment, key, name, description, tags, unbounded, context_kind, now, generation)
        self.segments[address] = segment
        return segment

    def synced_segment(self, env: Environment, cohort: str, name: str, kind: str) -> Segment:
        """The cohort's synced segment, created at the key LaunchDarkly's validation server gives it
        (docs/LAUNCHDARKLY.md); the lock is held. 409, which the capability documents, for a key held by
        another segment or a context kind that differs."""
        address = (env.project, env.key, f"{SYNCED_SEGMENT_SOURCE}-{cohort}")
        seg = self.segments.get(address)
        if seg is None:
            seg = self.new_segment(address, name, None, [], True, kind)
            seg.client_side_id, seg.cohort_id = env.client_side_id, cohort
        elif not seg.synced:
            raise ApiError(
                409, "conflict", f"segment {address[2]!r} exists and is not synced from {SYNCED_SEGMENT_SOURCE}"
            )
        elif seg.context_kind != kind:
            raise ApiError(
                409, "conflict", f"contextKind {kind!r} does not match the segment's context kind {seg.context_kind!r}"
            )
        seg.name = name
        return seg

    def inspection(self) -> list[dict[str, JSONValue]]:
        """Every segment with its members, by inspection id."""
        with self.lock:
            return sorted((s.inspection() for s in self.segments.values()), key=lambda d: str(d["id"]))

    def included(self, segment_id: str) -> set[str]:
        with self.lock:
            for segment in self.segments.values():
                if segment.inspection_id == segment_id:
                    return set(segment.included)
        return set()

    def clear(self) -> None:
        with self.lock:
            self.segments.clear()
            self._generations.clear()
