"""The audit's share of LaunchDarkly's rate limit: it paces by the answers' headers, a reserve short of each
window, whatever headers an answer carries."""

from __future__ import annotations

from ld_audiences.rate_limit import Window
from ld_audiences_cli.audit import ReservedRateLimit

NOW = 1_000.0


def taken(limit: ReservedRateLimit, now: float, attempts: int) -> int:
    """How many requests may start at `now` before one has to wait."""
    for count in range(attempts):
        if limit.acquire(now) > 0:
            return count
    return attempts


def test_an_answer_with_a_reset_and_no_count_is_no_failure() -> None:
    limit = ReservedRateLimit(reserve=2)
    limit.learn(Window(None, NOW + 10))  # was `None - reserve`: TypeError
    assert limit.acquire(NOW) == 0  # no count seen yet: nothing to pace by


def test_the_reserve_holds_in_a_window_whose_answers_give_no_count() -> None:
    limit = ReservedRateLimit(reserve=2)
    limit.learn(Window(5, NOW + 10))  # 5 left of a window of 6: 3 for the audit
    assert taken(limit, NOW, 10) == 3
    limit.learn(Window(None, NOW + 20))  # the next window names only its reset
    assert taken(limit, NOW + 10.5, 10) == 3  # its size less the first request and the reserve


def test_a_429_teaches_no_window_size() -> None:
    limit = ReservedRateLimit(reserve=2)
    limit.learn(Window(0, NOW + 10, limited=True))  # the first answer: a 429, with no count of its own
    assert limit.acquire(NOW) > 0
    # Read as a count of 0 (a window of one request), it held the audit to one read a window from then on.
    assert taken(limit, NOW + 10.5, 10) == 10
