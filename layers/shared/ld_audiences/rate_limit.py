"""LaunchDarkly's rate limits, shared by every sync invocation.

LaunchDarkly publishes no numbers for its limits; it asks clients to pace themselves by the headers on
every answer (docs/DESIGN.md). A request counts against two limits, each with its own count of requests left
in the current window: its route's (`X-Ratelimit-Route-Remaining`) and the account's global one
(`X-Ratelimit-Global-Remaining`); `X-Ratelimit-Reset` says when the window ends (epoch ms), and a 429 past
the limit may add `Retry-After` (seconds). Every concurrent invocation spends the same token's budget, so
the two windows live in one item of the state table, and one rule (`WindowState`, for each of them, and
`Pacing`, for both) decides from it:

* *take* a request before sending: one of each window's remaining requests, or, when either has none
  left, wait until the later reset. A window that has ended starts the next one at once with the size
  LaunchDarkly's counts showed, so invocations released by a reset do not all rush LaunchDarkly at once;
* *learn* from every answer: each window from its own count. A window replaces an older one, the smaller
  count of one window wins, and the window's length and size are remembered. A 429 empties the window
  it names (both when it names neither) for everyone until the later of its reset and `Retry-After`.
  Where LaunchDarkly sends no remaining count, 429s are all there is to pace by: a reset then releases
  every waiting invocation at once (BENCHMARKS.md measures what that costs).

So a 429 seen by one invocation slows all of them, and raising concurrency does not multiply 429s.
Nothing read from a header or from the item is obeyed beyond MAX_WINDOW_SECONDS: a reset further away,
or one that is no number, is no window of LaunchDarkly's, and the next request finds out the real one.
When the window item cannot be read or written, requests go out anyway: LaunchDarkly's own 429s still
pace them, only less smoothly.
"""

from __future__ import annotations

import logging
import math
import re
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

ROUTE, ACCOUNT = "route", "account"
# The limits a request counts against, each with the header that counts it: LaunchDarkly's global limit is
# the account's.
REMAINING_HEADERS = {ROUTE: "X-Ratelimit-Route-Remaining", ACCOUNT: "X-Ratelimit-Global-Remaining"}
SCOPES = tuple(REMAINING_HEADERS)
# LaunchDarkly's windows last ten seconds: a reset further than this from now is a misread unit (seconds,
# microseconds) or a corrupt record, and obeying it would stall every invocation. A longer `Retry-After`
# is waited this long, then one request finds out whether the limit still holds.
MAX_WINDOW_SECONDS = 60.0
# LaunchDarkly's route and token windows last ten seconds (docs/DESIGN.md) until answers say otherwise.
DEFAULT_PERIOD_SECONDS = 10.0
# A request started this close to a window's end may reach LaunchDarkly after the reset and count in the
# next window, whose guess would then spend it again: it waits for the next window instead.
CLOSING_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Window:
    """What one answer said of one limit (`scope`, None: every limit): requests left in its window (None:
    not said) and when the window resets."""

    remaining: int | None
    reset_at: float
    limited: bool = False  # the answer was a 429
    scope: str | None = None


def window_from(status: int, headers: Mapping[str, str], now: float) -> tuple[Window, ...]:
    """The windows an answer describes, one for each limit it counts; none when it says nothing usable,
    as from a 429 that names no usable time to wait (its caller backs off)."""
    reset_at = _number(headers.get("X-Ratelimit-Reset"))
    if reset_at is not None:
        reset_at /= 1000.0
        if abs(reset_at - now) > MAX_WINDOW_SECONDS:
            reset_at = None
    counts = {scope: _count(headers.get(name)) for scope, name in REMAINING_HEADERS.items()}
    if status == 429:
        # LaunchDarkly asks for at least Retry-After, and the window is spent until its reset: the later.
        retry_after = _number(headers.get("Retry-After"))
        ends = [reset_at or 0.0]
        if retry_after is not None and retry_after > 0:
            ends.append(now + min(retry_after, MAX_WINDOW_SECONDS))
        until = max(ends)
        if until <= now:
            return ()
        spent: list[str | None] = [scope for scope, count in counts.items() if count == 0] or [None]
        return tuple(Window(0, until, limited=True, scope=scope) for scope in spent)
    if reset_at is None:
        return ()
    return tuple(Window(count, reset_at, scope=scope) for scope, count in counts.items() if count is not None)


