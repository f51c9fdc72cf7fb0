"""LaunchDarkly's rate limit, shared by every sync invocation.

LaunchDarkly publishes no numbers for its limits; it asks clients to pace themselves by the headers on
every answer (DESIGN.md): `X-Ratelimit-Route-Remaining` / `X-Ratelimit-Global-Remaining` (requests left
in the current window), `X-Ratelimit-Reset` (when the window ends, epoch ms), and 429 past the limit.
Every concurrent invocation spends the same token's budget, so the window lives in one item of the state
table, and one rule (`WindowState`) decides from it:

* *take* a request before sending: one of the window's remaining requests, or, when none is left, wait
  until the reset. A window that has ended starts the next one at once with the size LaunchDarkly's
  counts showed, so invocations released by a reset do not all rush LaunchDarkly at once;
* *learn* from every answer: its window replaces an older one, the smaller count of one window wins, and
  the window's length and size are remembered. A 429 empties the window for everyone until its reset.
  Where LaunchDarkly sends no remaining count, 429s are all there is to pace by: a reset then releases
  every waiting invocation at once (BENCHMARKS.md measures what that costs).

So a 429 seen by one invocation slows all of them, and raising concurrency does not multiply 429s.
When the window item cannot be read or written, requests go out anyway: LaunchDarkly's own 429s still
pace them, only less smoothly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import state_table as t

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

REMAINING_HEADERS = ("X-Ratelimit-Route-Remaining", "X-Ratelimit-Global-Remaining")
# SQS cannot delay a message longer, and no LaunchDarkly window lasts that long.
MAX_WAIT_SECONDS = 900.0
# LaunchDarkly's route and token windows last ten seconds (DESIGN.md) until answers say otherwise.
DEFAULT_PERIOD_SECONDS = 10.0
# A request started this close to a window's end may reach LaunchDarkly after the reset and count in the
# next window, whose guess would then spend it again: it waits for the next window instead.
CLOSING_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Window:
    """What one answer said: requests left in its window (None: not said) and when the window resets."""

    remaining: int | None
    reset_at: float
    limited: bool = False  # the answer was a 429


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
        return Window(0, reset_at if reset_at is not None else now + 1.0, limited=True)
    if reset_at is None:
        return None
    return Window(min(counts) if counts else None, reset_at)


@dataclass(frozen=True, slots=True)
class WindowState:
    """The shared window: until when it runs, what is left of it, whether it is a guess (started by us when
    the last one ended) or LaunchDarkly's own, and what LaunchDarkly's counts have shown of its windows
    (their size and length)."""

    reset_at: float = 0.0
    remaining: int = 0
    guessed: bool = False
    limit: int | None = None
    period: float | None = None

    @property
    def length(self) -> float:
        """How long a window lasts, as far as answers have shown; a guess lasts this long from its start."""
        return self.period or DEFAULT_PERIOD_SECONDS

    def take(self, now: float) -> tuple[WindowState | None, float]:
        """(the state after taking one request, 0), (None, 0) to send without recording anything, or
        (None, seconds to wait) when the window has nothing left."""
        if self.reset_at > now:
            if self.remaining > 0 and now < self.reset_at - CLOSING_SECONDS:
                return replace(self, remaining=self.remaining - 1), 0.0
            return None, min(self.reset_at - now, MAX_WAIT_SECONDS)
        if self.limit is None:
            return None, 0.0  # no count seen yet: nothing to pace by but 429s
        # The window has ended: guess that the next one starts now, with the size its counts showed. The
        # guess may end later than LaunchDarkly's window, never sooner (LaunchDarkly may start a window only
        # with the first request after the last one ended): a guess that ended first would start another,
        # and spend the window twice. The first answer from it tells its real end.
        return replace(self, reset_at=now + self.length, remaining=self.limit - 1, guessed=True), 0.0

    def learn(self, window: Window) -> WindowState | None:
        """The state after an answer, or None when the answer changes nothing."""
        if window.reset_at < self.reset_at and not self.guessed:
            return None  # an answer from an earlier window
        if self.guessed and window.reset_at <= self.reset_at - self.length:
            return None  # an answer from the window before the guess, come late: it must not end the guess
        if window.remaining is None and not window.limited and self.limit is None:
            return None  # a reset without a count: nothing to pace by yet
        # A guessed window is LaunchDarkly's current one, whatever end LaunchDarkly gives it.
        same = window.reset_at == self.reset_at or self.guessed
        limit, period = self.limit, self.period
        counted = window.remaining is not None and not window.limited
        if window.remaining is not None and not window.limited:
            # The first answer of a window shows its size (remaining + 1); a count is LaunchDarkly's own.
            limit = max(limit or 0, window.remaining + 1)
        if not same and self.reset_at and (counted or self.limit is not None):
            gap = window.reset_at - self.reset_at
            period = min(period, gap) if period else gap
        if window.limited:
            remaining = 0
        elif window.remaining is None:
            remaining = self.remaining if same else (limit or 1) - 1
        else:
            remaining = min(self.remaining, window.remaining) if same else window.remaining
        learned = WindowState(window.reset_at, remaining, False, limit, period)
        return None if learned == self else learned


class RateLimit(Protocol):
    def acquire(self, now: float) -> float:
        """Take one request from the current window: 0 to send now, else seconds until the reset."""

    def learn(self, window: Window) -> None:
        """Record what an answer said about the window."""


class LocalRateLimit:
    """The same rule for one process (tests, tools): no table needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = WindowState()

    def acquire(self, now: float) -> float:
        with self._lock:
            state, wait = self._state.take(now)
            if state is not None:
                self._state = state
            return wait

    def learn(self, window: Window) -> None:
        with self._lock:
            state = self._state.learn(window)
            if state is not None:
                self._state = state


