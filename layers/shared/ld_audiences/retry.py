"""The retry rule for LaunchDarkly calls, in one place: what is transient, and how long to wait.

urllib3's Retry knows `Retry-After` but not LaunchDarkly's `X-Ratelimit-Reset` (epoch milliseconds),
cannot stop at the Lambda invocation's deadline, and cannot share a rate-limit window between
invocations (`rate_limit.py`), so the rule is written out here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 4xx other than these are permanent for that request (docs/DESIGN.md). 409 is a write conflict on the
# segment-audiences endpoint, which LaunchDarkly documents as "retry".
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 5.0
    # Route and token limits reset every ten seconds: wait for one window within an invocation; a longer
    # wait is left to SQS (the records come back when the window has reset) rather than paid for idle.
    max_rate_limit_wait: float = 11.0
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    # A request started this close to the deadline would get a read timeout too short to see its
    # answer, leaving a write whose outcome is unknown: do not start it.
    min_request_seconds: float = 1.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: spreads retries of concurrent invocations instead of synchronising them."""
        return rng.uniform(0, self._step(attempt))

    def rate_limit_backoff(self, attempt: int, rng: random.Random) -> float:
        """For a 429 that names no usable time to wait. Equal jitter: spread like `backoff`, but never close
        to nothing, which against a limit still spent would only spend more of it."""
        step = self._step(attempt)
        return rng.uniform(step / 2, step)

    def _step(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2.0**attempt)
