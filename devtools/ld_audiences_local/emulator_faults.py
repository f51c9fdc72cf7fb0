"""Failures the LaunchDarkly emulator injects into its write endpoints, so that the product's real HTTP client
meets 429s, 5xx, slow answers, dropped connections and writes applied after the connection dropped."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus

from ld_audiences_local.emulator_requests import Response, error_body

# How often a 429 carries a reset time that has already passed (the real service does this too).
_PAST_RESET_PROBABILITY = 0.2
_RETRY_AFTER_PROBABILITY = 0.5
FAULT_KINDS = ("429", "5xx", "slow", "drop", "late")


@dataclass
class Faults:
    """Fault injection for the three write endpoints. Every rate is a probability in [0, 1].

    `rate_late`: the connection drops without an answer, as with `rate_drop`, but the write is applied
    `late_seconds` later (LaunchDarkly applying a request after its client gave up on it)."""

    rate_429: float = 0.0
    reset_ms: int = 200
    rate_5xx: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 2.0
    rate_drop: float = 0.0
    rate_late: float = 0.0
    late_seconds: float = 14.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "rate_slow", "rate_drop", "rate_late"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1]")
        if isinstance(self.reset_ms, bool) or not isinstance(self.reset_ms, int) or self.reset_ms < 0:
            raise ValueError("reset_ms must be an integer >= 0")
        for name in ("slow_seconds", "late_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be an integer or null")


def _streams(seed: int | None) -> tuple[random.Random, random.Random]:
    """The random streams of the faults and of the late writes, both from one seed."""
    return random.Random(seed), random.Random(None if seed is None else f"late-{seed}")


class FaultInjector:
    """Draws a fault for each write and answers it. `stopping` is set when the emulator stops: a slow answer
    stops waiting and a late write is never applied."""

    def __init__(self, faults: Faults, stopping: threading.Event) -> None:
        self._lock = threading.Lock()
        self._stopping = stopping
        self._faults = faults
        self._rng, self._late_rng = _streams(faults.seed)
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self.late_applied = 0  # late writes applied so far
        self._epoch = 0  # reset() counts up: a late write from before a reset is never applied

    @property
    def faults(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def configure(self, faults: Faults) -> None:
        faults.__post_init__()  # a caller may have mutated fields after construction
        with self._lock:
            self._faults = faults
            self._rng, self._late_rng = _streams(faults.seed)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Forget the counts and late writes not yet applied; restart the random streams from their seed."""
        with self._lock:
            self._counts = dict.fromkeys(FAULT_KINDS, 0)
            self.late_applied = 0
            self._epoch += 1
            self._rng, self._late_rng = _streams(self._faults.seed)

    def write(self, apply: Callable[[], Response]) -> Response:
        """The answer to a write that `apply` makes: a fault's, or apply's own (later, when slow)."""
        fault = self._draw()
        if fault == "late":
            self._apply_late(apply)
            return Response(0, drop=True)
        if fault == "slow":
            response = apply()
            # The change is already applied: a client that times out and retries must be idempotent.
            with self._lock:
                response.delay = self._faults.slow_seconds
            return response
        if fault is not None:
            return self._answer(fault)
        return apply()

    def _draw(self) -> str | None:
        with self._lock:
            f = self._faults
            # Draw every number on every write so a seed gives the same sequence whatever the rates (late
            # writes draw from a stream of their own, so the other faults' sequences stay what they were).
            d_drop, d_5xx, d_429, d_slow = (self._rng.random() for _ in range(4))
            d_late = self._late_rng.random()
            for fault, drawn, rate in (
                ("drop", d_drop, f.rate_drop),
                ("late", d_late, f.rate_late),
                ("5xx", d_5xx, f.rate_5xx),
                ("429", d_429, f.rate_429),
                ("slow", d_slow, f.rate_slow),
            ):
                if drawn < rate:
                    self._counts[fault] += 1
                    return fault
        return None

    def _answer(self, fault: str) -> Response:
        with self._lock:
            reset_ms = self._faults.reset_ms
            past = self._rng.random() < _PAST_RESET_PROBABILITY
            with_retry_after = self._rng.random() < _RETRY_AFTER_PROBABILITY
            status_5xx = self._rng.choice((500, 502, 503))
            past_by = self._rng.randint(1, max(1, reset_ms))
        if fault == "drop":
            return Response(0, drop=True)
        if fault == "5xx":
            phrase = HTTPStatus(status_5xx).phrase
            code = phrase.lower().replace(" ", "_")
            return Response(status_5xx, error_body(code, f"{phrase} (injected)"))
        now_ms = int(time.time() * 1000)
        delta_ms = -past_by if past else reset_ms
        headers = {"X-Ratelimit-Reset": str(now_ms + delta_ms), "X-Ratelimit-Route-Remaining": "0"}
        if with_retry_after:
            # Whole seconds, rounded down: a sub-second reset says "0", as the real header can.
            headers["Retry-After"] = str(max(0, delta_ms) // 1000)
        return Response(429, error_body("rate_limited", "Rate limit exceeded (injected)"), headers)

    def _apply_late(self, apply: Callable[[], Response]) -> None:
        """Apply the write `late_seconds` from now, in a thread of its own; never if the emulator stops or
        is reset first."""
        with self._lock:
            delay, epoch = self._faults.late_seconds, self._epoch

        def late() -> None:
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._epoch != epoch:
                    return
            apply()
            with self._lock:
                if self._epoch == epoch:
                    self.late_applied += 1

        threading.Thread(target=late, name="ld-emulator-late-write", daemon=True).start()
