"""LaunchDarkly's documented contract, read from the excerpts kept in docs/launchdarkly/: the emulator checks
each request body against its operation's schema and each of its own answers against the documented
statuses and bodies, so neither the product nor the emulator can drift from what LaunchDarkly publishes."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator

DOCS = Path(__file__).resolve().parents[2] / "docs" / "launchdarkly"
OPENAPI = DOCS / "openapi-excerpt.yaml"
# Not in the OpenAPI: what LaunchDarkly's segment-audiences manifest parses (docs/launchdarkly/README.md).
SEGMENT_AUDIENCES_SCHEMA = DOCS / "segment-audiences-request.schema.json"
SEGMENT_AUDIENCES = "segmentAudiences"
# The statuses the synced-segments capability page lists for the integration endpoint.
SEGMENT_AUDIENCES_STATUSES = frozenset({204, 400, 403, 409, 429})
# Answers the API overview documents for every route (authentication, permission, rate limits), and the
# emulator's transport-level refusals of requests the product never sends.
API_WIDE_STATUSES = frozenset({401, 403, 429, 405, 411, 413, 415, 500, 502, 503})


@functools.cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return loaded


@functools.cache
def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec()["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }


def operation(method: str, template: str) -> dict[str, Any] | None:
    """The OpenAPI operation for a route template such as `/api/v2/segments/{projectKey}/{environmentKey}`."""
    return _operations().get((method.upper(), template))


@functools.cache
def _validator(ref: str) -> OAS30Validator:
    # The components travel with the schema so that its "#/components/..." references resolve offline.
    return OAS30Validator({"allOf": [{"$ref": ref}], "components": spec()["components"]})


@functools.cache
def _segment_audiences_validator() -> OAS30Validator:
    return OAS30Validator(json.loads(SEGMENT_AUDIENCES_SCHEMA.read_text()))


def _problem(validator: OAS30Validator, document: Any) -> str | None:
    error = best_match(validator.iter_errors(document))
    if error is None:
        return None
    path = list(error.absolute_path)
    if error.validator == "required":  # reported at the object: name the missing property itself
        path.append(error.message.split("'")[1])
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{where or 'body'}: {error.message}"[:300]


def request_problem(method: str, template: str, body: Any) -> str | None:
    """Why the request body does not match its documented schema; None when it does (or has none)."""
    if template.endswith("/segment-targets/segment-audiences"):
        return _problem(_segment_audiences_validator(), body)
    op = operation(method, template)
    content = ((op or {}).get("requestBody") or {}).get("content", {}).get("application/json")
    if not content:
        return None
    return _problem(_validator(content["schema"]["$ref"]), body)


def documented_statuses(method: str, template: str) -> frozenset[int] | None:
    if template.endswith("/segment-targets/segment-audiences"):
        return SEGMENT_AUDIENCES_STATUSES
    op = operation(method, template)
    return None if op is None else frozenset(int(s) for s in op["responses"])


def response_problem(method: str, template: str, status: int, body: Any) -> str | None:
    """Why an answer is not one LaunchDarkly documents for this operation: its status, or its body's schema."""
    statuses = documented_statuses(method, template)
    if statuses is None:
        return None
    if status not in statuses:
        return None if status in API_WIDE_STATUSES else f"status {status} is not documented"
    op = operation(method, template)
    if op is None or body is None:
        return None
    content = op["responses"][str(status)].get("content", {}).get("application/json")
    if not content or "$ref" not in content.get("schema", {}):
        return None
    problem = _problem(_validator(content["schema"]["$ref"]), body)
    return None if problem is None else f"status {status} {problem}"
