"""The writers against LaunchDarkly's behaviour (the emulator over real HTTP): which segment the rest writer
writes, that it never writes a segment it does not own, and that LaunchDarkly's error text never carries
the context keys of the request."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError
from ld_audiences.retry import RetryPolicy
from ld_audiences.writers import RestWriter, SegmentAudiencesWriter, Target
from ld_audiences_local.emulator import Emulator
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN
from tests.recording_server import RecordingServer, Scripted

PROJECT, ENVIRONMENT = "default", "production"
SEGMENTS = f"/api/v2/segments/{PROJECT}/{ENVIRONMENT}"
BETA = Target("aud_beta", "beta_testers", "user")
KEY_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def deadline() -> float:
    return time.time() + 20


@pytest.fixture
def emulator(emulator_every_answer: Emulator) -> Emulator:
    """Every test here runs under each answer LaunchDarkly's documentation leaves open."""
    return emulator_every_answer


@pytest.fixture
def client(emulator: Emulator) -> LaunchDarklyClient:
    return LaunchDarklyClient(emulator.url, LD_TOKEN, policy=RetryPolicy(base_delay=0.01, max_delay=0.05))


@pytest.fixture
def writer(client: LaunchDarklyClient) -> RestWriter:
    return RestWriter(client, PROJECT, ENVIRONMENT)


@pytest.fixture
def http(emulator: Emulator) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = LD_TOKEN
        yield session


