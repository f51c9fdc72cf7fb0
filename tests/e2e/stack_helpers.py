"""What the time and rate-limit tests on the local stack share: Engage traffic with its ground truth,
posting it, and reading the emulator's segments."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import requests

from ld_audiences_local.stack import LocalStack
from tests.segment_events import engage_event

SECRET = "time-webhook-secret"
ENTERED = "2026-11-20T10:00:00.000000000Z"
EXITED = "2026-11-20T11:00:00.000000000Z"  # later: wins over the entry


def audience_id(index: int) -> str:
    return f"aud_time_{index:03d}"


def traffic(audiences: int, users: int, *, seed: int = 1) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Every user enters every audience; every third leaves it again, later. Shuffled, so an exit can
    arrive before its entry. Returns the events and the members each audience must end with."""
    events: list[dict[str, Any]] = []
    expected: dict[str, set[str]] = {}
    for a in range(audiences):
        audience = audience_id(a)
        expected[audience] = set()
        for u in range(users):
            user = f"user-{u:04d}"
            common = {"audience_id": audience, "audience_key": f"time_{a:03d}", "user_id": user}
            events.append(engage_event(**common, timestamp=ENTERED))
            if u % 3 == 0:
                events.append(engage_event(**common, value=False, timestamp=EXITED))
            else:
                expected[audience].add(user)
    random.Random(seed).shuffle(events)
    return events, expected


def post_events(stack: LocalStack, events: list[dict[str, Any]], per_request: int = 500) -> None:
    """Post as Segment does (JSON arrays, Bearer secret); every event must be accepted."""
    with requests.Session() as session:
        for start in range(0, len(events), per_request):
            part = events[start : start + per_request]
            response = session.post(
                f"{stack.url}/events", json=part, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
            )
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(part), response.text


def segments(stack: LocalStack) -> dict[str, set[str]]:
    """Members of every synced segment of the stack's environment, by audience id."""
    assert stack.emulator is not None
    return {
        str(s["key"]): set(s["included"]) for s in stack.emulator.segments() if s["environment"] == stack.client_side_id
    }


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until it holds; returns when (epoch seconds). AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)
    return time.time()