def _number(text: str | None) -> float | None:
    """A header's value as a finite number; None when absent or no number (garbage, NaN, infinite)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _count(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if value is not None and value >= 0 else None


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit's shared window: until when it runs, what is left of it, whether it is a guess (started by
    us when the last one ended) or LaunchDarkly's own, and what LaunchDarkly's counts have shown of its
    windows (their size and length)."""

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
        if self.reset_at > now + MAX_WINDOW_SECONDS:
            # No window of LaunchDarkly's ends this far ahead: a corrupt record, forgotten (and so rewritten)
            # rather than obeyed. The first answer tells the real window.
            forgotten = replace(self, reset_at=0.0, remaining=0, guessed=False)
            state, wait = forgotten.take(now)
            return state or forgotten, wait
        if self.reset_at > now:
            if self.remaining > 0 and now < self.reset_at - CLOSING_SECONDS:
                return replace(self, remaining=self.remaining - 1), 0.0
            return None, self.reset_at - now
        if self.limit is None:
            return None, 0.0  # no count seen yet: nothing to pace by but 429s
        # The window has ended: guess that the next one starts now, with the size its counts showed. The
        # guess may end later than LaunchDarkly's window, never sooner (LaunchDarkly may start a window only
        # with the first request after the last one ended): a guess that ended first would start another,
        # and spend the window twice. The first answer from it tells its real end.
        return replace(self, reset_at=now + self.length, remaining=self.limit - 1, guessed=True), 0.0

    def learn(self, window: Window) -> WindowState | None:
        """The state after an answer, or None when the answer changes nothing."""
        # Windows a known one ends more than MAX_WINDOW_SECONDS after are no earlier windows of
        # LaunchDarkly's: that known end is corrupt, and the answer replaces it.
        ahead = self.reset_at - window.reset_at
        if 0 < ahead <= MAX_WINDOW_SECONDS:
            if not self.guessed:
                return None  # an answer from an earlier window
            if ahead >= self.length:
                return None  # an answer from the window before the guess, come late: it must not end the guess
        if window.remaining is None and not window.limited and self.limit is None:
            return None  # a reset without a count: nothing to pace by yet
        # A guessed window is LaunchDarkly's current one, whatever end LaunchDarkly gives it.
        same = window.reset_at == self.reset_at or self.guessed
        limit, period = self.limit, self.period
        counted = window.remaining is not None and not window.limited
        if counted:
            # The first answer of a window shows its size (remaining + 1); a count is LaunchDarkly's own.
            limit = max(limit or 0, (window.remaining or 0) + 1)
        gap = window.reset_at - self.reset_at
        if not same and self.reset_at and (counted or self.limit is not None) and 0 < gap <= MAX_WINDOW_SECONDS:
            period = min(period, gap) if period else gap
        if window.limited:
            remaining = 0
        elif window.remaining is None:
            remaining = self.remaining if same else (limit or 1) - 1
        else:
            remaining = min(self.remaining, window.remaining) if same else window.remaining
        learned = WindowState(window.reset_at, remaining, False, limit, period)
        return None if learned == self else learned


@dataclass(frozen=True, slots=True)
class Pacing:
    """Both windows a request counts against: it goes when both let it, and takes from both."""

    route: WindowState = WindowState()
    account: WindowState = WindowState()

    def take(self, now: float) -> tuple[Pacing | None, float]:
        """As `WindowState.take`, for both windows: the wait is the later of theirs, and a request that
        waits takes from neither."""
        taken = {scope: getattr(self, scope).take(now) for scope in SCOPES}
        wait = max(wait for _, wait in taken.values())
        if wait > 0:
            return None, wait
        changed = {scope: state for scope, (state, _) in taken.items() if state is not None}
        return (replace(self, **changed) if changed else None), 0.0

    def learn(self, window: Window) -> Pacing | None:
        """The state after an answer about `window.scope` (every window when None), or None when it
        changes nothing."""
        scopes = (window.scope,) if window.scope else SCOPES
        changed = {scope: state for scope in scopes if (state := getattr(self, scope).learn(window)) is not None}
        return replace(self, **changed) if changed else None