def segment(http: requests.Session, emulator: Emulator, key: str) -> dict[str, Any]:
    response = http.get(f"{emulator.url}{SEGMENTS}/{key}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def members(emulator: Emulator, key: str) -> set[str]:
    return emulator.included(f"{PROJECT}/{ENVIRONMENT}/{key}")


# ----------------------------------------------------------------------------------------- segment keys


@pytest.mark.parametrize(
    "targets",
    [
        # Keys that the old rule (invalid characters → "-") sent to one segment.
        [Target(f"aud_{i}", key, "user") for i, key in enumerate(["beta testers", "beta-testers", "beta/testers"])],
        [Target("aud_1", "_x", "user"), Target("aud_2", "a_x", "user")],
        # One audience key in two Engage spaces (two audience ids), one audience for two context kinds.
        [Target("aud_space1", "vip", "user"), Target("aud_space2", "vip", "user"), Target("aud_space1", "vip", "org")],
    ],
)
def test_segment_keys_are_unique_per_audience_id_and_context_kind(targets: list[Target]) -> None:
    keys = [RestWriter.segment_key(t) for t in targets]
    assert len(set(keys)) == len(keys), keys


@pytest.mark.parametrize(
    "target",
    [
        BETA,
        Target("aud_1", "?" * 300, "user"),
        Target("aud_1", "x" * 1000, "device.kind_with-every-allowed.character-and-a-long-name"),
        Target("aud_1", "é", "user"),
    ],
)
def test_segment_keys_are_readable_stable_and_within_launchdarkly_rules(target: Target) -> None:
    key = RestWriter.segment_key(target)
    assert KEY_RULE.match(key) and len(key) <= 86, key
    assert key == RestWriter.segment_key(Target(target.audience_id, target.audience_key, target.context_kind))
    assert RestWriter.segment_key(BETA).startswith("beta_testers-user-")


# ----------------------------------------------------------------------------------------- creating and owning


def test_creates_a_marked_big_segment_then_writes_it(
    writer: RestWriter, emulator: Emulator, http: requests.Session
) -> None:
    writer.write(BETA, ["u1", "u2"], [], deadline())
    key = RestWriter.segment_key(BETA)
    created = segment(http, emulator, key)
    assert (created["name"], created["unbounded"], created["unboundedContextKind"]) == ("Beta testers", True, "user")
    assert created["tags"] == ["ld-audiences"]
    assert "aud_beta" in created["description"] and created["description"].endswith(RestWriter.ownership_marker(BETA))
    # Another instance (a new Lambda) finds the segment at the key, reads it, sees it is its own and writes.
    RestWriter(writer._client, PROJECT, ENVIRONMENT).write(BETA, ["u3"], ["u1"], deadline())
    assert members(emulator, key) == {"u2", "u3"}


def test_a_segment_deleted_in_launchdarkly_is_created_again(
    writer: RestWriter, emulator: Emulator, http: requests.Session
) -> None:
    writer.write(BETA, ["u1"], [], deadline())
    key = RestWriter.segment_key(BETA)
    assert http.delete(f"{emulator.url}{SEGMENTS}/{key}").status_code == 204
    writer.write(BETA, ["u2"], [], deadline())
    assert members(emulator, key) == {"u2"}
    assert segment(http, emulator, key)["generation"] == 2


def take_the_key(http: requests.Session, emulator: Emulator, **overrides: Any) -> str:
    """Someone else creates a segment at the key ld-audiences would use."""
    key = RestWriter.segment_key(BETA)
    body = {"key": key, "name": "Internal admins", "unbounded": True, "unboundedContextKind": "user", **overrides}
    body = {name: value for name, value in body.items() if value is not None}  # the schema has no nulls
    assert http.post(f"{emulator.url}{SEGMENTS}", json=body).status_code == 201
    if body["unbounded"]:
        assert http.post(f"{emulator.url}{SEGMENTS}/{key}/contexts", json={"included": {"add": ["alice-admin"]}}).ok
    return key


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, "segment_not_managed"),  # made by hand: no tag, no marker
        ({"tags": ["ld-audiences"]}, "segment_not_managed"),  # the tag alone is not enough
        ({"description": RestWriter.ownership_marker(BETA)}, "segment_not_managed"),  # nor the marker alone
        (
            {"tags": ["ld-audiences"], "description": RestWriter.ownership_marker(Target("aud_other", "x", "user"))},
            "segment_not_managed",
        ),
        (
            {
                "tags": ["ld-audiences"],
                "description": RestWriter.ownership_marker(BETA),
                "unbounded": False,
                "unboundedContextKind": None,
            },
            "segment_not_managed",
        ),
        (
            {"tags": ["ld-audiences"], "description": RestWriter.ownership_marker(BETA), "unboundedContextKind": "org"},
            "context_kind_mismatch",
        ),
    ],
)
def test_a_segment_it_does_not_own_is_never_written(
    writer: RestWriter,
    emulator: Emulator,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    code: str,
) -> None:
    key = take_the_key(http, emulator, **overrides)
    before = members(emulator, key)
    with caplog.at_level(logging.ERROR, logger="ld_audiences.writers"), pytest.raises(WriteError) as caught:
        writer.write(BETA, ["mallory"], ["alice-admin"], deadline())
    assert (caught.value.permanent, caught.value.code) == (True, code)
    assert key in caught.value.message and "mallory" not in caught.value.message
    assert members(emulator, key) == before  # nothing written
    (record,) = caplog.records
    assert record.levelname == "ERROR" and record.segment_key == key and record.ld_code == code  # type: ignore[attr-defined]
    assert "ld-audiences redrive" in record.getMessage() and "mallory" not in record.getMessage()
    # Every later write is refused too: ownership is not cached after a refusal.
    with pytest.raises(WriteError):
        writer.write(BETA, ["mallory"], [], deadline())
    assert members(emulator, key) == before


def test_unknown_project_or_environment_fails_permanently(client: LaunchDarklyClient, emulator: Emulator) -> None:
    for project, environment in (("no-such-project", "production"), ("default", "no-such-environment")):
        with pytest.raises(WriteError) as caught:
            RestWriter(client, project, environment).write(BETA, ["u1"], [], deadline())
        assert (caught.value.permanent, caught.value.status, caught.value.code) == (True, 404, "not_found")
    assert emulator.segments() == []


# ----------------------------------------------------------------------------------------- scrubbed errors


