"""The shared LaunchDarkly window: one rule for every invocation (rate_limit.WindowState), kept in the state
table with optimistic concurrency (SharedRateLimit, on moto's server)."""

from __future__ import annotations

import threading

import pytest

from ld_audiences.rate_limit import (
    CLOSING_SECONDS,
    DEFAULT_PERIOD_SECONDS,
    LocalRateLimit,
    SharedRateLimit,
    Window,
    WindowState,
    window_from,
)
from tests.conftest import Aws

NOW = 1_800_000_000.0


def sends(limiter: LocalRateLimit | SharedRateLimit, attempts: int, now: float) -> int:
    return sum(limiter.acquire(now) == 0 for _ in range(attempts))


def test_answers_are_read_from_launchdarkly_s_headers() -> None:
    headers = {"X-Ratelimit-Reset": str(int((NOW + 3) * 1000)), "X-Ratelimit-Route-Remaining": "7"}
    assert window_from(204, headers, NOW) == Window(7, NOW + 3)
    assert window_from(204, {**headers, "X-Ratelimit-Global-Remaining": "2"}, NOW) == Window(2, NOW + 3)
    assert window_from(429, {"Retry-After": "4"}, NOW) == Window(0, NOW + 4, limited=True)
    assert window_from(429, {}, NOW) == Window(0, NOW + 1, limited=True)
    assert window_from(204, {}, NOW) is None


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
