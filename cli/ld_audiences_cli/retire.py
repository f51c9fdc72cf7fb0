"""`ld-audiences retire --delete-segment`: delete the big segment the `rest` writer made for a retired
audience, if (and only if) it is that writer's own: the same key, tag, description marker and context kind
the writer checks before it writes (`segment_lookup.rest_ownership_problem`). Synced segments belong to
LaunchDarkly's integration and are not deleted here."""

from __future__ import annotations

import time
from urllib.parse import quote

from ld_audiences.launchdarkly import LaunchDarklyClient, json_object
from ld_audiences.writers import RestWriter, Target
from ld_audiences_cli.segment_lookup import rest_ownership_problem


class NotOurs(Exception):
    """The segment at the writer's key is not this audience's: left alone."""


def delete_own_segment(client: LaunchDarklyClient, project: str, environment: str, target: Target) -> str:
    """Delete the audience's rest segment; returns what happened ("deleted KEY", "KEY does not exist")."""
    key = RestWriter.segment_key(target)
    path = f"/api/v2/segments/{quote(project, safe='')}/{quote(environment, safe='')}/{quote(key, safe='')}"
    deadline = time.time() + 60
    found = client.request("GET", path, None, deadline=deadline, expected={404})
    if found.status_code == 404:
        return f"{key} does not exist in {project}/{environment}"
    problem = rest_ownership_problem(json_object(found), target)
    if problem:
        raise NotOurs(
            f"segment {key} in {project}/{environment} was not made by ld-audiences for this audience: {problem}"
        )
    client.request("DELETE", path, None, deadline=deadline, expected={404})
    return f"deleted {key} from {project}/{environment}"
