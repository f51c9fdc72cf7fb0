"""LaunchDarkly's rate limits as one pure model, shared by the local emulator (emulator_rate_limit.py) and the
simulation's LaunchDarkly (bench/sim_launchdarkly.py), so that both answer a request at a given time alike.

A window opens with the first request after the previous window ended (not on a clock grid: LaunchDarkly
counts from the request) and lasts `window_seconds`, 10 s by default; it takes `requests` requests, each
counted when it arrives. LaunchDarkly counts per account ("the account is permitted to make per ten
seconds"): a window per route, and optionally a global one over every route (`global_requests`). Every
answer carries `X-Ratelimit-Route-Remaining` (and `X-Ratelimit-Global-Remaining` with a global limit) and
`X-Ratelimit-Reset` (epoch ms of the later window's end, rounded up: a client that waits for the reset must
not arrive before it); past either limit, 429 `rate_limited` with the same headers. A route that publishes
no counts (`publish_remaining=False`) puts no headers on answers and only `X-Ratelimit-Reset` on 429s.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

GLOBAL = "*"  # the global window's key


@dataclass(frozen=True)
class RouteRateLimit:
    """`requests` per window of `window_seconds` on each route; `global_requests` over all routes (None: none)."""

    requests: int
    window_seconds: float = 10.0
    publish_remaining: bool = True
    global_requests: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise ValueError("requests must be an integer >= 1")
        limit = self.global_requests
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError("global_requests must be an integer >= 1 or null")
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
    opened: int  # windows it opened
    first_refusals: int  # windows whose first 429 it was


class RouteWindows:
    """The open window of each route (and the global one); not thread-safe (the emulator spends under its
    own lock)."""

    def __init__(self, limit: RouteRateLimit) -> None:
        self.limit = limit
        self._windows: dict[Hashable, tuple[float, int, bool]] = {}  # key → (end, epoch s; counted; refused)

    def spend(self, route: Hashable, now: float) -> Spent:
        limit = self.limit
        counts = [(route, limit.requests, "X-Ratelimit-Route-Remaining")]
        if limit.global_requests is not None:
            counts.append((GLOBAL, limit.global_requests, "X-Ratelimit-Global-Remaining"))
        windows: list[tuple[float, int, bool]] = []
        opened = first_refusals = 0
        for key, _, _ in counts:
            ends, used, refused = self._windows.get(key, (0.0, 0, False))
            if now >= ends:
                ends, used, refused = now + limit.window_seconds, 0, False
                opened += 1
            windows.append((ends, used, refused))
        allowed = all(used < most for (_, most, _), (_, used, _) in zip(counts, windows, strict=True))
        for i, ((key, most, _), (ends, used, refused)) in enumerate(zip(counts, windows, strict=True)):
            if allowed:
                used += 1
            elif used >= most:
                first_refusals += not refused
                refused = True
            windows[i] = self._windows[key] = (ends, used, refused)
        reset = {"X-Ratelimit-Reset": str(math.ceil(max(ends for ends, _, _ in windows) * 1000))}
        if not limit.publish_remaining:
            return Spent(allowed, {} if allowed else reset, opened, first_refusals)
        headers = dict(reset)
        for (_, most, header), (_, used, _) in zip(counts, windows, strict=True):
            headers[header] = str(max(0, most - used))
        return Spent(allowed, headers, opened, first_refusals)
