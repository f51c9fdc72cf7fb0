"""One model of LaunchDarkly's route rate limit (devtools/ld_audiences_local/models/rate_window.py): the local
emulator and the simulation's LaunchDarkly (bench/sim_launchdarkly.py) answer the same requests at the
same times with the same statuses and headers."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import requests

from bench.sim_launchdarkly import LaunchDarklyModel, session_for
from ld_audiences_local.emulator import Emulator
from ld_audiences_local.models.rate_window import RouteRateLimit, RouteWindows

SA_PATH = "/api/v2/segment-targets/segment-audiences"
HEADERS = {"Authorization": "api-local-token", "LD-API-Version": "20240415"}


def _body(i: int) -> dict[str, object]:
    item = {"userId": f"u{i}", "cohortName": "A", "cohortId": "aud_1", "value": True}
    return {"environmentId": "local-client-side-id", "contextKind": "user", "batch": [item]}


def test_a_window_opens_with_its_first_request_not_on_a_grid() -> None:
    windows = RouteWindows(RouteRateLimit(requests=2, window_seconds=10))
    answers = [windows.spend("k", t) for t in (3.5, 4.0, 12.0, 13.5, 14.0)]
    assert [a.allowed for a in answers] == [True, True, False, True, True]
    assert [a.opened for a in answers] == [1, 0, 0, 1, 0]
    assert [a.headers["X-Ratelimit-Reset"] for a in answers] == ["13500"] * 3 + ["23500"] * 2
    assert [a.headers["X-Ratelimit-Route-Remaining"] for a in answers] == ["1", "0", "0", "1", "0"]
    assert [a.first_refusals for a in answers] == [0, 0, 1, 0, 0]


def test_five_requests_a_second_is_fifty_per_ten_second_window() -> None:
    assert RouteRateLimit.per_second(5) == RouteRateLimit(50, 10.0)


@pytest.fixture
def now() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture
def emulator(now: list[float]) -> Iterator[Emulator]:
    emu = Emulator(clock=lambda: now[0])
    emu.start()
    yield emu
    emu.stop()


@pytest.mark.parametrize("publish_remaining", [True, False])
def test_the_emulator_and_the_simulation_answer_alike(
    emulator: Emulator, now: list[float], publish_remaining: bool
) -> None:
    limit = RouteRateLimit(requests=4, window_seconds=2.5, publish_remaining=publish_remaining)
    emulator.set_rate_limit(limit)
    model = LaunchDarklyModel(clock=lambda: now[0], block=lambda seconds: None, rate_limit=limit)
    simulated = session_for(model)
    rng = random.Random(3)
    with requests.Session() as http:
        for i in range(60):
            now[0] += rng.choice([0.01, 0.3, 0.9, 2.6])
            answers = [
                session.post(url + SA_PATH, json=_body(i), headers=HEADERS, timeout=5)
                for session, url in ((http, emulator.url), (simulated, "https://app.launchdarkly.com"))
            ]
            seen = [
                (a.status_code, {k: v for k, v in a.headers.items() if k.lower().startswith("x-ratelimit")})
                for a in answers
            ]
            assert seen[0] == seen[1], (i, seen)
            if answers[0].status_code == 429:
                assert answers[0].json()["code"] == answers[1].json()["code"] == "rate_limited"
    assert emulator.stats()["rate_limit"]["429"] == model.statuses[429] > 0
    assert emulator.stats()["rate_limit"]["windows"] == model.windows
