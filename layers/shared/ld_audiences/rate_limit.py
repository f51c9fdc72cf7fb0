"""LaunchDarkly's rate limit, shared by every sync invocation.

LaunchDarkly publishes no numbers for its limits; it asks clients to pace themselves by the headers on
every answer (DESIGN.md): `X-Ratelimit-Route-Remaining` / `X-Ratelimit-Global-Remaining` (requests left
in the current window) and `X-Ratelimit-Reset` (when the window ends, epoch ms), and answers 429 past
the limit. Every concurrent invocation spends the same token's budget, so the window lives in one item
of the state table: an invocation *acquires* a request from it before sending (an atomic decrement that
fails once nothing is left, and then says how long until the reset), and *learns* from every answer
(the smaller remaining count of one window wins, a later window replaces it). A 429 seen by one
invocation therefore stops all of them until the reset, and raising concurrency does not multiply 429s.

When the window item cannot be read or written, requests go out anyway: LaunchDarkly's own 429s still
pace them, only less smoothly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

REMAINING_HEADERS = ("X-Ratelimit-Route-Remaining", "X-Ratelimit-Global-Remaining")
# SQS cannot delay a message longer, and no LaunchDarkly window lasts that long.
MAX_WAIT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class Window:
    """What one answer said about the rate-limit window: requests left, and when it resets (epoch s)."""

    remaining: int
    reset_at: float


def window_from(status: int, headers: Mapping[str, str], now: float) -> Window | None:
    """The window an answer describes, or None when it says nothing usable."""
    reset_at: float | None = None
    try:
        reset_at = int(headers["X-Ratelimit-Reset"]) / 1000.0
    except (KeyError, ValueError):
        try:
            reset_at = now + float(headers["Retry-After"])
        except (KeyError, ValueError):
            reset_at = None
    counts = []
    for name in REMAINING_HEADERS:
        try:
            counts.append(int(headers[name]))
        except (KeyError, ValueError):
            continue
    if status == 429:
        # Past the limit: nothing left until the reset (one second when LaunchDarkly names no reset).
        return Window(0, reset_at if reset_at is not None else now + 1.0)
    if reset_at is None or not counts:
        return None
    return Window(min(counts), reset_at)


class RateLimit(Protocol):
    def acquire(self, now: float) -> float:
        """Take one request from the current window: 0 to send now, else seconds until the reset."""

    def learn(self, window: Window) -> None:
        """Record what an answer said about the window."""


class LocalRateLimit:
    """The same rule for one process (tests, tools): no table needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: Window | None = None

    def acquire(self, now: float) -> float:
        with self._lock:
            window = self._window
            if window is None or window.reset_at <= now:
                return 0.0
            if window.remaining > 0:
                self._window = Window(window.remaining - 1, window.reset_at)
                return 0.0
            return min(window.reset_at - now, MAX_WAIT_SECONDS)

    def learn(self, window: Window) -> None:
        with self._lock:
            if _replaces(self._window, window):
                self._window = window


def _replaces(current: Window | None, new: Window) -> bool:
    if current is None or new.reset_at > current.reset_at:
        return True
    return new.reset_at == current.reset_at and new.remaining < current.remaining


class SharedRateLimit:
    """The window in the state table (`state_table.RATE_LIMIT_KEY`), shared by every invocation."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table
        self.calls = 0

    def acquire(self, now: float) -> float:
        try:
            self.calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                # Outside a known window the count means nothing (the next answer replaces it): spend freely.
                UpdateExpression="SET remaining = if_not_exists(remaining, :zero) - :one",
                ConditionExpression="attribute_not_exists(reset_at) OR reset_at <= :now OR remaining > :zero",
                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}, ":now": {"N": f"{now:.3f}"}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.warning("rate-limit window unavailable, sending anyway", extra={"error": _code(exc)})
                return 0.0
            item: Any = exc.response.get("Item", {})
            try:
                reset_at = float(item["reset_at"]["N"])
            except (KeyError, TypeError, ValueError):
                return 0.0
            return min(max(reset_at - now, 0.0), MAX_WAIT_SECONDS)
        except BotoCoreError as exc:
            logger.warning("rate-limit window unavailable, sending anyway", extra={"error": type(exc).__name__})
        return 0.0

    def learn(self, window: Window) -> None:
        try:
            self.calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                UpdateExpression="SET remaining = :remaining, reset_at = :reset",
                ConditionExpression=(
                    "attribute_not_exists(reset_at) OR reset_at < :reset"
                    " OR (reset_at = :reset AND remaining > :remaining)"
                ),
                ExpressionAttributeValues={
                    ":remaining": {"N": str(window.remaining)},
                    ":reset": {"N": f"{window.reset_at:.3f}"},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.warning("could not share the rate-limit window", extra={"error": _code(exc)})
        except BotoCoreError as exc:
            logger.warning("could not share the rate-limit window", extra={"error": type(exc).__name__})


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def wait_for_window(
    rate_limit: RateLimit,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float],
    latest_start: float,
    max_wait: float,
) -> float | None:
    """Wait until `rate_limit` lets one request go. None when it may go; the seconds left to wait when
    the window resets after `latest_start` or more than `max_wait` from now (the caller gives up and
    retries later)."""
    while True:
        now = clock()
        wait = rate_limit.acquire(now)
        if wait <= 0:
            return None
        # Jitter: invocations released by one reset should not all arrive in its first millisecond.
        wait += jitter()
        if wait > max_wait or now + wait > latest_start:
            return wait
        sleep(wait)
