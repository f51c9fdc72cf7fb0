"""Time is not a failure, on the local stack with real moto and the LaunchDarkly emulator: LaunchDarkly's
rate limit is shared by concurrent sync invocations, and what a batch cannot do for lack of time (the
rate-limit window, the invocation's deadline) comes back when it can be done, without spending a receive
count. `max_receive_count=1` makes that strict: a record returned as a failure would be dead-lettered
on its next receive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from ld_audiences.config import SEGMENTS_AT_ONCE
from ld_audiences.retry import RetryPolicy
from ld_audiences_local.emulator import Faults, RouteRateLimit
from ld_audiences_local.stack import LocalStack
from tests.e2e.stack_helpers import SECRET, post_events, segments, traffic, wait_until
from tests.segment_events import engage_event

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEGMENT_AUDIENCES = "POST /api/v2/segment-targets/segment-audiences"


# ----------------------------------------------------------------------------------------- shared window

POLLERS = 4
WRITERS = POLLERS * SEGMENTS_AT_ONCE  # requests that can be in flight at once
LIMIT = RouteRateLimit(requests=5, window_seconds=1.0)


@dataclass(frozen=True)
class SharedRun:
    expected: dict[str, set[str]]
    actual: dict[str, set[str]]
    dead_letters: int
    written: int  # write requests LaunchDarkly accepted
    refused: int  # 429s
    refusing_windows: int  # rate-limit windows that answered a 429


@pytest.fixture(scope="module")
def shared_run() -> SharedRun:
    """Four concurrent pollers, each writing four segments at once, against 5 requests a second:
    ~100 write requests, so ~20 windows. The stack is stopped before the tests read the run: one
    LocalStack per process at a time."""
    events, expected = traffic(audiences=8, users=60)
    with LocalStack(
        port=0,
        webhook_secret=SECRET,
        batching_window=0.2,
        sync_concurrency=POLLERS,
        chunk_size=10,  # several requests per audience and batch
        max_receive_count=1,
        launchdarkly_rate_limit=LIMIT,
    ) as stack:
        assert stack.emulator is not None
        post_events(stack, events)
        stack.wait_until_drained(120)
        stats = stack.emulator.stats()
        return SharedRun(
            expected,
            segments(stack),
            stack.dead_letter_count(),
            stats["requests"][SEGMENT_AUDIENCES].get("204", 0),
            stats["rate_limit"]["429"],
            stats["rate_limit"]["windows_with_429"],
        )


def test_concurrent_pollers_within_a_shared_rate_limit_end_exact_with_nothing_dead_lettered(
    shared_run: SharedRun,
) -> None:
    assert shared_run.actual == shared_run.expected
    assert shared_run.dead_letters == 0
    assert shared_run.written >= 10 * LIMIT.requests, "the limit was in play for many windows"
    # A writer refused in a window waits for its reset: no window refuses a writer twice.
    assert shared_run.refused <= WRITERS * shared_run.refusing_windows


def test_after_the_first_window_a_refusal_is_rare(shared_run: SharedRun) -> None:
    """Before the first answer nothing is known: every writer goes, and all but the window's five may be
    refused. Every later window is known to all invocations from the answers of the one before; what it can
    still refuse is a request that reaches LaunchDarkly after the window it was taken from has reset (a
    thread that waited for the CPU, here). Without the shared window, every window would refuse about as
    many as it lets through: 429s would multiply with the pollers."""
    first_window = WRITERS - LIMIT.requests
    assert shared_run.refused <= first_window + shared_run.written // 20


# ----------------------------------------------------------------------------------------- a long window

WINDOW = RetryPolicy().max_rate_limit_wait + 4  # longer than an invocation waits for a window: deferred
VISIBILITY = 120  # what a record returned as a failure would wait, far beyond the window


@pytest.mark.parametrize("publish_remaining", [True, False], ids=["remaining-published", "reset-only-on-429"])
def test_a_write_deferred_for_the_window_lands_when_it_resets_without_a_receive(publish_remaining: bool) -> None:
    """Three segments, two requests a window: the third is refused (or never sent), deferred with a delay
    matched to the reset, and lands right after it, not after the visibility timeout; nothing is
    dead-lettered though every record may be received only once."""
    events, expected = traffic(audiences=3, users=4)
    limit = RouteRateLimit(requests=2, window_seconds=WINDOW, publish_remaining=publish_remaining)
    with LocalStack(
        port=0,
        webhook_secret=SECRET,
        batching_window=0.5,
        visibility_timeout=VISIBILITY,
        max_receive_count=1,
        launchdarkly_rate_limit=limit,
    ) as stack:
        assert stack.emulator is not None
        posted = time.time()
        post_events(stack, events)
        # The window starts with the first write, after the post: it cannot reset before this.
        reset_at_the_earliest = posted + WINDOW
        landed = wait_until(lambda: segments(stack) == expected, WINDOW + 30, "every segment exact")
        stack.wait_until_drained(30)
        assert reset_at_the_earliest <= landed < reset_at_the_earliest + 15 < posted + VISIBILITY
        assert stack.dead_letter_count() == 0
        stats = stack.emulator.stats()
        assert stats["rate_limit"]["windows"] == 2
        assert stats["requests"][SEGMENT_AUDIENCES].get("204", 0) == 3


# ----------------------------------------------------------------------------------------- deadline


@pytest.mark.parametrize(
    "slow_seconds",
    [1.0, 1.5],
)
def test_fifty_audiences_in_one_batch_against_a_slow_launchdarkly_dead_letter_nothing(slow_seconds: float) -> None:
    """Issue 9, item 7: every write is answered late and an invocation has 3 s for LaunchDarkly (a 6 s
    timeout), so one invocation reaches about a dozen of the 50 segments; the rest is deferred, not failed,
    and every segment ends exact."""
    events, expected = traffic(audiences=50, users=2)  # 150 records
    with LocalStack(
        port=0,
        webhook_secret=SECRET,
        batch_size=len(events),
        batching_window=2.0,  # every record arrives in the first batch
        sync_timeout=6,
        visibility_timeout=12,  # a record returned as a failure comes back soon, to be dead-lettered
        max_receive_count=1,
        late_apply_rechecks=(2,),  # a write that timed out is looked at again soon, not in 15 minutes
    ) as stack:
        assert stack.emulator is not None
        stack.emulator.set_faults(Faults(rate_slow=1.0, slow_seconds=slow_seconds))
        post_events(stack, events)
        stack.wait_until_drained(120)
        assert stack.dead_letter_count() == 0
        assert segments(stack) == expected
        stats = stack.stats()
        assert stats["batches"] > 1, "one invocation could not write every segment"
        assert stats["failures"] == stats["handler_errors"] == 0


# ----------------------------------------------------------------------------------------- many audiences

STREAM_AUDIENCES = 300
STREAM_LIMIT = RouteRateLimit(requests=50, window_seconds=10.0)  # LaunchDarkly's 10-s windows, 5 requests a second


def test_a_steady_stream_over_many_audiences_keeps_up_within_the_lag_bound() -> None:
    """Issue 17: changes spread over 300 audiences arrive steadily (two per audience, interleaved, 20 a
    second); LaunchDarkly takes 5 requests a second. Requests follow audiences, not batches, so every
    change is written within 2 x (audiences / request rate) = 120 s of the last arrival, at most at
    LaunchDarkly's rate."""
    events: list[dict[str, object]] = []
    expected: dict[str, set[str]] = {}
    for round_ in range(2):
        for a in range(STREAM_AUDIENCES):
            audience = f"aud_stream_{a:03d}"
            user = f"user-{round_}"
            events.append(engage_event(audience_id=audience, audience_key=f"stream_{a:03d}", user_id=user))
            expected.setdefault(audience, set()).add(user)
    rate = STREAM_LIMIT.requests / STREAM_LIMIT.window_seconds
    bound = 2 * STREAM_AUDIENCES / rate
    with LocalStack(
        port=0,
        webhook_secret=SECRET,
        batching_window=1.0,
        sync_concurrency=2,
        max_receive_count=1,
        launchdarkly_rate_limit=STREAM_LIMIT,
    ) as stack:
        assert stack.emulator is not None
        started = time.time()
        for start in range(0, len(events), 20):  # 20 changes a second
            post_events(stack, events[start : start + 20])
            time.sleep(max(started + (start + 20) / 20 - time.time(), 0))
        last_arrival = time.time()
        done = wait_until(lambda: segments(stack) == expected, bound + 30, "every segment exact")
        stack.wait_until_drained(bound)
        stats = stack.emulator.stats()
        written = stats["requests"][SEGMENT_AUDIENCES].get("204", 0)
        assert done - last_arrival <= bound, f"the last change waited {done - last_arrival:.0f} s"
        assert stack.dead_letter_count() == 0
        assert STREAM_AUDIENCES <= written <= 1.2 * rate * (done - started)
        assert stack.stats()["failures"] == 0


# ----------------------------------------------------------------------------------------- token rotation


def test_rotating_the_launchdarkly_token_mid_stream_dead_letters_nothing() -> None:
    """Issue 18, item 4: the token is rotated in Secrets Manager mid-stream and LaunchDarkly refuses the old one
    at once, while the sync still caches it: the sync reads the secret again and writes on; nothing reaches
    the dead-letter queue, and every segment ends exact."""
    events, expected = traffic(audiences=6, users=20)
    half = len(events) // 2
    with LocalStack(port=0, webhook_secret=SECRET, batching_window=0.3, max_receive_count=1) as stack:
        assert stack.emulator is not None
        post_events(stack, events[:half], per_request=20)
        rotated = "api-rotated-local-token"
        stack.client("secretsmanager").put_secret_value(SecretId=stack.aws.token_secret_arn, SecretString=rotated)
        stack.emulator.set_tokens([rotated])
        post_events(stack, events[half:], per_request=20)
        stack.wait_until_drained(90)
        assert stack.dead_letter_count() == 0
        assert segments(stack) == expected