class RateLimit(Protocol):
    def acquire(self, now: float) -> float:
        """Take one request from the current window: 0 to send now, else seconds until the reset."""

    def learn(self, window: Window) -> None:
        """Record what an answer said about the window."""


class LocalRateLimit:
    """The same rule for one process (tests, tools): no table needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = Pacing()

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


# Where each window lives in the item: the route's under the names it had when it was the only one.
_PREFIXES = {ROUTE: "", ACCOUNT: "account_"}


class SharedRateLimit:
    """The windows in the state table (`state_table.RATE_LIMIT_KEY`), shared by every invocation: each
    change of them is a write conditioned on the version it was computed from (optimistic concurrency), so
    concurrent invocations never both spend the last request.

    The common case costs one call a request: taking from live windows is a conditional decrement, and
    an answer that says nothing this instance has not seen already is not written back. An item no write
    of ours would leave (wrong types, negative counts, impossible lengths) is ignored and rewritten.
    """

    ATTEMPTS = 5
    # After ATTEMPTS lost races in a row, a taker steps back this long and tries again (through the caller's
    # wait): many invocations are taking at the same moment.
    CONTENDED_WAIT = 0.05

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table
        self._seen = Pacing()  # the windows as this instance last read or wrote them
        self.calls = 0

    def acquire(self, now: float) -> float:
        update = self._decrement(now)
        if update is None:  # no window this instance knows is live: decide from the item as it is
            return self._change(lambda state: state.take(now), contended=self.CONTENDED_WAIT)
        try:
            self.calls += 1
            answer = self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **update,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                logger.warning("rate-limit window unavailable, going ahead", extra={"error": _code(exc)})
                return 0.0
            # A window is spent, has ended, or is not as this instance saw it: decide from the item as it is.
            current = _decode(exc.response.get("Item", {}))  # type: ignore[arg-type]
            return self._change(lambda state: state.take(now), contended=self.CONTENDED_WAIT, current=current)
        except BotoCoreError as exc:
            logger.warning("rate-limit window unavailable, going ahead", extra={"error": type(exc).__name__})
            return 0.0
        self._seen = _decode(answer.get("Attributes", {}))[1]
        return 0.0

    def _decrement(self, now: float) -> dict[str, Any] | None:
        """The one-call take: a decrement of each window this instance last saw live, on condition that the
        item still lets `Pacing.take` do exactly that (the others unused, the version a number)."""
        windows = {prefix: getattr(self._seen, scope) for scope, prefix in _PREFIXES.items()}
        live = [p for p, w in windows.items() if w.reset_at > now + CLOSING_SECONDS and w.remaining > 0]
        if not live:
            return None
        assignments, conditions = ["version = version + :one"], ["version >= :zero"]
        values = {
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
            ":soonest_reset": {"N": repr(now + CLOSING_SECONDS)},
            ":farthest_reset": {"N": repr(now + MAX_WINDOW_SECONDS)},
        }
        for prefix in windows:
            reset_at, remaining, limit = (f"#{prefix}{name}" for name in ("reset_at", "remaining", "limit"))
            if prefix in live:
                assignments.append(f"{remaining} = {remaining} - :one")
                conditions.append(
                    f"{reset_at} > :soonest_reset AND {reset_at} <= :farthest_reset AND {remaining} > :zero"
                )
            else:
                conditions.append(f"attribute_not_exists({limit}) AND NOT {reset_at} > :now")
                values[":now"] = {"N": repr(now)}
        update, condition = "SET " + ", ".join(assignments), " AND ".join(f"({c})" for c in conditions)
        return {
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": _names(update + condition),
            "ExpressionAttributeValues": values,
        }

    def learn(self, window: Window) -> None:
        if self._seen.learn(window) is None:
            return  # nothing this instance did not know: no write
        self._change(lambda state: (state.learn(window), 0.0), contended=0.0)

    def _change(
        self,
        rule: Callable[[Pacing], tuple[Pacing | None, float]],
        contended: float,
        current: tuple[Any, Pacing, bool] | None = None,
    ) -> float:
        try:
            version, state, sound = current or self._read()
            for _ in range(self.ATTEMPTS):
                self._seen = state
                new, wait = rule(state)
                if new is None and sound:
                    return wait
                conflict = self._write(version, new or state)
                if conflict is None:
                    self._seen = new or state
                    return wait
                version, state, sound = conflict
        except (ClientError, BotoCoreError) as exc:
            logger.warning("rate-limit window unavailable, going ahead", extra={"error": type(exc).__name__})
            return 0.0
        return contended

    def _read(self) -> tuple[Any, Pacing, bool]:
        self.calls += 1
        item = self._client.get_item(TableName=self._table, Key=t.RATE_LIMIT_KEY, ConsistentRead=True).get("Item")
        return _decode(item or {})

    def _write(self, version: Any, state: Pacing) -> tuple[Any, Pacing, bool] | None:
        """Write `state` if the item's version is still `version` (as read: any type, None for none); else
        the item as it is now."""
        values: dict[str, Any] = {":next": {"N": str((_whole(version) or 0) + 1)}}
        assignments = ["version = :next"]
        removals = []
        for scope, prefix in _PREFIXES.items():
            for f in fields(WindowState):
                value, name = getattr(getattr(state, scope), f.name), f"{prefix}{f.name}"
                if value is None:
                    removals.append(f"#{name}")
                    continue
                if isinstance(value, bool):
                    value = int(value)
                values[f":{name}"] = {"N": repr(value) if isinstance(value, float) else str(value)}
                assignments.append(f"#{name} = :{name}")
        update = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removals) if removals else "")
        if version is None:
            condition = "attribute_not_exists(version)"
        else:
            condition, values[":v"] = "version = :v", version
        try:
            self.calls += 1
            self._client.update_item(
                TableName=self._table,
                Key=t.RATE_LIMIT_KEY,
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(update),
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


def _names(expression: str) -> dict[str, str]:
    """Attribute names through placeholders: "limit" is one of DynamoDB's reserved words."""
    return {name: name[1:] for name in re.findall(r"#\w+", expression)}


