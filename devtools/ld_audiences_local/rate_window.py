"""LaunchDarkly's route rate limit as one pure model, shared by the local emulator (emulator.py) and the
simulation's LaunchDarkly (bench/sim_launchdarkly.py), so that both answer a request at a given time alike.

A window opens with the first request after the previous window ended (not on a clock grid: LaunchDarkly
counts from the request) and lasts `window_seconds`, 10 s by default; it takes `requests` requests, each
counted when it arrives, whatever its answer. Every answer carries `X-Ratelimit-Route-Remaining` and
`X-Ratelimit-Reset` (epoch ms of the window's end, rounded up: a client that waits for the reset must not
arrive before it); past the limit, 429 `rate_limited` with the same headers. A route that publishes no
counts (`publish_remaining=False`) puts no headers on answers and only `X-Ratelimit-Reset` on 429s.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class RouteRateLimit:
    """`requests` per window of `window_seconds` for each key (the emulator's: token and route)."""

    requests: int
    window_seconds: float = 10.0
    publish_remaining: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError("requests must be an integer >= 1")
        window = self.window_seconds
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window <= 3600:
            raise ValueError("window_seconds must be a number in (0, 3600]")

    @classmethod
    def per_second(cls, rate: float, window_seconds: float = 10.0, publish_remaining: bool = True) -> RouteRateLimit:
        """`rate` requests a second, granted as a window's worth at once (5/s: 50 per 10-s window)."""
        return cls(max(1, round(rate * window_seconds)), window_seconds, publish_remaining)


@dataclass(frozen=True, slots=True)
class Spent:
    """What one request met: allowed or refused (429), the headers its answer carries, and what it counts."""

    allowed: bool
    headers: dict[str, str]
    opened: bool  # it opened a window
    first_refusal: bool  # the first 429 of its window


class RouteWindows:
    """The open window of each key; not thread-safe (the emulator spends under its own lock)."""

    def __init__(self, limit: RouteRateLimit) -> None:
        self.limit = limit
        self._windows: dict[Hashable, tuple[float, int, bool]] = {}  # key → (end, epoch s; counted; refused)

    def spend(self, key: Hashable, now: float) -> Spent:
        limit = self.limit
        ends, used, refused = self._windows.get(key, (0.0, 0, False))
        opened = now >= ends
        if opened:
            ends, used, refused = now + limit.window_seconds, 0, False
        allowed = used < limit.requests
        first_refusal = not allowed and not refused
        if allowed:
            used += 1
        else:
            refused = True
        self._windows[key] = (ends, used, refused)
        reset = {"X-Ratelimit-Reset": str(math.ceil(ends * 1000))}
        if not limit.publish_remaining:
            headers = {} if allowed else reset
        else:
            headers = {**reset, "X-Ratelimit-Route-Remaining": str(limit.requests - used)}
        return Spent(allowed, headers, opened, first_refusal)
