"""The two segment writers' decisions, on a scripted LaunchDarkly client (no HTTP): what each request carries,
and when the rest writer may write a segment (only one it created for that audience and context kind)."""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from typing import Any

import pytest
import requests

from ld_audiences.launchdarkly import WriteError
from ld_audiences.retry import RetryPolicy, is_transient
from ld_audiences.writers import (
    CONTEXT_KIND_MISMATCH,
    MANAGED_TAG,
    SEGMENT_NOT_MANAGED,
    RestWriter,
    SegmentAudiencesWriter,
    Target,
)

TARGET = Target("aud_1", "beta_testers", "user")
KEY = RestWriter.segment_key(TARGET)
BASE = "/api/v2/segments/proj/prod"


def answer(status: int, body: Any = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    return response


def ours(**changes: Any) -> dict[str, Any]:
    segment = {
        "key": KEY,
        "tags": [MANAGED_TAG],
        "description": f"Synced ... {RestWriter.ownership_marker(TARGET)}",
        "unbounded": True,
        "unboundedContextKind": "user",
    }
    return {**segment, **changes}


class ScriptedClient:
    """Answers (method, path) from `answers`, a list per route taken in order; records every call."""

    def __init__(self, answers: dict[tuple[str, str], list[requests.Response | WriteError]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, Any]] = []

    def request(
        self, method: str, path: str, body: Any, *, deadline: float, expected: Collection[int] = (), **_: Any
    ) -> requests.Response:
        self.calls.append((method, path, body))
        queued = self.answers[(method, path)]
        result = queued.pop(0) if len(queued) > 1 else queued[0]
        if isinstance(result, WriteError):
            raise result
        return result


GET, CREATE, WRITE = ("GET", f"{BASE}/{KEY}"), ("POST", BASE), ("POST", f"{BASE}/{KEY}/contexts")


def rest(client: ScriptedClient) -> RestWriter:
    return RestWriter(client, "proj", "prod")  # type: ignore[arg-type]


def test_segment_audiences_sends_one_batch_named_after_the_audience() -> None:
    client = ScriptedClient({("POST", SegmentAudiencesWriter.PATH): [answer(204)]})
    writer = SegmentAudiencesWriter(client, "client-side-id")  # type: ignore[arg-type]
    assert writer.write(TARGET, ["a"], ["b"], deadline=0) is False
    [(_, _, body)] = client.calls
    assert body["environmentId"] == "client-side-id" and body["contextKind"] == "user"
    assert [(i["userId"], i["value"], i["cohortId"], i["cohortName"]) for i in body["batch"]] == [
        ("a", True, "aud_1", "Beta testers"),
        ("b", False, "aud_1", "Beta testers"),
    ]
    assert writer.write(TARGET, [], [], deadline=0) is False and len(client.calls) == 1  # nothing: no request


def test_the_rest_writer_creates_a_missing_segment_marked_as_its_own_then_writes_it() -> None:
    client = ScriptedClient({GET: [answer(404)], CREATE: [answer(201)], WRITE: [answer(204)]})
    writer = rest(client)
    writer.write(TARGET, ["a"], ["b"], deadline=0)
    assert [c[:2] for c in client.calls] == [GET, CREATE, WRITE]
    created = client.calls[1][2]
    assert (created["key"], created["unbounded"], created["unboundedContextKind"]) == (KEY, True, "user")
    assert MANAGED_TAG in created["tags"] and created["description"].endswith(RestWriter.ownership_marker(TARGET))
    assert client.calls[2][2] == {"included": {"add": ["a"], "remove": ["b"]}}
    writer.write(TARGET, ["c"], [], deadline=0)
    assert [c[:2] for c in client.calls[3:]] == [WRITE]  # known to be ours: not read again


@pytest.mark.parametrize(
    ("segment", "code"),
    [
        (ours(tags=[]), SEGMENT_NOT_MANAGED),
        (ours(description="made by hand"), SEGMENT_NOT_MANAGED),
        (ours(unbounded=False), SEGMENT_NOT_MANAGED),
        (ours(unboundedContextKind="device"), CONTEXT_KIND_MISMATCH),
    ],
)
def test_a_segment_it_did_not_create_for_this_audience_is_never_written(segment: dict[str, Any], code: str) -> None:
    client = ScriptedClient({GET: [answer(200, segment)], WRITE: [answer(204)]})
    with pytest.raises(WriteError) as refused:
        rest(client).write(TARGET, ["a"], [], deadline=0)
    assert (refused.value.permanent, refused.value.status, refused.value.code) == (True, 409, code)
    assert WRITE not in [c[:2] for c in client.calls]


def test_its_own_segment_found_by_a_new_instance_is_written() -> None:
    client = ScriptedClient({GET: [answer(200, ours())], WRITE: [answer(204)]})
    rest(client).write(TARGET, ["a"], [], deadline=0)
    assert [c[:2] for c in client.calls] == [GET, WRITE]


def test_a_create_refused_because_another_instance_made_it_reads_it_again() -> None:
    taken = WriteError(True, 409, "key_exists", "taken")
    client = ScriptedClient({GET: [answer(404), answer(200, ours())], CREATE: [taken], WRITE: [answer(204)]})
    rest(client).write(TARGET, ["a"], [], deadline=0)
    assert [c[:2] for c in client.calls] == [GET, CREATE, GET, WRITE]


def test_a_create_refused_for_a_segment_still_missing_is_permanent_and_a_failing_one_is_not_judged() -> None:
    client = ScriptedClient({GET: [answer(404)], CREATE: [WriteError(True, 400, "invalid", "no")]})
    with pytest.raises(WriteError) as refused:
        rest(client).write(TARGET, ["a"], [], deadline=0)
    assert (refused.value.permanent, refused.value.status) == (True, 400)
    for transient in (WriteError(False, 503, "down", "later"), WriteError(False, 429, "limited", "later")):
        client = ScriptedClient({GET: [answer(404)], CREATE: [transient]})
        with pytest.raises(WriteError) as raised:
            rest(client).write(TARGET, ["a"], [], deadline=0)
        assert raised.value is transient and len(client.calls) == 2


def test_a_segment_deleted_since_is_created_again_and_written_once_more() -> None:
    client = ScriptedClient(
        {GET: [answer(200, ours()), answer(404)], CREATE: [answer(201)], WRITE: [answer(404), answer(204)]}
    )
    rest(client).write(TARGET, ["a"], [], deadline=0)
    assert [c[:2] for c in client.calls] == [GET, WRITE, GET, CREATE, WRITE]
    gone = ScriptedClient({GET: [answer(200, ours()), answer(404)], CREATE: [answer(201)], WRITE: [answer(404)]})
    with pytest.raises(WriteError) as refused:
        rest(gone).write(TARGET, ["a"], [], deadline=0)
    assert (refused.value.permanent, refused.value.status) == (True, 404)


@pytest.mark.parametrize(("status", "transient"), [(400, False), (404, False), (408, True), (409, True),
                                                    (429, True), (500, True), (503, True), (401, False)])  # fmt: skip
def test_what_is_transient(status: int, transient: bool) -> None:
    assert is_transient(status) is transient


def test_backoff_is_jittered_within_a_doubling_step_up_to_its_ceiling() -> None:
    policy, rng = RetryPolicy(base_delay=0.2, max_delay=1.0), random.Random(1)
    for attempt, step in [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.0), (9, 1.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(200)]
        assert min(waits) >= 0 and max(waits) <= step and max(waits) > 0.8 * step
        limited = [policy.rate_limit_backoff(attempt, rng) for _ in range(200)]
        assert step / 2 <= min(limited) and max(limited) <= step
