"""The shared LaunchDarkly window: one rule for every invocation (rate_limit.WindowState), kept in the state
table with optimistic concurrency (SharedRateLimit, on moto's server)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ld_audiences.rate_limit import (
    ACCOUNT,
    CLOSING_SECONDS,
    DEFAULT_PERIOD_SECONDS,
    MAX_WINDOW_SECONDS,
    ROUTE,
    LocalRateLimit,
    SharedRateLimit,
    Window,
    WindowState,
    window_from,
)
from ld_audiences.state_table import RATE_LIMIT_KEY
from tests.conftest import Aws

NOW = 1_800_000_000.0


def sends(limiter: LocalRateLimit | SharedRateLimit, attempts: int, now: float) -> int:
    return sum(limiter.acquire(now) == 0 for _ in range(attempts))


def test_answers_are_read_from_launchdarkly_s_headers() -> None:
    headers = {"X-Ratelimit-Reset": str(int((NOW + 3) * 1000)), "X-Ratelimit-Route-Remaining": "7"}
    assert window_from(204, headers, NOW) == (Window(7, NOW + 3, scope=ROUTE),)
    assert window_from(204, {**headers, "X-Ratelimit-Global-Remaining": "2"}, NOW) == (
        Window(7, NOW + 3, scope=ROUTE),
        Window(2, NOW + 3, scope=ACCOUNT),
    )
    assert window_from(429, {"Retry-After": "4"}, NOW) == (Window(0, NOW + 4, limited=True),)
    assert window_from(429, {}, NOW) == ()  # no time to wait named: the client backs off
    assert window_from(204, {}, NOW) == ()


def test_a_window_lets_through_what_launchdarkly_says_is_left_then_waits_for_its_reset() -> None:
    limiter = LocalRateLimit()
    limiter.learn(Window(3, NOW + 2))
    assert sends(limiter, 10, NOW) == 3
    assert limiter.acquire(NOW) == 2.0


def test_no_request_starts_as_a_window_closes_where_it_could_count_in_the_next(aws: Aws) -> None:
    for limiter in (LocalRateLimit(), SharedRateLimit(aws.dynamodb, aws.table)):
        limiter.learn(Window(3, NOW + 2))
        closing = NOW + 2 - CLOSING_SECONDS / 2
        # Requests are left, but the window is closing: wait for the next one.
        assert limiter.acquire(closing) == pytest.approx(NOW + 2 - closing)
        assert sends(limiter, 10, NOW + 2 - CLOSING_SECONDS * 1.5) == 3


def test_the_next_window_starts_with_the_size_learned_so_no_herd_follows_a_reset() -> None:
    """Ten invocations released by a reset: only as many go as the window allows (its size was shown by
    the first answer of a window: remaining + 1), not ten."""
    limiter = LocalRateLimit()
    limiter.learn(Window(4, NOW + 1))  # a window of five
    limiter.learn(Window(4, NOW + 2))  # the next one: windows last a second
    assert sends(limiter, 10, NOW + 2.5) == 5
    assert 0 < limiter.acquire(NOW + 2.5) <= 1.0


def test_without_a_remaining_count_a_429_stops_everyone_until_its_reset() -> None:
    limiter = LocalRateLimit()
    assert sends(limiter, 6, NOW) == 6  # nothing known: everything goes
    limiter.learn(Window(None, NOW + 1))  # an answer with a reset but no count teaches no size
    assert sends(limiter, 6, NOW) == 6
    limiter.learn(Window(0, NOW + 1, limited=True))
    assert limiter.acquire(NOW + 0.5) == 0.5  # nobody goes until the reset
    assert sends(limiter, 3, NOW + 1.2) == 3  # then, with no size to go by, everyone does


def test_an_answer_from_an_earlier_window_changes_nothing() -> None:
    state = WindowState().learn(Window(2, NOW + 10))
    assert state is not None
    assert state.learn(Window(0, NOW + 5)) is None


def test_a_guessed_window_takes_launchdarkly_s_end_from_the_first_answer() -> None:
    state = WindowState().learn(Window(4, NOW + 1))
    assert state is not None
    guessed, wait = state.take(NOW + 3)  # the window ended; the length is not known yet
    assert guessed is not None and wait == 0 and guessed.guessed
    assert guessed.reset_at == NOW + 3 + DEFAULT_PERIOD_SECONDS
    real = guessed.learn(Window(3, NOW + 4))  # LaunchDarkly's window ends sooner than guessed
    assert real is not None and (real.reset_at, real.remaining, real.guessed) == (NOW + 4, 3, False)


def test_a_guess_is_spent_once_though_launchdarkly_starts_its_window_late_and_old_answers_come_late() -> None:
    """Windows of five requests a second, as LaunchDarkly's emulator keeps them: each starts with the first
    request after the last one ended. Two ways a guess could be spent twice in one of LaunchDarkly's
    windows: ending before a whole period has passed since it began (a guess aligned with the old
    windows' ends would end 0.05 s after it began here), or being ended by a late answer from the window
    before it."""
    limiter = LocalRateLimit()
    limiter.learn(Window(4, NOW + 1))
    limiter.learn(Window(4, NOW + 2))  # windows last a second
    quiet_until = NOW + 3.95  # nobody wrote for a while: the next window starts with the next request
    assert sends(limiter, 10, quiet_until) == 5
    limiter.learn(Window(0, NOW + 2))  # an answer from the window before, come late
    assert sends(limiter, 10, quiet_until + 0.1) == 0
    assert sends(limiter, 10, quiet_until + 0.9) == 0


def test_invocations_share_one_window_through_the_state_table(aws: Aws) -> None:
    limiters = [SharedRateLimit(aws.dynamodb, aws.table) for _ in range(4)]
    limiters[0].learn(Window(9, NOW + 5))  # ten in this window
    sent: list[int] = []
    threads = [threading.Thread(target=lambda lim=lim: sent.append(sends(lim, 6, NOW))) for lim in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sent) == 9  # 24 attempts from four invocations at once: exactly what was left
    limiters[1].learn(Window(0, NOW + 5, limited=True))
    assert limiters[2].acquire(NOW + 1) == 4.0  # a 429 seen by one stops the others until the reset


def hear(limiter: LocalRateLimit | SharedRateLimit, status: int, headers: dict[str, str], now: float) -> None:
    for window in window_from(status, headers, now):
        limiter.learn(window)


def reset(at: float) -> dict[str, str]:
    return {"X-Ratelimit-Reset": str(int(at * 1000))}


@pytest.mark.parametrize(
    "value",
    [
        str(int((NOW + 3) * 1_000_000)),  # microseconds
        str(int(NOW + 3)),  # seconds
        str(int((NOW + MAX_WINDOW_SECONDS + 5) * 1000)),  # further ahead than any window lasts
        "nan",
        "inf",
        "-1",
        "soon",
    ],
)
def test_a_reset_that_is_no_time_of_a_window_is_not_obeyed(value: str) -> None:
    """Problem 1: such a reset stopped the sync for good (the longest wait there was, 900 s, after every answer)."""
    limiter = LocalRateLimit()
    hear(limiter, 204, {"X-Ratelimit-Reset": value, "X-Ratelimit-Route-Remaining": "0"}, NOW)
    assert limiter.acquire(NOW) == 0  # the next request goes, and its answer tells the real window
    # A 429 naming no other time has no usable wait: the client backs off (problem 3), then probes.
    assert window_from(429, {"X-Ratelimit-Reset": value, "X-Ratelimit-Route-Remaining": "0"}, NOW) == ()


def test_a_retry_after_is_waited_at_most_the_cap_then_probed() -> None:
    (window,) = window_from(429, {"Retry-After": "86400"}, NOW)
    assert window == Window(0, NOW + MAX_WINDOW_SECONDS, limited=True)


def test_a_window_ending_further_ahead_than_any_window_lasts_is_forgotten_not_waited_for() -> None:
    """Problem 1, in the window itself (a shared item written by an older version, or corrupt): it neither
    holds requests nor keeps answers out."""
    limiter = LocalRateLimit()
    limiter.learn(Window(0, NOW + 10**6))
    assert limiter.acquire(NOW) == 0
    limiter.learn(Window(0, NOW + 10**6))
    limiter.learn(Window(2, NOW + 5))  # not taken for an answer from an earlier window
    assert sends(limiter, 5, NOW) == 2


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-3", "soon", "1e999", "", "Wed, 21 Oct 2026 07:28:00 GMT"])
def test_a_retry_after_that_is_no_number_of_seconds_never_raises(value: str) -> None:
    """Problem 2: a 429 with such a Retry-After names no usable wait (the client backs off); with a reset,
    the reset is the wait."""
    assert window_from(429, {"Retry-After": value}, NOW) == ()
    assert window_from(429, {"Retry-After": value, **reset(NOW + 2)}, NOW) == (Window(0, NOW + 2, limited=True),)


def test_a_429_whose_reset_has_passed_names_no_wait() -> None:
    """Problem 3: it was learned as a spent window that had already ended: the client tried again at once."""
    assert window_from(429, {**reset(NOW - 1), "X-Ratelimit-Route-Remaining": "0"}, NOW) == ()
    assert window_from(429, {**reset(NOW - 1), "Retry-After": "0"}, NOW) == ()


def test_a_429_holds_until_the_later_of_retry_after_and_the_reset() -> None:
    """Problem 4: Retry-After was ignored whenever a reset came with it."""
    for retry_after, reset_in in ((3, 1), (1, 3)):
        limiter = LocalRateLimit()
        hear(limiter, 429, {**reset(NOW + reset_in), "Retry-After": str(retry_after)}, NOW)
        assert limiter.acquire(NOW) == 3


@pytest.fixture(params=["local", "shared"])
def limiter(request: pytest.FixtureRequest, aws: Aws) -> LocalRateLimit | SharedRateLimit:
    return LocalRateLimit() if request.param == "local" else SharedRateLimit(aws.dynamodb, aws.table)


def test_route_and_global_limits_are_windows_apart_and_a_request_takes_from_both(
    limiter: LocalRateLimit | SharedRateLimit,
) -> None:
    """Problem 5: one merged window let a later answer of one limit replace a spent window of the other."""
    hear(limiter, 204, {**reset(NOW + 2), "X-Ratelimit-Route-Remaining": "0"}, NOW)
    hear(limiter, 204, {**reset(NOW + 8), "X-Ratelimit-Global-Remaining": "2"}, NOW)  # another route's answer
    assert limiter.acquire(NOW) == 2  # the route is spent until its reset, whatever the account has left
    hear(limiter, 204, {**reset(NOW + 12), "X-Ratelimit-Route-Remaining": "4"}, NOW + 2.1)
    assert sends(limiter, 10, NOW + 2.5) == 2  # the account's two
    assert limiter.acquire(NOW + 3) == 5  # the account is spent until its reset, the route is not
    # The account's next window (a guess: three, its size) and the route's last two both give two requests.
    assert sends(limiter, 10, NOW + 8.5) == 2
    assert limiter.acquire(NOW + 8.5) == 3.5  # now the route is spent, the account is not


def test_a_429_empties_the_window_it_names(limiter: LocalRateLimit | SharedRateLimit) -> None:
    hear(limiter, 204, {**reset(NOW + 2), "X-Ratelimit-Route-Remaining": "5", "X-Ratelimit-Global-Remaining": "5"}, NOW)
    hear(limiter, 429, {**reset(NOW + 4), "X-Ratelimit-Route-Remaining": "3", "X-Ratelimit-Global-Remaining": "0"}, NOW)
    assert limiter.acquire(NOW) == 4


CORRUPT: dict[str, tuple[dict[str, Any], str]] = {  # the item, and the attribute that must not stay
    "a reset absurdly far ahead": (
        {"reset_at": {"N": "1e15"}, "remaining": {"N": "0"}, "limit": {"N": "5"}},
        "reset_at",
    ),
    "a reset no number": ({"reset_at": {"S": "soon"}, "remaining": {"N": "0"}}, "reset_at"),
    "a negative count": ({"reset_at": {"N": repr(NOW + 30)}, "remaining": {"N": "-3"}}, "remaining"),
    "a count no number": ({"reset_at": {"N": repr(NOW + 30)}, "remaining": {"S": "many"}}, "remaining"),
    "a length absurdly long": ({"reset_at": {"N": "0"}, "limit": {"N": "5"}, "period": {"N": "1e9"}}, "period"),
    "a limit of none": ({"reset_at": {"N": "0"}, "limit": {"N": "0"}, "guessed": {"BOOL": True}}, "guessed"),
    "an account window absurdly far ahead": (
        {"account_reset_at": {"N": "1e15"}, "account_remaining": {"N": "0"}},
        "account_reset_at",
    ),
    "a version no number": ({"version": {"S": "x"}, "reset_at": {"N": "0"}, "remaining": {"N": "2"}}, "version"),
}


@pytest.mark.parametrize("seen", [False, True], ids=["unseen", "seen live"])
@pytest.mark.parametrize("corruption", CORRUPT)
def test_a_corrupt_shared_window_is_ignored_and_rewritten(aws: Aws, corruption: str, seen: bool) -> None:
    """Problem 6: the item was obeyed as it was, for good (a reset far ahead: every request deferred). An
    invocation that saw the window live before tries the one-call decrement first."""
    attributes, culprit = CORRUPT[corruption]
    limiter = SharedRateLimit(aws.dynamodb, aws.table)
    if seen:
        limiter.learn(Window(5, NOW + 5))
    aws.dynamodb.put_item(TableName=aws.table, Item={**RATE_LIMIT_KEY, "version": {"N": "3"}, **attributes})
    assert limiter.acquire(NOW) == 0
    hear(limiter, 204, {**reset(NOW + 5), "X-Ratelimit-Route-Remaining": "2"}, NOW)
    item = aws.dynamodb.get_item(TableName=aws.table, Key=RATE_LIMIT_KEY, ConsistentRead=True)["Item"]
    assert item.get(culprit) != attributes[culprit]
    others = SharedRateLimit(aws.dynamodb, aws.table)
    assert sends(others, 5, NOW + 1) == 2  # the rewritten item paces everyone again
