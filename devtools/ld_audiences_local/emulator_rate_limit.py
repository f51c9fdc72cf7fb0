"""The LaunchDarkly emulator's account rate limit: rate_window.py's model (the one the simulation's LaunchDarkly
uses too) behind a lock, with the counts `GET /emulator/stats` reports."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ld_audiences_local.emulator_requests import ApiError
from ld_audiences_local.models.rate_window import RouteRateLimit, RouteWindows

# What the rate limit counts over every token and route: windows opened, those that answered a 429, 429s.
LIMIT_COUNTS = ("windows", "windows_with_429", "429")


class AccountRateLimit:
    """Every token of the emulator is one account, as LaunchDarkly counts ("the account is permitted to make
    per ten seconds"). `clock` is the windows' (the simulation's tests drive it)."""

    def __init__(self, limit: RouteRateLimit | None, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._windows = RouteWindows(limit) if limit is not None else None
        self._counts = dict.fromkeys(LIMIT_COUNTS, 0)

    def set_limit(self, limit: RouteRateLimit | None) -> None:
        """The limit from now on (None: unlimited); windows start afresh."""
        with self._lock:
            self._windows = RouteWindows(limit) if limit is not None else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget the windows and the counts; the limit stays."""
        with self._lock:
            self._counts = dict.fromkeys(LIMIT_COUNTS, 0)
            if self._windows is not None:
                self._windows = RouteWindows(self._windows.limit)

    def spend(self, route: str) -> dict[str, str]:
        """Count a request in its route's window and the global one: the headers its answer carries, or
        ApiError 429 past either limit."""
        with self._lock:
            if self._windows is None:
                return {}
            spent = self._windows.spend(route, self._clock())
            self._counts["windows"] += spent.opened
            self._counts["429"] += not spent.allowed
            self._counts["windows_with_429"] += spent.first_refusals
        if not spent.allowed:
            raise ApiError(429, "rate_limited", "Rate limit exceeded", spent.headers)
        return spent.headers