class SharedRateLimit:
    """The window in the state table (`state_table.RATE_LIMIT_KEY`), shared by every invocation: each
    change of it is a write conditioned on the version it was computed from (optimistic concurrency), so
    concurrent invocations never both spend the last request.

    The common case costs one call a request: taking from a live window is a conditional decrement, and
    an answer that says nothing this instance has not seen already is not written back.
    """

    ATTEMPTS = 5
    # After ATTEMPTS lost races in a row, a taker steps back this long and tries again (through the caller's
    # wait): many invocations are taking at the same moment.
    CONTENDED_WAIT = 0.05

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table
        self._seen = WindowState()  # the window as this instance last read or wrote it
        self.calls = 0

    def acquire(self, now: float) -> float:
        try:
            self.calls += 1
            answer = self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                UpdateExpression="SET remaining = remaining - :one, version = version + :one",
                ConditionExpression="reset_at > :soonest_reset AND remaining > :zero",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":zero": {"N": "0"},
                    ":soonest_reset": {"N": repr(now + CLOSING_SECONDS)},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.warning("rate-limit window unavailable, going ahead", extra={"error": _code(exc)})
                return 0.0
            # The window is spent, has ended, or was never seen: decide from the item as it is.
            current = _decode(exc.response.get("Item", {}))  # type: ignore[arg-type]
            return self._change(lambda state: state.take(now), contended=self.CONTENDED_WAIT, current=current)
        except BotoCoreError as exc:
            logger.warning("rate-limit window unavailable, going ahead", extra={"error": type(exc).__name__})
            return 0.0
        self._seen = _decode(answer.get("Attributes", {}))[1]
        return 0.0

    def learn(self, window: Window) -> None:
        if self._seen.learn(window) is None:
            return  # nothing this instance did not know: no write
        self._change(lambda state: (state.learn(window), 0.0), contended=0.0)

    def _change(
        self,
        rule: Callable[[WindowState], tuple[WindowState | None, float]],
        contended: float,
        current: tuple[int, WindowState] | None = None,
    ) -> float:
        try:
            version, state = current or self._read()
            for _ in range(self.ATTEMPTS):
                self._seen = state
                new, wait = rule(state)
                if new is None:
                    return wait
                conflict = self._write(version, new)
                if conflict is None:
                    self._seen = new
                    return wait
                version, state = conflict
        except (ClientError, BotoCoreError) as exc:
            logger.warning("rate-limit window unavailable, going ahead", extra={"error": type(exc).__name__})
            return 0.0
        return contended

    def _read(self) -> tuple[int, WindowState]:
        self.calls += 1
        item = self._client.get_item(TableName=self._table, Key=t.RATE_LIMIT_KEY, ConsistentRead=True).get("Item")
        return _decode(item or {})

    def _write(self, version: int, state: WindowState) -> tuple[int, WindowState] | None:
        """Write `state` if the item is still at `version`; else the item as it is now."""
        values: dict[str, Any] = {":v": {"N": str(version)}, ":next": {"N": str(version + 1)}}
        # Names through placeholders: "limit" is one of DynamoDB's reserved words.
        names = {f"#{f.name}": f.name for f in fields(WindowState)}
        assignments = ["version = :next"]
        removals = []
        for f in fields(WindowState):
            value = getattr(state, f.name)
            if value is None:
                removals.append(f"#{f.name}")
                continue
            if isinstance(value, bool):
                value = int(value)
            values[f":{f.name}"] = {"N": repr(value) if isinstance(value, float) else str(value)}
            assignments.append(f"#{f.name} = :{f.name}")
        update = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removals) if removals else "")
        try:
            self.calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(version) OR version = :v",
                ExpressionAttributeNames={name: attribute for name, attribute in names.items() if name in update},
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return _decode(exc.response.get("Item", {}))  # type: ignore[arg-type]
        return None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _decode(item: Mapping[str, Any]) -> tuple[int, WindowState]:
    def number(name: str) -> float | None:
        value = item.get(name, {}).get("N")
        return float(value) if value is not None else None

    version = int(number("version") or 0)
    values: dict[str, Any] = {}
    for f in fields(WindowState):
        value = number(f.name)
        if value is not None:
            values[f.name] = (
                value if f.name in ("reset_at", "period") else bool(value) if f.name == "guessed" else int(value)
            )
    return version, WindowState(**values)


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
