"""The LaunchDarkly emulator over real HTTP: every endpoint, every error path, faults, concurrency.

Field names and shapes are LaunchDarkly's (docs/LAUNCHDARKLY.md): these tests pin them, because the
writers, `ld-audiences check` and `ld-audiences audit` are built against the emulator."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ld_audiences_local.ambiguities import Ambiguities
from ld_audiences_local.emulator import Emulator, Faults, RouteRateLimit
from ld_audiences_local.emulator_state import digest, parse_environments

TOKEN = "api-local-token"
CSID = "local-client-side-id"
SA_PATH = "/api/v2/segment-targets/segment-audiences"
SA_HEADERS = {"Authorization": TOKEN, "LD-API-Version": "20240415"}
REST = {"Authorization": TOKEN}
READER = {"Authorization": "api-reader-token"}
TIMEOUT = 5
_SEGMENT_ROUTE = "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}"
# The segment-audiences writer's client-side ID belongs to proj/prod.
ENVIRONMENTS = ("proj/prod", "proj/test", "other/prod")
SYNCED = "segment-audiences-aud_1"  # the key LaunchDarkly gives the synced segment of cohort aud_1


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(
        reject_cohorts=("aud_reject", "rejected-seg"), environments=ENVIRONMENTS, reader_tokens=("api-reader-token",)
    )
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    emulator.set_faults(Faults())
    emulator.set_rate_limit(None)
    emulator.reset()
    return emulator


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def item(user: str, value: bool = True, cohort_id: str = "aud_1", name: str = "Vip users") -> dict[str, Any]:
    return {"userId": user, "cohortName": name, "cohortId": cohort_id, "value": value}


def sa_body(*items: dict[str, Any], env: str = CSID, kind: str = "user") -> dict[str, Any]:
    return {"environmentId": env, "contextKind": kind, "batch": list(items)}


def post_sa(http: requests.Session, emu: Emulator, body: Any, headers: dict[str, str] | None = None, **kw):
    return http.post(emu.url + SA_PATH, json=body, headers=SA_HEADERS if headers is None else headers, **kw)


def create_segment(http: requests.Session, emu: Emulator, key: str = "vip", **overrides: Any):
    body = {"key": key, "name": "VIP", "unbounded": True, "unboundedContextKind": "user", **overrides}
    return http.post(f"{emu.url}/api/v2/segments/proj/prod", json=body, headers=REST, timeout=TIMEOUT)


def assert_error(resp: requests.Response, status: int, code: str, in_message: str = "") -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert in_message in body["message"]


# ----------------------------------------------------------------------------- segment-audiences


def test_segment_audiences_adds_and_removes(emu: Emulator, http: requests.Session) -> None:
    resp = post_sa(http, emu, sa_body(item("u1"), item("u2"), item("u3")))
    assert resp.status_code == 204
    assert resp.content == b""
    assert post_sa(http, emu, sa_body(item("u2", False), item("ghost", False))).status_code == 204
    assert emu.included(f"{CSID}/aud_1") == {"u1", "u3"}
    [seg] = emu.segments()
    assert seg == {
        "id": f"{CSID}/aud_1",
        "kind": "synced",
        "key": "aud_1",
        "name": "Vip users",
        "contextKind": "user",
        "environment": CSID,
        "included": ["u1", "u3"],
        "excluded": [],
        "projectKey": "proj",
        "environmentKey": "prod",
        "segmentKey": SYNCED,
    }
    assert emu.stats()["writes"] == 2


def test_segment_audiences_mixed_cohorts_go_where_the_switch_says(emu: Emulator, http: requests.Session) -> None:
    body = sa_body(item("a", cohort_id="aud_A", name="First"), item("b", cohort_id="aud_B", name="Second"))
    # The manifest's per-item cohortIdPath: each item to its own cohort (the default).
    assert post_sa(http, emu, body).status_code == 204
    assert {s["id"]: s["name"] for s in emu.segments()} == {f"{CSID}/aud_A": "First", f"{CSID}/aud_B": "Second"}
    assert (emu.included(f"{CSID}/aud_A"), emu.included(f"{CSID}/aud_B")) == ({"a"}, {"b"})
    # The validation server's key from batch[0]: everything to the first item's cohort.
    emu.reset()
    emu.ambiguities = Ambiguities(mixed_cohorts="first_item")
    assert post_sa(http, emu, body).status_code == 204
    assert [s["id"] for s in emu.segments()] == [f"{CSID}/aud_A"]
    assert emu.segments()[0]["name"] == "First"
    assert emu.included(f"{CSID}/aud_A") == {"a", "b"}


def test_segment_audiences_auth_and_version(emu: Emulator, http: requests.Session) -> None:
    body = sa_body(item("u1"))
    assert_error(post_sa(http, emu, body, headers={"LD-API-Version": "20240415"}), 403, "forbidden")
    bad_token = {"Authorization": "nope", "LD-API-Version": "20240415"}
    assert_error(post_sa(http, emu, body, headers=bad_token), 403, "forbidden")
    bearer = {"Authorization": f"Bearer {TOKEN}", "LD-API-Version": "20240415"}
    assert_error(post_sa(http, emu, body, headers=bearer), 403, "forbidden")
    assert_error(post_sa(http, emu, body, headers={"Authorization": TOKEN}), 400, "invalid_api_version")
    old = {"Authorization": TOKEN, "LD-API-Version": "20220603"}
    assert_error(post_sa(http, emu, body, headers=old), 400, "invalid_api_version")
    resp = http.post(emu.url + SA_PATH, data="{}", headers={**SA_HEADERS, "Content-Type": "text/plain"})
    assert_error(resp, 415, "unsupported_media_type")
    assert emu.segments() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"contextKind": "user", "batch": [item("u")]}, "environmentId"),
        ({"environmentId": 7, "contextKind": "user", "batch": [item("u")]}, "environmentId"),
        ({"environmentId": CSID, "batch": [item("u")]}, "contextKind"),
        ({"environmentId": CSID, "contextKind": "multi", "batch": [item("u")]}, "contextKind"),
        ({"environmentId": CSID, "contextKind": "user"}, "batch"),
        (sa_body(), "batch"),
        ({"environmentId": CSID, "contextKind": "user", "batch": {"u": 1}}, "batch"),
        (sa_body("u1"), "batch[0]"),
        (sa_body(item("u1"), {**item("u2"), "userId": ""}), "batch[1].userId"),
        (sa_body({**item("u1"), "userId": 12}), "batch[0].userId"),
        (sa_body({k: v for k, v in item("u1").items() if k != "cohortName"}), "batch[0].cohortName"),
        (sa_body({**item("u1"), "cohortId": None}), "batch[0].cohortId"),
        (sa_body({**item("u1"), "value": "true"}), "batch[0].value"),
        (sa_body({**item("u1"), "value": 1}), "batch[0].value"),
        (sa_body({k: v for k, v in item("u1").items() if k != "value"}), "batch[0].value"),
    ],
)
def test_segment_audiences_rejects_invalid_bodies(emu: Emulator, http: requests.Session, body: Any, field: str) -> None:
    assert_error(post_sa(http, emu, body), 400, "invalid_request", field)
    assert emu.segments() == []


def test_segment_audiences_invalid_json_and_non_object(emu: Emulator, http: requests.Session) -> None:
    headers = {**SA_HEADERS, "Content-Type": "application/json"}
    assert_error(http.post(emu.url + SA_PATH, data=b"{nope", headers=headers), 400, "invalid_request")
    assert_error(http.post(emu.url + SA_PATH, data=b"", headers=headers), 400, "invalid_request")
    assert_error(post_sa(http, emu, [item("u1")]), 400, "invalid_request", "object")


def test_segment_audiences_unknown_environment_and_rejected_cohort(emu: Emulator, http: requests.Session) -> None:
    resp = post_sa(http, emu, sa_body(item("u1"), env="someone-else"))
    assert_error(resp, 400, "invalid_request")
    assert resp.json()["message"] == "unknown environmentId"
    resp = post_sa(http, emu, sa_body(item("u1", cohort_id="aud_reject")))
    assert_error(resp, 400, "invalid_request")
    assert resp.json()["message"] == "cohort rejected"
    assert emu.segments() == []


def test_segment_audiences_context_kind_cannot_change(emu: Emulator, http: requests.Session) -> None:
    assert post_sa(http, emu, sa_body(item("u1"))).status_code == 204
    assert_error(post_sa(http, emu, sa_body(item("o1"), kind="organization")), 409, "conflict", "kind")
    assert emu.included(f"{CSID}/aud_1") == {"u1"}


# ----------------------------------------------------------------------------- REST segments


def test_rest_create_get_and_conflict(emu: Emulator, http: requests.Session) -> None:
    resp = create_segment(http, emu, description="big one", tags=["ld-audiences"])
    assert resp.status_code == 201
    created = resp.json()
    assert created["key"] == "vip"
    assert created["name"] == "VIP"
    assert created["unbounded"] is True
    assert created["unboundedContextKind"] == "user"
    assert isinstance(created["creationDate"], int)
    got = http.get(f"{emu.url}/api/v2/segments/proj/prod/vip", headers=REST, timeout=TIMEOUT)
    assert got.status_code == 200
    assert got.json() == created
    assert "included" not in got.json()
    assert_error(create_segment(http, emu), 409, "key_exists")
    # Same key in another environment is a different segment.
    resp = http.post(
        f"{emu.url}/api/v2/segments/proj/test",
        json={"key": "vip", "name": "VIP", "unbounded": True, "unboundedContextKind": "user"},
        headers=REST,
    )
    assert resp.status_code == 201
    assert [s["id"] for s in emu.segments()] == ["proj/prod/vip", "proj/test/vip"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "-starts-with-dash"}, "key"),
        ({"key": "has space"}, "key"),
        ({"key": "slash/inside"}, "key"),
        ({"key": ""}, "key"),
        ({"name": None}, "name"),
        ({"unbounded": "yes"}, "unbounded"),
        ({"unboundedContextKind": None}, "unboundedContextKind"),
        ({"unboundedContextKind": 3}, "unboundedContextKind"),
        ({"tags": "a"}, "tags"),
        ({"description": 5}, "description"),
    ],
)
def test_rest_create_validation(emu: Emulator, http: requests.Session, overrides: dict[str, Any], field: str) -> None:
    assert_error(create_segment(http, emu, **overrides), 400, "invalid_request", field)
    assert emu.segments() == []


def test_rest_auth_errors(emu: Emulator, http: requests.Session) -> None:
    url = f"{emu.url}/api/v2/segments/proj/prod"
    body = {"key": "vip", "name": "VIP", "unbounded": True, "unboundedContextKind": "user"}
    assert_error(http.post(url, json=body), 401, "unauthorized", "Invalid access token")
    assert_error(http.post(url, json=body, headers={"Authorization": "wrong"}), 401, "unauthorized")
    assert_error(http.get(url + "/vip"), 401, "unauthorized")
    assert_error(http.post(url + "/vip/contexts", json={"included": {"add": ["a"]}}), 401, "unauthorized")
    assert_error(http.get(url + "/vip/contexts/a"), 401, "unauthorized")
    bad_version = {**REST, "LD-API-Version": "2"}
    assert_error(http.post(url, json=body, headers=bad_version), 400, "invalid_api_version")
    assert emu.segments() == []


def test_rest_contexts_membership(emu: Emulator, http: requests.Session) -> None:
    assert create_segment(http, emu).status_code == 201
    base = f"{emu.url}/api/v2/segments/proj/prod/vip/contexts"
    resp = http.post(base, json={"included": {"add": ["a", "b", "c@x.io"]}}, headers=REST)
    assert resp.status_code == 204
    assert resp.content == b""
    resp = http.post(base, json={"included": {"add": ["d"], "remove": ["b"]}, "excluded": {"add": ["z"]}}, headers=REST)
    assert resp.status_code == 204
    assert emu.included("proj/prod/vip") == {"a", "c@x.io", "d"}
    [seg] = emu.segments()
    assert seg["kind"] == "big"
    assert seg["project"] == "proj"
    assert seg["environment"] == "prod"
    assert seg["contextKind"] == "user"
    assert seg["excluded"] == ["z"]

    member = http.get(f"{base}/c%40x.io", headers=REST).json()
    assert member == {"userKey": "c@x.io", "included": True, "excluded": False}  # LaunchDarkly's BigSegmentTarget
    # A context key with a "/" must be URL-encoded and is decoded as one path segment.
    http.post(base, json={"included": {"add": ["urn:a/b"]}}, headers=REST)
    assert http.get(f"{base}/urn%3Aa%2Fb", headers=REST).json()["included"] is True
    assert http.get(f"{base}/b", headers=REST).json() == {
        "userKey": "b",
        "included": False,
        "excluded": False,
    }
    assert http.get(f"{base}/z", headers=REST).json()["excluded"] is True


def test_rest_contexts_errors(emu: Emulator, http: requests.Session) -> None:
    base = f"{emu.url}/api/v2/segments/proj/prod"
    add = {"included": {"add": ["a"]}}
    assert_error(http.post(f"{base}/missing/contexts", json=add, headers=REST), 404, "not_found")
    assert_error(http.get(f"{base}/missing/contexts/a", headers=REST), 404, "not_found")
    assert_error(http.get(f"{base}/missing", headers=REST), 404, "not_found")

    assert create_segment(http, emu).status_code == 201
    for bad, field in [
        ({}, "included"),
        ({"included": ["a"]}, "included"),
        ({"included": {"add": "a"}}, "included.add"),
        ({"included": {"add": ["a", ""]}}, "included.add[1]"),
        ({"excluded": {"remove": [1]}}, "excluded.remove[0]"),
        ({"included": {"add": ["a"], "remove": ["a"]}}, "'a'"),
    ]:
        assert_error(http.post(f"{base}/vip/contexts", json=bad, headers=REST), 400, "invalid_request", field)

    rule_based = {"key": "rules", "name": "Rules"}
    assert http.post(base, json=rule_based, headers=REST).status_code == 201
    assert_error(http.post(f"{base}/rules/contexts", json=add, headers=REST), 400, "invalid_request", "unbounded")
    assert create_segment(http, emu, key="rejected-seg").status_code == 201
    resp = http.post(f"{base}/rejected-seg/contexts", json=add, headers=REST)
    assert_error(resp, 400, "invalid_request", "cohort rejected")
    assert all(s["included"] == [] for s in emu.segments())


# ----------------------------------------------------------------------------- projects and environments

ENVIRONMENT_FIELDS = {
    "_links",
    "_id",
    "key",
    "name",
    "apiKey",
    "mobileKey",
    "color",
    "defaultTtl",
    "secureMode",
    "defaultTrackEvents",
    "requireComments",
    "confirmChanges",
    "tags",
    "critical",
}  # the required fields of LaunchDarkly's Environment


def test_environment_and_project_reads(emu: Emulator, http: requests.Session) -> None:
    resp = http.get(f"{emu.url}/api/v2/projects/proj/environments/prod", headers=REST, timeout=TIMEOUT)
    assert resp.status_code == 200
    env = resp.json()
    assert set(env) == ENVIRONMENT_FIELDS
    assert (env["key"], env["_id"]) == ("prod", CSID)  # `_id` is the environment's client-side ID
    assert env["_links"]["self"] == {"href": "/api/v2/projects/proj/environments/prod", "type": "application/json"}

    project = http.get(f"{emu.url}/api/v2/projects/proj", headers=REST, timeout=TIMEOUT).json()
    assert {"_links", "_id", "key", "name", "tags", "includeInSnippetByDefault"} <= set(project)
    assert project["key"] == "proj" and "environments" not in project
    expanded = http.get(f"{emu.url}/api/v2/projects/proj?expand=environments", headers=REST, timeout=TIMEOUT).json()
    items = expanded["environments"]["items"]
    assert [e["key"] for e in items] == ["prod", "test"] and expanded["environments"]["totalCount"] == 2
    assert items[0] == env
    assert items[1]["_id"] != CSID  # every environment has its own client-side ID


def test_unknown_projects_and_environments_are_404(emu: Emulator, http: requests.Session) -> None:
    body = {"key": "vip", "name": "VIP", "unbounded": True, "unboundedContextKind": "user"}
    for project, env, message in (("nope", "prod", "Unknown project"), ("proj", "nope", "Unknown environment")):
        base = f"{emu.url}/api/v2/segments/{project}/{env}"
        for resp in (
            http.get(f"{emu.url}/api/v2/projects/{project}/environments/{env}", headers=REST),
            http.post(base, json=body, headers=REST),
            http.get(f"{base}/vip", headers=REST),
            http.delete(f"{base}/vip", headers=REST),
            http.post(f"{base}/vip/contexts", json={"included": {"add": ["a"]}}, headers=REST),
            http.get(f"{base}/vip/contexts/a", headers=REST),
        ):
            assert_error(resp, 404, "not_found", message)
    assert_error(http.get(f"{emu.url}/api/v2/projects/nope", headers=REST), 404, "not_found")
    # The environment exists in another project only.
    assert_error(http.get(f"{emu.url}/api/v2/projects/other/environments/test", headers=REST), 404, "not_found")
    assert_error(http.get(f"{emu.url}/api/v2/projects/proj/environments/prod"), 401, "unauthorized")
    assert emu.segments() == []


def test_environments_are_configurable_and_checked() -> None:
    assert [e.client_side_id for e in parse_environments(("p/a", "p/b"), ("a-id",))] == ["a-id", digest("p/b")]
    for environments, ids in (
        (("p",), ()),
        (("p/a/b",), ()),
        (("p/-a",), ()),
        (("p/a", "p/a"), ()),
        (("p/a",), ("x", "y")),
    ):
        with pytest.raises(ValueError):
            Emulator(client_side_ids=ids, environments=environments)


# ----------------------------------------------------------------------------- segment reads

USER_SEGMENT_FIELDS = {"_links", "creationDate", "deleted", "generation", "key", "lastModifiedDate", "name", "rules"}
USER_SEGMENT_FIELDS |= {"tags", "version"}  # the required fields of LaunchDarkly's UserSegment


def test_segment_get_has_launchdarkly_fields(emu: Emulator, http: requests.Session) -> None:
    created = create_segment(http, emu, description="big one", tags=["ld-audiences", "a.b_c-1"]).json()
    got = http.get(f"{emu.url}/api/v2/segments/proj/prod/vip", headers=REST).json()
    assert got == created
    assert set(got) >= USER_SEGMENT_FIELDS
    assert got["_links"]["self"]["href"] == "/api/v2/segments/proj/prod/vip"
    assert (got["tags"], got["description"], got["generation"], got["deleted"]) == (
        ["ld-audiences", "a.b_c-1"],
        "big one",
        1,
        False,
    )
    assert "included" not in got and "excluded" not in got  # a big segment's GET lists no members
    assert "_external" not in got
    standard = http.post(f"{emu.url}/api/v2/segments/proj/prod", json={"key": "rules", "name": "R"}, headers=REST)
    assert (standard.json()["unbounded"], standard.json()["included"], standard.json()["excluded"]) == (False, [], [])
    assert "unboundedContextKind" not in standard.json() and "description" not in standard.json()


def test_tags_follow_launchdarkly_rules(emu: Emulator, http: requests.Session) -> None:
    for bad in (["has space"], ["x" * 65], [""], ["a:b"]):
        assert_error(create_segment(http, emu, tags=bad), 400, "invalid_request", "tags")
    assert create_segment(http, emu, tags=["x" * 64]).status_code == 201


def test_synced_segments_are_read_like_big_segments(emu: Emulator, http: requests.Session) -> None:
    assert post_sa(http, emu, sa_body(item("u1"), item("u2"), kind="account")).status_code == 204
    base = f"{emu.url}/api/v2/segments/proj/prod/{SYNCED}"
    segment = http.get(base, headers=REST).json()
    assert set(segment) >= USER_SEGMENT_FIELDS
    assert (segment["key"], segment["name"], segment["unbounded"], segment["unboundedContextKind"]) == (
        SYNCED,
        "Vip users",
        True,
        "account",
    )
    assert segment["_external"] == "segment-audiences"
    for route in ("contexts", "users"):  # the context route and the older user route answer alike
        assert http.get(f"{base}/{route}/u1", headers=REST).json() == {
            "userKey": "u1",
            "included": True,
            "excluded": False,
        }
        assert http.get(f"{base}/{route}/u9", headers=REST).json()["included"] is False
    # Another environment of the same project has no such segment.
    assert_error(http.get(f"{emu.url}/api/v2/segments/proj/test/{SYNCED}", headers=REST), 404, "not_found")
    # Its members can be changed through the REST API too, as LaunchDarkly allows for big segments.
    assert http.post(f"{base}/contexts", json={"included": {"remove": ["u1"]}}, headers=REST).status_code == 204
    assert emu.included(f"{CSID}/aud_1") == {"u2"}
    # A REST segment already holding the synced segment's key is not taken over.
    emu.reset()
    assert create_segment(http, emu, key=SYNCED).status_code == 201
    assert_error(post_sa(http, emu, sa_body(item("u1"))), 409, "conflict", "not synced")


def test_membership_of_a_standard_segment_cannot_be_read(emu: Emulator, http: requests.Session) -> None:
    http.post(f"{emu.url}/api/v2/segments/proj/prod", json={"key": "rules", "name": "R"}, headers=REST)
    base = f"{emu.url}/api/v2/segments/proj/prod/rules"
    assert_error(http.get(f"{base}/contexts/a", headers=REST), 400, "invalid_request", "standard segments")


# ----------------------------------------------------------------------------- deleting behind the sync's back


def test_delete_segment_then_create_again(emu: Emulator, http: requests.Session) -> None:
    assert create_segment(http, emu).status_code == 201
    base = f"{emu.url}/api/v2/segments/proj/prod/vip"
    http.post(f"{base}/contexts", json={"included": {"add": ["a"]}}, headers=REST)
    resp = http.delete(base, headers=REST)
    assert (resp.status_code, resp.content) == (204, b"")
    assert_error(http.get(base, headers=REST), 404, "not_found")
    assert_error(http.get(f"{base}/contexts/a", headers=REST), 404, "not_found")
    assert_error(http.post(f"{base}/contexts", json={"included": {"add": ["b"]}}, headers=REST), 404, "not_found")
    assert_error(http.delete(base, headers=REST), 404, "not_found")
    assert emu.segments() == []
    again = create_segment(http, emu).json()
    assert again["generation"] == 2  # LaunchDarkly counts how many times a big segment was created
    assert http.get(f"{base}/contexts/a", headers=REST).json()["included"] is False
    assert emu.stats()["requests"][f"DELETE {_SEGMENT_ROUTE}"] == {"204": 1, "404": 1}


def test_deleted_synced_segment_comes_back_empty_on_the_next_write(emu: Emulator, http: requests.Session) -> None:
    post_sa(http, emu, sa_body(item("u1"), item("u2")))
    assert http.delete(f"{emu.url}/api/v2/segments/proj/prod/{SYNCED}", headers=REST).status_code == 204
    assert emu.included(f"{CSID}/aud_1") == set()
    post_sa(http, emu, sa_body(item("u3")))
    assert emu.included(f"{CSID}/aud_1") == {"u3"}
    assert http.get(f"{emu.url}/api/v2/segments/proj/prod/{SYNCED}", headers=REST).json()["generation"] == 2


# ----------------------------------------------------------------------------- read-only tokens


def test_a_reader_token_reads_but_cannot_write(emu: Emulator, http: requests.Session) -> None:
    post_sa(http, emu, sa_body(item("u1")))
    base = f"{emu.url}/api/v2/segments/proj/prod"
    for path in ("/api/v2/versions", "/api/v2/projects/proj", "/api/v2/projects/proj/environments/prod"):
        assert http.get(emu.url + path, headers=READER).status_code == 200
    assert http.get(f"{base}/{SYNCED}", headers=READER).status_code == 200
    assert http.get(f"{base}/{SYNCED}/contexts/u1", headers=READER).json()["included"] is True
    body = {"key": "vip", "name": "VIP", "unbounded": True, "unboundedContextKind": "user"}
    for resp in (
        http.post(base, json=body, headers=READER),
        http.post(f"{base}/{SYNCED}/contexts", json={"included": {"add": ["x"]}}, headers=READER),
        http.delete(f"{base}/{SYNCED}", headers=READER),
        post_sa(http, emu, sa_body(item("u2")), headers={**READER, "LD-API-Version": "20240415"}),
    ):
        assert_error(resp, 403, "forbidden")
    assert [(s["id"], s["included"]) for s in emu.segments()] == [(f"{CSID}/aud_1", ["u1"])]


def test_versions(emu: Emulator, http: requests.Session) -> None:
    resp = http.get(f"{emu.url}/api/v2/versions", headers=REST)
    assert resp.status_code == 200
    assert resp.json() == {
        "validVersions": [20191212, 20220603, 20240415],
        "latestVersion": 20240415,
        "currentVersion": 20240415,
        "beta": False,
    }
    assert_error(http.get(f"{emu.url}/api/v2/versions"), 401, "unauthorized")
    assert_error(http.get(f"{emu.url}/api/v2/versions", headers={"Authorization": "x"}), 401, "unauthorized")


def test_sdk_goals(emu: Emulator, http: requests.Session) -> None:
    head = http.head(f"{emu.url}/sdk/goals/{CSID}")
    assert head.status_code == 200
    assert head.content == b""
    get = http.get(f"{emu.url}/sdk/goals/{CSID}")
    assert get.status_code == 200
    assert get.json() == []
    assert http.head(f"{emu.url}/sdk/goals/unknown-id").status_code == 404
    assert_error(http.get(f"{emu.url}/sdk/goals/unknown-id"), 404, "not_found")


def test_unknown_route_and_wrong_method(emu: Emulator, http: requests.Session) -> None:
    assert_error(http.get(f"{emu.url}/api/v2/nope", headers=REST), 404, "not_found")
    assert_error(http.get(f"{emu.url}/api/v2/versions/", headers=REST), 404, "not_found")
    resp = http.get(emu.url + SA_PATH, headers=SA_HEADERS)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"
    resp = http.put(f"{emu.url}/api/v2/segments/p/e/k", json={}, headers=REST)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET, DELETE"
    stats = emu.stats()["requests"]
    assert stats["GET <unmatched>"] == {"404": 2}
    assert stats[f"GET {SA_PATH}"] == {"405": 1}


# ----------------------------------------------------------------------------- inspection endpoints


def test_inspection_endpoints(emu: Emulator, http: requests.Session) -> None:
    post_sa(http, emu, sa_body(item("u2"), item("u1")))
    create_segment(http, emu)
    segs = http.get(f"{emu.url}/emulator/segments").json()["segments"]
    assert [s["id"] for s in segs] == [f"{CSID}/aud_1", "proj/prod/vip"]
    assert segs[0]["included"] == ["u1", "u2"]

    stats = http.get(f"{emu.url}/emulator/stats").json()
    assert stats == {
        "requests": {
            f"POST {SA_PATH}": {"204": 1},
            "POST /api/v2/segments/{projectKey}/{environmentKey}": {"201": 1},
        },
        "faults": {"429": 0, "5xx": 0, "slow": 0, "drop": 0, "late": 0},
        "writes": 2,
        "rate_limit": {"windows": 0, "windows_with_429": 0, "429": 0},
        "late_applied": 0,
        "spec_violations": [],
    }

    assert http.post(f"{emu.url}/emulator/faults", json={"rate_5xx": 1, "seed": 3}).status_code == 204
    assert emu.faults.rate_5xx == 1
    assert post_sa(http, emu, sa_body(item("u9"))).status_code in (500, 502, 503)
    assert_error(http.post(f"{emu.url}/emulator/faults", json={"rate_5xx": 2}), 400, "invalid_request")
    assert_error(http.post(f"{emu.url}/emulator/faults", json={"bogus": 1}), 400, "invalid_request", "bogus")
    assert http.post(f"{emu.url}/emulator/faults", json={}).status_code == 204
    assert emu.faults == Faults()

    assert http.post(f"{emu.url}/emulator/reset").status_code == 204
    assert http.get(f"{emu.url}/emulator/segments").json() == {"segments": []}
    assert emu.stats() == {
        "requests": {},
        "faults": {"429": 0, "5xx": 0, "slow": 0, "drop": 0, "late": 0},
        "writes": 0,
        "rate_limit": {"windows": 0, "windows_with_429": 0, "429": 0},
        "late_applied": 0,
        "spec_violations": [],
    }


def test_faults_validate() -> None:
    with pytest.raises(ValueError, match="rate_429"):
        Faults(rate_429=1.5)
    with pytest.raises(ValueError, match="reset_ms"):
        Faults(reset_ms=-1)
    with pytest.raises(ValueError, match="seed"):
        Faults(seed="x")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- fault injection


def test_fault_429_headers_and_state_unchanged(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_429=1.0, reset_ms=1500, seed=7))
    saw_past = saw_future = saw_retry_after = False
    for i in range(40):
        before_ms = int(time.time() * 1000)
        resp = post_sa(http, emu, sa_body(item(f"u{i}")))
        assert_error(resp, 429, "rate_limited")
        reset = int(resp.headers["X-Ratelimit-Reset"])
        if reset < before_ms:
            saw_past = True
        else:
            saw_future = True
            assert reset >= before_ms + 1500
        if "Retry-After" in resp.headers:
            saw_retry_after = True
            assert int(resp.headers["Retry-After"]) >= 0
    assert saw_past and saw_future and saw_retry_after
    # Reads are never faulted.
    assert http.get(f"{emu.url}/api/v2/versions", headers=REST).status_code == 200
    assert emu.segments() == []
    stats = emu.stats()
    assert stats["faults"] == {"429": 40, "5xx": 0, "slow": 0, "drop": 0, "late": 0}
    assert stats["requests"][f"POST {SA_PATH}"] == {"429": 40}
    assert stats["writes"] == 0


def test_fault_5xx_before_state_change(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_5xx=1.0, seed=1))
    statuses = set()
    for i in range(20):
        resp = create_segment(http, emu, key=f"s{i}")
        statuses.add(resp.status_code)
        assert set(resp.json()) == {"code", "message"}
    assert statuses <= {500, 502, 503} and len(statuses) > 1
    assert emu.segments() == []


def test_fault_drop_closes_connection(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_drop=1.0, seed=1))
    with pytest.raises(requests.ConnectionError):
        post_sa(http, emu, sa_body(item("u1")), timeout=TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        create_segment(http, emu)
    assert emu.segments() == []
    stats = emu.stats()
    assert stats["faults"]["drop"] == 2
    assert stats["requests"][f"POST {SA_PATH}"] == {"dropped": 1}
    # The same session recovers once faults are off.
    emu.set_faults(Faults())
    assert post_sa(http, emu, sa_body(item("u1"))).status_code == 204


def test_fault_slow_applies_then_answers_late(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_slow=1.0, slow_seconds=0.4, seed=1))
    with pytest.raises(requests.Timeout):
        post_sa(http, emu, sa_body(item("u1")), timeout=0.1)
    # Applied even though the client gave up: a retry of the same write must be harmless.
    assert emu.included(f"{CSID}/aud_1") == {"u1"}
    start = time.monotonic()
    assert post_sa(http, emu, sa_body(item("u1")), timeout=TIMEOUT).status_code == 204
    assert time.monotonic() - start >= 0.35
    assert emu.included(f"{CSID}/aud_1") == {"u1"}
    assert emu.stats()["faults"]["slow"] == 2


def test_faults_are_reproducible_with_a_seed(emu: Emulator, http: requests.Session) -> None:
    faults = Faults(rate_429=0.3, rate_5xx=0.2, reset_ms=0, seed=42)

    def run() -> list[int]:
        emu.reset()
        emu.set_faults(faults)
        return [post_sa(http, emu, sa_body(item(f"u{i}"))).status_code for i in range(30)]

    first = run()
    assert first == run()
    assert {204, 429} <= set(first)
    assert set(first) & {500, 502, 503}
    stats = emu.stats()
    assert stats["faults"]["429"] == first.count(429)
    assert stats["faults"]["5xx"] == sum(s >= 500 for s in first)
    assert stats["writes"] == first.count(204)
    assert len(emu.included(f"{CSID}/aud_1")) == first.count(204)


def test_fault_late_drops_the_connection_then_applies_the_write(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_late=1.0, late_seconds=2.0, seed=1))
    with pytest.raises(requests.ConnectionError):
        post_sa(http, emu, sa_body(item("u1")), timeout=TIMEOUT)
    assert emu.included(f"{CSID}/aud_1") == set()  # nothing yet: the client saw a dropped connection
    assert wait_for(lambda: emu.stats()["late_applied"] == 1, 10)
    assert emu.included(f"{CSID}/aud_1") == {"u1"}
    stats = emu.stats()
    assert (stats["faults"]["late"], stats["writes"]) == (1, 1)
    assert stats["requests"][f"POST {SA_PATH}"] == {"dropped": 1}


def test_a_late_write_lands_over_a_newer_one(emu: Emulator, http: requests.Session) -> None:
    """What makes a late apply harmful: the newer write in between is overwritten."""
    emu.set_faults(Faults(rate_late=1.0, late_seconds=2.0, seed=1))
    with pytest.raises(requests.ConnectionError):
        post_sa(http, emu, sa_body(item("u1", True)), timeout=TIMEOUT)
    emu.set_faults(Faults())
    assert post_sa(http, emu, sa_body(item("u1", False))).status_code == 204
    assert wait_for(lambda: emu.stats()["late_applied"] == 1, 10)
    assert emu.included(f"{CSID}/aud_1") == {"u1"}


def test_late_writes_are_forgotten_by_reset(emu: Emulator, http: requests.Session) -> None:
    emu.set_faults(Faults(rate_late=1.0, late_seconds=0.5, seed=1))
    with pytest.raises(requests.ConnectionError):
        post_sa(http, emu, sa_body(item("u1")), timeout=TIMEOUT)
    emu.reset()
    emu.set_faults(Faults())
    assert post_sa(http, emu, sa_body(item("u2"))).status_code == 204  # the segment exists again
    time.sleep(1.0)
    assert emu.included(f"{CSID}/aud_1") == {"u2"}
    assert emu.stats()["late_applied"] == 0


def test_late_writes_do_not_change_the_other_faults_sequence(emu: Emulator, http: requests.Session) -> None:
    """Late writes draw from their own stream: a seed gives the other faults where it gave them before."""

    def statuses(faults: Faults) -> list[int]:
        emu.reset()
        emu.set_faults(faults)
        return [post_sa(http, emu, sa_body(item(f"u{i}"))).status_code for i in range(30)]

    assert statuses(Faults(rate_5xx=0.3, seed=5)) == statuses(Faults(rate_5xx=0.3, rate_late=0.0, seed=5))
    assert 0 < sum(s >= 500 for s in statuses(Faults(rate_5xx=0.3, seed=5))) < 30


# ----------------------------------------------------------------------------- rate limit


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def limit_headers(resp: requests.Response) -> tuple[str | None, str | None]:
    return resp.headers.get("X-Ratelimit-Route-Remaining"), resp.headers.get("X-Ratelimit-Reset")


def test_rate_limit_counts_down_then_answers_429_until_the_reset(emu: Emulator, http: requests.Session) -> None:
    emu.set_rate_limit(RouteRateLimit(requests=3, window_seconds=30))
    started_ms = time.time() * 1000
    answers = [post_sa(http, emu, sa_body(item(f"u{i}"))) for i in range(5)]
    assert [r.status_code for r in answers] == [204, 204, 204, 429, 429]
    assert [limit_headers(r)[0] for r in answers] == ["2", "1", "0", "0", "0"]
    [reset] = {limit_headers(r)[1] for r in answers}  # one window: one reset, epoch ms of its end
    assert reset is not None and started_ms + 30_000 <= int(reset) <= time.time() * 1000 + 30_000
    assert_error(answers[3], 429, "rate_limited")
    assert emu.included(f"{CSID}/aud_1") == {"u0", "u1", "u2"}  # a 429 changes nothing
    stats = emu.stats()
    assert stats["rate_limit"] == {"windows": 1, "windows_with_429": 1, "429": 2}
    assert stats["requests"][f"POST {SA_PATH}"] == {"204": 3, "429": 2}
    assert stats["faults"]["429"] == 0  # not an injected fault


def test_rate_limit_is_per_account_and_route_and_counts_every_answer(emu: Emulator, http: requests.Session) -> None:
    emu.set_rate_limit(RouteRateLimit(requests=2, window_seconds=30))
    other = {"Authorization": "api-reader-token"}
    assert limit_headers(http.get(f"{emu.url}/api/v2/versions", headers=REST))[0] == "1"
    invalid = post_sa(http, emu, {"batch": []})  # an error answer counts and carries the headers too
    assert (invalid.status_code, limit_headers(invalid)[0]) == (400, "1")
    # Another token of the same account draws on the same window ("the account is permitted to make").
    assert limit_headers(http.get(f"{emu.url}/api/v2/versions", headers=other))[0] == "0"
    assert http.get(f"{emu.url}/api/v2/versions", headers=REST).status_code == 429
    unauthorized = http.get(f"{emu.url}/api/v2/versions", headers={"Authorization": "nope"})
    assert (unauthorized.status_code, limit_headers(unauthorized)) == (401, (None, None))
    # Routes outside LaunchDarkly's API are not limited.
    for _ in range(3):
        assert http.head(f"{emu.url}/sdk/goals/{CSID}").status_code == 200
        assert http.get(f"{emu.url}/emulator/stats").status_code == 200
    assert emu.stats()["rate_limit"] == {"windows": 2, "windows_with_429": 1, "429": 1}  # one per route


def test_rate_limit_window_resets_at_the_time_it_announced(emu: Emulator, http: requests.Session) -> None:
    emu.set_rate_limit(RouteRateLimit(requests=1, window_seconds=1.5))
    first = post_sa(http, emu, sa_body(item("u1")))
    reset_ms = int(limit_headers(first)[1] or 0)
    refused = post_sa(http, emu, sa_body(item("u2")))
    assert (refused.status_code, int(limit_headers(refused)[1] or 0)) == (429, reset_ms)
    time.sleep(max(reset_ms / 1000 - time.time(), 0) + 0.01)
    again = post_sa(http, emu, sa_body(item("u3")))
    assert again.status_code == 204
    assert limit_headers(again)[0] == "0" and int(limit_headers(again)[1] or 0) > reset_ms
    assert emu.stats()["rate_limit"] == {"windows": 2, "windows_with_429": 1, "429": 1}


def test_rate_limit_without_remaining_headers(emu: Emulator, http: requests.Session) -> None:
    """A route that publishes no counts: nothing on answers, only X-Ratelimit-Reset on a 429."""
    emu.set_rate_limit(RouteRateLimit(requests=1, window_seconds=30, publish_remaining=False))
    ok = post_sa(http, emu, sa_body(item("u1")))
    assert ok.status_code == 204
    assert not [h for h in ok.headers if h.lower().startswith("x-ratelimit")]
    refused = post_sa(http, emu, sa_body(item("u2")))
    assert_error(refused, 429, "rate_limited")
    assert [h for h in refused.headers if h.lower().startswith("x-ratelimit")] == ["X-Ratelimit-Reset"]
    assert int(refused.headers["X-Ratelimit-Reset"]) > time.time() * 1000
    emu.set_rate_limit(None)
    assert post_sa(http, emu, sa_body(item("u2"))).status_code == 204


def test_rate_limit_validates() -> None:
    for bad in ({"requests": 0}, {"requests": 1.5}, {"requests": True}):
        with pytest.raises(ValueError, match="requests"):
            RouteRateLimit(**bad)  # type: ignore[arg-type]
    for window in (0, -1, 3601, "1"):
        with pytest.raises(ValueError, match="window_seconds"):
            RouteRateLimit(requests=1, window_seconds=window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="late_seconds"):
        Faults(late_seconds=-1)
    with pytest.raises(ValueError, match="rate_late"):
        Faults(rate_late=2)


# ----------------------------------------------------------------------------- concurrency, lifecycle


def test_concurrent_writes_all_land(emu: Emulator) -> None:
    assert requests.post(
        f"{emu.url}/api/v2/segments/proj/prod",
        json={"key": "big", "name": "Big", "unbounded": True, "unboundedContextKind": "user"},
        headers=REST,
        timeout=TIMEOUT,
    ).ok
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with requests.Session() as s:
                for j in range(10):
                    keys = [f"t{n}-{j}-{k}" for k in range(5)]
                    r1 = post_sa(s, emu, sa_body(*(item(k) for k in keys)), timeout=TIMEOUT)
                    r2 = s.post(
                        f"{emu.url}/api/v2/segments/proj/prod/big/contexts",
                        json={"included": {"add": keys}},
                        headers=REST,
                        timeout=TIMEOUT,
                    )
                    assert (r1.status_code, r2.status_code) == (204, 204)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {f"t{n}-{j}-{k}" for n in range(8) for j in range(10) for k in range(5)}
    assert emu.included(f"{CSID}/aud_1") == expected
    assert emu.included("proj/prod/big") == expected
    assert emu.stats()["writes"] == 1 + 2 * 8 * 10


def test_custom_credentials_and_lifecycle() -> None:
    emu = Emulator(tokens=("t1", "t2"), client_side_ids=("env-a",))
    with pytest.raises(RuntimeError):
        _ = emu.url
    url = emu.start()
    try:
        assert url == emu.url and url.startswith("http://127.0.0.1:")
        for token in ("t1", "t2"):
            assert requests.get(f"{url}/api/v2/versions", headers={"Authorization": token}).status_code == 200
        assert requests.get(f"{url}/api/v2/versions", headers=REST).status_code == 401
        assert requests.head(f"{url}/sdk/goals/env-a").status_code == 200
        assert requests.head(f"{url}/sdk/goals/{CSID}").status_code == 404
        with pytest.raises(RuntimeError):
            emu.start()
    finally:
        emu.stop()
    emu.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/v2/versions", headers={"Authorization": "t1"}, timeout=1)


def test_serve_prints_url_and_stops_on_ctrl_c() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    devtools = str(Path(__file__).resolve().parents[2] / "devtools")
    code = f"import sys; sys.path.insert(0, {devtools!r}); from ld_audiences_local.emulator import serve; serve({port})"
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`make test &`) ignores SIGINT, and a child
        # inherits that, so its Ctrl-C would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"listening on http://127.0.0.1:{port}\n"
        assert requests.head(f"http://127.0.0.1:{port}/sdk/goals/{CSID}", timeout=TIMEOUT).status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert err == ""


# ----------------------------------------------------------------------------- documented answers, switches


@pytest.mark.parametrize(
    ("duplicate", "status", "code"),
    [("key_exists", 409, "key_exists"), ("conflict", 409, "conflict"), ("bad_request", 400, "invalid_request")],
)
def test_a_duplicate_create_answers_as_the_switch_says(
    emu: Emulator, http: requests.Session, duplicate: str, status: int, code: str
) -> None:
    emu.ambiguities = Ambiguities(duplicate_create=duplicate)  # type: ignore[arg-type]
    assert create_segment(http, emu).status_code == 201
    assert_error(create_segment(http, emu, name="Other"), status, code)
    assert emu.stats()["spec_violations"] == []


def test_a_duplicate_create_can_overwrite(emu: Emulator, http: requests.Session) -> None:
    emu.ambiguities = Ambiguities(duplicate_create="overwrite")
    assert create_segment(http, emu).status_code == 201
    again = create_segment(http, emu, name="Other")
    assert (again.status_code, again.json()["name"], again.json()["generation"]) == (201, "Other", 2)


def test_a_key_never_added_reads_as_the_switch_says(emu: Emulator, http: requests.Session) -> None:
    assert create_segment(http, emu).status_code == 201
    url = f"{emu.url}/api/v2/segments/proj/prod/vip/contexts/nobody"
    assert http.get(url, headers=REST).json() == {"userKey": "nobody", "included": False, "excluded": False}
    emu.ambiguities = Ambiguities(unknown_context="not_found")
    assert_error(http.get(url, headers=REST), 404, "not_found")


def test_keys_per_request_limit_is_a_switch(emu: Emulator, http: requests.Session) -> None:
    emu.ambiguities = Ambiguities(max_keys_per_request=2)
    assert_error(post_sa(http, emu, sa_body(item("a"), item("b"), item("c"))), 400, "invalid_request", "3 context keys")
    assert post_sa(http, emu, sa_body(item("a"), item("b"))).status_code == 204
    assert create_segment(http, emu).status_code == 201
    body = {"included": {"add": ["a", "b"], "remove": ["c"]}}
    resp = http.post(f"{emu.url}/api/v2/segments/proj/prod/vip/contexts", json=body, headers=REST)
    assert_error(resp, 400, "invalid_request", "3 context keys")


def test_requests_are_checked_against_the_published_schema(emu: Emulator, http: requests.Session) -> None:
    assert_error(create_segment(http, emu, unboundedContextKind=None), 400, "invalid_request", "unboundedContextKind")
    assert_error(create_segment(http, emu, tags="x"), 400, "invalid_request", "tags")
    assert create_segment(http, emu).status_code == 201
    resp = http.post(f"{emu.url}/api/v2/segments/proj/prod/vip/contexts", json={"included": {"add": [1]}}, headers=REST)
    assert_error(resp, 400, "invalid_request", "included.add[0]")
    assert emu.stats()["spec_violations"] == []


def test_the_global_limit_is_shared_by_every_route(emu: Emulator, http: requests.Session) -> None:
    emu.set_rate_limit(RouteRateLimit(requests=5, window_seconds=30, global_requests=2))
    first = http.get(f"{emu.url}/api/v2/versions", headers=REST)
    assert (first.headers["X-Ratelimit-Route-Remaining"], first.headers["X-Ratelimit-Global-Remaining"]) == ("4", "1")
    second = http.get(f"{emu.url}/api/v2/projects/proj", headers=REST)
    assert (second.headers["X-Ratelimit-Route-Remaining"], second.headers["X-Ratelimit-Global-Remaining"]) == ("4", "0")
    refused = http.get(f"{emu.url}/api/v2/projects/proj/environments/prod", headers=REST)
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["X-Ratelimit-Global-Remaining"] == "0"


def test_segments_are_listed_with_limit_offset_and_filter(emu: Emulator, http: requests.Session) -> None:
    assert create_segment(http, emu, key="a-ours", tags=["ld-audiences"], description="synced by us").status_code == 201
    standard = {"key": "b-other", "name": "Admins", "unbounded": False}
    assert http.post(f"{emu.url}/api/v2/segments/proj/prod", json=standard, headers=REST).status_code == 201
    assert post_sa(http, emu, sa_body(item("u1"))).status_code == 204
    url = f"{emu.url}/api/v2/segments/proj/prod"

    def keys(**query: Any) -> list[str]:
        resp = http.get(url, params=query, headers=REST)
        assert resp.status_code == 200, resp.text
        return [s["key"] for s in resp.json()["items"]]

    assert keys() == ["a-ours", "b-other", SYNCED]
    assert http.get(url, params={"limit": 1, "offset": 1}, headers=REST).json()["totalCount"] == 3
    assert keys(limit=1, offset=1) == ["b-other"]
    assert keys(filter='tags anyOf ["ld-audiences", "x"]') == ["a-ours"]
    assert keys(filter='query equals "admins"') == ["b-other"]
    assert keys(filter="unbounded equals true") == ["a-ours", SYNCED]
    assert keys(filter="external exists") == [SYNCED]
    assert keys(filter='unbounded equals true,query equals "synced by"') == ["a-ours"]
    assert_error(http.get(url, params={"filter": "tags equals 1"}, headers=REST), 400, "invalid_request")