KEYS = ["user-7781", 'quote"d-ü', "c/d", "alice@example.com"]


def echoing_server() -> RecordingServer:
    """LaunchDarkly refusing a write and quoting its context keys back, raw, JSON- and URL-escaped."""

    def respond(request: Any) -> Scripted:
        if not request.path.endswith(("/contexts", "segment-audiences")):  # the rest writer's read, then create
            if request.method == "GET":
                return Scripted(404, body={"code": "not_found", "message": "Invalid resource identifier"})
            return Scripted(201, body={})
        message = r"invalid keys: user-7781, quote\"d-\u00fc, c%2Fd, alice@example.com and user-77810"
        return Scripted(400, body={"code": "invalid_request", "message": message})

    return RecordingServer(respond=respond)


@pytest.mark.parametrize(
    "make_writer", [lambda c: SegmentAudiencesWriter(c, CLIENT_SIDE_ID), lambda c: RestWriter(c, "p", "e")]
)
def test_launchdarkly_error_text_never_carries_the_requests_context_keys(make_writer: Any) -> None:
    server = echoing_server()
    try:
        writer = make_writer(LaunchDarklyClient(server.url, LD_TOKEN))
        with pytest.raises(WriteError) as caught:
            writer.write(BETA, KEYS[:2], KEYS[2:], deadline())
    finally:
        server.close()
    text = str(caught.value) + caught.value.message
    for key in [*KEYS, '\\"d', "c%2Fd", "7781"]:
        assert key not in text, text
    assert caught.value.message.startswith("invalid keys: <context key>, <context key>, <context key>, <")
    assert caught.value.message.endswith("<context key>0")  # a longer text around a key keeps the rest


# ----------------------------------------------------------------------------------------- ownership by reading


def test_a_new_execution_environment_finds_its_segment_by_reading(
    client: LaunchDarklyClient, emulator: Emulator
) -> None:
    """Another instance (a new Lambda execution environment) has no `_ours` cache: whatever LaunchDarkly answers
    to a duplicate create, it reads the segment, finds it its own and writes without creating it again."""
    assert RestWriter(client, PROJECT, ENVIRONMENT).write(BETA, ["u1"], [], deadline()) is False
    assert RestWriter(client, PROJECT, ENVIRONMENT).write(BETA, ["u2"], [], deadline()) is False
    key = RestWriter.segment_key(BETA)
    assert members(emulator, key) == {"u1", "u2"}
    creates = emulator.stats()["requests"]["POST /api/v2/segments/{projectKey}/{environmentKey}"]
    assert creates == {"201": 1}


def test_a_create_refused_because_another_instance_won_the_race_goes_on(
    client: LaunchDarklyClient, emulator: Emulator, http: requests.Session
) -> None:
    """The segment appears between the writer's read and its create: the refusal (whatever its status) is judged
    by reading again; with `overwrite` the create itself succeeds."""
    writer = RestWriter(client, PROJECT, ENVIRONMENT)
    original = client.request

    def racing(method: str, path: str, body: Any, **kwargs: Any) -> requests.Response:
        if method == "POST" and path == SEGMENTS:
            rival = RestWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), PROJECT, ENVIRONMENT)
            assert rival.write(BETA, ["rival"], [], deadline()) is False
        return original(method, path, body, **kwargs)

    client.request = racing  # type: ignore[method-assign]
    assert writer.write(BETA, ["u1"], [], deadline()) is False
    assert members(emulator, RestWriter.segment_key(BETA)) >= {"u1"}


def test_a_refused_create_of_a_segment_that_still_does_not_exist_is_permanent(client: LaunchDarklyClient) -> None:
    writer = RestWriter(client, PROJECT, ENVIRONMENT)
    bad = Target("aud_x", "x", "multi")  # a reserved context kind: LaunchDarkly refuses the create
    with pytest.raises(WriteError) as caught:
        writer.write(bad, ["u1"], [], deadline())
    assert (caught.value.permanent, caught.value.status) == (True, 400)
