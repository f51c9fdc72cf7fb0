"""The LaunchDarkly endpoints the emulator serves, on an `Account`: segment-audiences, projects and
environments, segments and big-segment memberships (docs/LAUNCHDARKLY.md). Authentication, rate limits,
faults and the published schemas are checked before a request gets here (emulator.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from ld_audiences_local.ambiguities import Ambiguities
from ld_audiences_local.emulator_requests import (
    ApiError,
    JSONValue,
    Request,
    Response,
    bad,
    check_context_kind,
    key_list,
    parse_json_object,
    required_string,
)
from ld_audiences_local.emulator_state import SEGMENT_KEY_RE, Account, Environment, Segment, digest, self_link
from ld_audiences_local.segment_listing import FilterError, query_int, segment_filter

API_VERSION = "20240415"
VALID_VERSIONS = (20191212, 20220603, 20240415)
# Tags: 1 to 64 letters, digits, ".", "_", "-" (what LaunchDarkly's Terraform provider validates).
TAG_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


class LaunchDarklyApi:
    """`reject_cohorts`: cohorts (and big-segment keys) whose writes are refused with 400."""

    def __init__(self, account: Account, ambiguities: Ambiguities, reject_cohorts: Iterable[str]) -> None:
        self.account = account
        self.ambiguities = ambiguities
        self._reject = frozenset(reject_cohorts)

    # ----------------------------------------------------------------------------- segment-audiences

    def segment_audiences(self, req: Request) -> Response:
        doc = parse_json_object(req.body)
        env_id = required_string(doc, "environmentId")
        kind = required_string(doc, "contextKind")
        check_context_kind(kind, "contextKind")
        batch = doc.get("batch")
        if batch is None:
            raise bad("batch is required")
        if not isinstance(batch, list):
            raise bad("batch must be an array")
        if not batch:
            raise bad("batch must not be empty")
        items: list[tuple[str, str, str, bool]] = []
        for i, item in enumerate(batch):
            where = f"batch[{i}]."
            if not isinstance(item, dict):
                raise bad(f"batch[{i}] must be an object")
            user_id = required_string(item, "userId", where)
            cohort_name = required_string(item, "cohortName", where)
            cohort_id = required_string(item, "cohortId", where)
            if "value" not in item or item["value"] is None:
                raise bad(f"{where}value is required")
            if not isinstance(item["value"], bool):
                raise bad(f"{where}value must be a boolean")
            items.append((user_id, cohort_name, cohort_id, item["value"]))
        env = self.account.by_client_side_id.get(env_id)
        if env is None:
            raise bad("unknown environmentId")
        _, first_name, first_cohort, _ = items[0]
        if first_cohort in self._reject:
            raise bad("cohort rejected")
        by_cohort: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for user_id, name, cohort, value in items:
            if self.ambiguities.mixed_cohorts == "first_item":
                name, cohort = first_name, first_cohort
            by_cohort.setdefault((cohort, name), []).append((user_id, value))
        with self.account.lock:
            segments = [
                (self.account.synced_segment(env, cohort, name, kind), changes)
                for (cohort, name), changes in by_cohort.items()
            ]
            for seg, changes in segments:
                for user_id, value in changes:
                    if value:
                        seg.included.add(user_id)
                    else:
                        seg.included.discard(user_id)
        return Response(204)

    # ----------------------------------------------------------------------------- projects, environments

    def versions(self, req: Request) -> Response:
        return Response(
            200,
            {
                "validVersions": list(VALID_VERSIONS),
                "latestVersion": VALID_VERSIONS[-1],
                "currentVersion": int(API_VERSION),
                "beta": req.headers.get("ld-api-version") == "beta",
            },
        )

    def get_project(self, req: Request) -> Response:
        project = req.params["projectKey"]
        environments = [e.to_json() for e in self.account.environments.values() if e.project == project]
        if not environments:
            raise ApiError(404, "not_found", "Unknown project")
        path = f"/api/v2/projects/{quote(project)}"
        doc: dict[str, JSONValue] = {
            "_links": {
                **self_link(path),
                "environments": {"href": f"{path}/environments", "type": "application/json"},
            },
            "_id": digest(project),
            "key": project,
            "name": project,
            "tags": [],
            "includeInSnippetByDefault": False,
        }
        if "environments" in req.query.get("expand", "").split(","):
            doc["environments"] = {
                "_links": self_link(f"{path}/environments"),
                "totalCount": len(environments),
                "items": environments,
            }
        return Response(200, doc)

    def _environment(self, req: Request) -> Environment:
        return self.account.environment(req.params["projectKey"], req.params["environmentKey"])

    def get_environment(self, req: Request) -> Response:
        return Response(200, self._environment(req).to_json())

    def sdk_goals(self, req: Request) -> Response:
        if req.params["clientSideId"] not in self.account.by_client_side_id:
            raise ApiError(404, "not_found", "Unknown client-side ID")
        return Response(200, [])

    # ----------------------------------------------------------------------------- REST segments

    def create_segment(self, req: Request) -> Response:
        env = self._environment(req)
        doc = parse_json_object(req.body)
        key = required_string(doc, "key")
        if not SEGMENT_KEY_RE.match(key):
            raise bad(f"key must match {SEGMENT_KEY_RE.pattern}")
        name = required_string(doc, "name")
        unbounded = doc.get("unbounded", False)
        if not isinstance(unbounded, bool):
            raise bad("unbounded must be a boolean")
        context_kind: str | None = None
        if unbounded:
            context_kind = required_string(doc, "unboundedContextKind")
            check_context_kind(context_kind, "unboundedContextKind")
        elif doc.get("unboundedContextKind") is not None:
            raise bad("unboundedContextKind is only allowed when unbounded is true")
        description = doc.get("description")
        if description is not None and not isinstance(description, str):
            raise bad("description must be a string")
        tags = doc.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_RE.match(t) for t in tags):
            raise bad(f"tags must be an array of strings matching {TAG_RE.pattern}")
        address = (env.project, env.key, key)
        with self.account.lock:
            if address in self.account.segments:
                duplicate = self.ambiguities.duplicate_create
                if duplicate == "key_exists":
                    raise ApiError(409, "key_exists", "Duplicate segment key")
                if duplicate == "conflict":
                    raise ApiError(409, "conflict", "A segment with this key already exists")
                if duplicate == "bad_request":
                    raise bad("A segment with this key already exists")
            segment = self.account.new_segment(address, name, description, list(tags), unbounded, context_kind)
            return Response(201, segment.to_json())

    def list_segments(self, req: Request) -> Response:
        """`getSegments`: `limit` (default 20), `offset`, and the `filter` fields the project's tools use."""
        env = self._environment(req)
        try:
            limit, offset = query_int(req.query, "limit", 20), query_int(req.query, "offset", 0)
            matches = segment_filter(req.query.get("filter", ""))
        except FilterError as exc:
            raise bad(str(exc)) from None
        with self.account.lock:
            found = [
                seg.to_json()
                for (project, environment, _), seg in sorted(self.account.segments.items())
                if (project, environment) == (env.project, env.key) and matches(seg)
            ]
        path = f"/api/v2/segments/{quote(env.project)}/{quote(env.key)}"
        return Response(
            200, {"_links": self_link(path), "totalCount": len(found), "items": found[offset : offset + limit]}
        )

    def _segment(self, req: Request) -> Segment:
        """The request's segment (the lock is held); 404 when it, its project or environment is unknown."""
        return self.account.segment(self._environment(req), req.params["segmentKey"])

    def _big_segment(self, req: Request) -> Segment:
        segment = self._segment(req)
        if not segment.unbounded:
            raise bad("segment is not a big segment (unbounded); this operation does not support standard segments")
        return segment

    def get_segment(self, req: Request) -> Response:
        with self.account.lock:
            return Response(200, self._segment(req).to_json())

    def delete_segment(self, req: Request) -> Response:
        with self.account.lock:
            segment = self._segment(req)
            del self.account.segments[(segment.project, segment.environment, segment.key)]
        return Response(204)

    def update_contexts(self, req: Request) -> Response:
        doc = parse_json_object(req.body)
        if doc.get("included") is None and doc.get("excluded") is None:
            raise bad("included or excluded is required")
        changes: dict[str, tuple[list[str], list[str]]] = {}
        for target in ("included", "excluded"):
            section = doc.get(target)
            if section is None:
                continue
            if not isinstance(section, dict):
                raise bad(f"{target} must be an object with add and remove arrays")
            add = key_list(section, "add", target)
            remove = key_list(section, "remove", target)
            both = sorted(set(add) & set(remove))
            if both:
                # Ambiguous intent; a client that coalesces changes per context never sends this.
                raise bad(f"{target}: context key {both[0]!r} is in both add and remove")
            changes[target] = (add, remove)
        with self.account.lock:
            seg = self._big_segment(req)
            if seg.key in self._reject:
                raise bad("cohort rejected")
            for target, (add, remove) in changes.items():
                members = seg.included if target == "included" else seg.excluded
                members.update(add)
                members.difference_update(remove)
        return Response(204)

    def get_membership(self, req: Request) -> Response:
        """LaunchDarkly's `BigSegmentTarget`: its key field is `userKey` on the contexts route too."""
        context_key = req.params.get("contextKey") or req.params["userKey"]
        with self.account.lock:
            seg = self._big_segment(req)
            known = context_key in seg.included or context_key in seg.excluded
            if not known and self.ambiguities.unknown_context == "not_found":
                raise ApiError(404, "not_found", "Invalid resource identifier")
            return Response(
                200,
                {
                    "userKey": context_key,
                    "included": context_key in seg.included,
                    "excluded": context_key in seg.excluded,
                },
            )