def _decode(item: Mapping[str, Any]) -> tuple[Any, Pacing, bool]:
    """The item's version as stored (what the next write is conditioned on), its windows, and whether it is
    sound: a window with attributes no write of ours leaves is forgotten, and the item rewritten."""
    version = item.get("version")
    sound = version is None or _whole(version) is not None
    windows = {}
    for scope, prefix in _PREFIXES.items():
        try:
            windows[scope] = _window(item, prefix)
        except (TypeError, ValueError):
            windows[scope], sound = WindowState(), False
    return version, Pacing(**windows), sound


def _window(item: Mapping[str, Any], prefix: str) -> WindowState:
    """One window of the item; TypeError or ValueError when it is not one of ours."""

    def number(name: str) -> float | None:
        attribute = item.get(prefix + name)
        if attribute is None:
            return None
        value = float(attribute.get("N"))
        if not math.isfinite(value) or value < 0:
            raise ValueError(name)
        return value

    limit, period = number("limit"), number("period")
    if (limit is not None and limit < 1) or (period is not None and not 0 < period <= MAX_WINDOW_SECONDS):
        raise ValueError("limit or period")
    return WindowState(
        number("reset_at") or 0.0,
        int(number("remaining") or 0),
        bool(number("guessed")),
        None if limit is None else int(limit),
        period,
    )


def _whole(attribute: Any) -> int | None:
    try:
        return int(attribute["N"])
    except (KeyError, TypeError, ValueError):
        return None


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
