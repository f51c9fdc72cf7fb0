"""The LaunchDarkly client over real HTTP: headers, the retry rule, rate-limit waits, deadlines."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest

from ld_audiences.launchdarkly import API_VERSION, LaunchDarklyClient, WriteError, unanswered_before
from ld_audiences.rate_limit import LocalRateLimit
from ld_audiences.retry import RetryPolicy
from tests.recording_server import RecordingServer, Scripted

TOKEN = "api-0000-secret-token"
POLICY = RetryPolicy(base_delay=0.01, max_delay=0.02, max_rate_limit_wait=2.0, read_timeout=0.5)
PATIENT = RetryPolicy(base_delay=0.5, max_delay=4.0, max_rate_limit_wait=20.0, read_timeout=0.5)  # waits out 429s


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    yield srv
    srv.close()


class SleepLog:
    """Records waits instead of waiting; `time()` is the wall clock moved on by every wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    def time(self) -> float:
        return time.time() + sum(self.waits)


def client_for(url: str, sleep: SleepLog | None = None, policy: RetryPolicy = POLICY) -> LaunchDarklyClient:
    sleep = sleep or SleepLog()
    return LaunchDarklyClient(url, TOKEN, policy=policy, sleep=sleep, clock=sleep.time, rng=random.Random(1))


def test_sends_the_bare_token_and_api_version(server: RecordingServer) -> None:
    client_for(server.url).request("POST", "/api/v2/x", {"a": 1}, deadline=time.time() + 5)
    (request,) = server.requests
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["LD-API-Version"] == API_VERSION == "20240415"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == {"a": 1}


def test_429_waits_for_the_reset_header_then_retries(server: RecordingServer) -> None:
    reset_ms = int((time.time() + 1.0) * 1000)
    server.script = [Scripted(429, {"X-Ratelimit-Reset": str(reset_ms)}, {"code": "rate_limited", "message": "slow"})]
    sleep = SleepLog()
    client = client_for(server.url, sleep)
    client.request("POST", "/x", {}, deadline=time.time() + 10)
    assert len(server.requests) == 2 and client.retries == 1
    assert 0.8 <= sleep.waits[0] <= 1.3  # until the reset, plus at most 0.25 s of jitter
    assert client.responses == {"429": 1, "204": 1}


def test_a_429_whose_reset_has_passed_backs_off_exponentially_instead_of_spinning(server: RecordingServer) -> None:
    """Problem 3: it was tried again at once, six times. (This test asserted that: no wait at all.)"""
    server.script = [Scripted(429, {"X-Ratelimit-Reset": str(int((time.time() - 5) * 1000))})] * 3
    sleep = SleepLog()
    client_for(server.url, sleep, PATIENT).request("POST", "/x", {}, deadline=time.time() + 60)
    assert len(server.requests) == 4
    steps = [PATIENT.base_delay * 2**attempt for attempt in range(3)]
    assert all(step / 2 <= wait <= step for step, wait in zip(steps, sleep.waits, strict=True))


def test_a_429_with_no_usable_wait_is_deferred_by_its_backoff_not_by_nothing(server: RecordingServer) -> None:
    server.default = Scripted(429, {"X-Ratelimit-Reset": str(int((time.time() - 5) * 1000))})
    with pytest.raises(WriteError) as caught:
        client_for(server.url, policy=PATIENT).request("POST", "/x", {}, deadline=time.time() + 3)
    assert (caught.value.permanent, caught.value.status) == (False, 429)
    assert caught.value.retry_after is not None and caught.value.retry_after >= PATIENT.base_delay / 2
    assert len(server.requests) <= 3


@pytest.mark.parametrize("unit", [1e-3, 1e3], ids=["seconds", "microseconds"])
def test_a_429_s_reset_in_the_wrong_unit_is_a_short_backoff_then_one_probe(
    server: RecordingServer, unit: float
) -> None:
    """Problem 1: a reset in microseconds deferred every request for the longest wait there is; one in
    seconds (long past) was a spin."""
    server.script = [Scripted(429, {"X-Ratelimit-Reset": str(int((time.time() + 3) * 1000 * unit))})]
    sleep = SleepLog()
    client_for(server.url, sleep, PATIENT).request("POST", "/x", {}, deadline=time.time() + 60)
    assert len(server.requests) == 2 and len(sleep.waits) == 1
    assert PATIENT.base_delay / 2 <= sleep.waits[0] <= PATIENT.base_delay


def test_an_answer_s_reset_in_the_wrong_unit_holds_nobody(server: RecordingServer) -> None:
    reset_us = int((time.time() + 3) * 1_000_000)
    server.default = Scripted(204, {"X-Ratelimit-Route-Remaining": "0", "X-Ratelimit-Reset": str(reset_us)})
    sleep = SleepLog()
    client = client_for(server.url, sleep)
    for _ in range(2):
        client.request("POST", "/x", {}, deadline=time.time() + 10)
    assert len(server.requests) == 2 and sleep.waits == []


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-inf", "-3", "1e999", "soon"])
def test_a_retry_after_that_is_no_number_of_seconds_is_a_backoff_not_a_crash(
    server: RecordingServer, retry_after: str
) -> None:
    """Problem 2: such a value must never raise (nor turn into a wait that is no number)."""
    server.script = [Scripted(429, {"Retry-After": retry_after})]
    sleep = SleepLog()
    client_for(server.url, sleep, PATIENT).request("POST", "/x", {}, deadline=time.time() + 60)
    assert len(server.requests) == 2
    assert len(sleep.waits) == 1 and PATIENT.base_delay / 2 <= sleep.waits[0] <= PATIENT.base_delay


def test_a_429_waits_for_the_later_of_retry_after_and_the_reset(server: RecordingServer) -> None:
    """Problem 4: Retry-After was ignored whenever a reset came with it."""
    reset_ms = int((time.time() + 1.0) * 1000)
    server.script = [Scripted(429, {"X-Ratelimit-Reset": str(reset_ms), "Retry-After": "3"})]
    sleep = SleepLog()
    client_for(server.url, sleep, PATIENT).request("POST", "/x", {}, deadline=time.time() + 60)
    assert len(server.requests) == 2 and 3.0 <= sum(sleep.waits) <= 3.3


def test_retry_after_seconds_is_used_without_a_reset_header(server: RecordingServer) -> None:
    server.script = [Scripted(429, {"Retry-After": "1"})]
    sleep = SleepLog()
    client_for(server.url, sleep).request("POST", "/x", {}, deadline=time.time() + 10)
    assert 1.0 <= sleep.waits[0] <= 1.25


def test_a_rate_limit_past_the_deadline_fails_transiently_without_waiting(server: RecordingServer) -> None:
    server.script = [Scripted(429, {"Retry-After": "5"})]
    sleep = SleepLog()
    with pytest.raises(WriteError) as caught:
        client_for(server.url, sleep).request("POST", "/x", {}, deadline=time.time() + 2)
    assert (caught.value.permanent, caught.value.status, sleep.waits) == (False, 429, [])
    assert caught.value.retry_after is not None and 4.5 <= caught.value.retry_after <= 5.5  # deferred, not failed


def test_an_exhausted_window_holds_the_next_request_without_a_429(server: RecordingServer) -> None:
    reset_ms = int((time.time() + 1.0) * 1000)
    server.default = Scripted(204, {"X-Ratelimit-Route-Remaining": "0", "X-Ratelimit-Reset": str(reset_ms)})
    sleep = SleepLog()
    client = client_for(server.url, sleep)
    client.request("POST", "/x", {}, deadline=time.time() + 10)
    client.request("POST", "/x", {}, deadline=time.time() + 10)
    assert len(server.requests) == 2 and client.responses == {"204": 2}
    assert len(sleep.waits) == 1 and 0.8 <= sleep.waits[0] <= 1.3  # paced by the headers, not by a 429


def test_clients_sharing_a_window_all_wait_after_one_429(server: RecordingServer) -> None:
    reset_ms = int((time.time() + 1.0) * 1000)
    server.script = [Scripted(429, {"X-Ratelimit-Reset": str(reset_ms)})]
    window = LocalRateLimit()
    first_sleep, second_sleep = SleepLog(), SleepLog()
    first = LaunchDarklyClient(server.url, TOKEN, policy=POLICY, sleep=first_sleep, rate_limit=window)
    second = LaunchDarklyClient(
        server.url, TOKEN, policy=POLICY, sleep=second_sleep, clock=second_sleep.time, rate_limit=window
    )
    with pytest.raises(WriteError):  # one attempt only: the 429 is all it sees
        first.request("POST", "/x", {}, deadline=time.time() + 1.2)
    second.request("POST", "/x", {}, deadline=time.time() + 10)
    assert len(server.requests) == 2  # the second client never sent into the spent window
    assert 0.6 <= second_sleep.waits[0] <= 1.3


def test_5xx_is_retried_with_bounded_backoff(server: RecordingServer) -> None:
    server.default = Scripted(503, body={"code": "unavailable", "message": "down"})
    sleep = SleepLog()
    with pytest.raises(WriteError) as caught:
        client_for(server.url, sleep).request("POST", "/x", {}, deadline=time.time() + 10)
    assert len(server.requests) == POLICY.max_attempts
    assert len(sleep.waits) == POLICY.max_attempts - 1 and max(sleep.waits) <= POLICY.max_delay
    assert (caught.value.permanent, caught.value.code) == (False, "unavailable")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_are_permanent_with_launchdarkly_code(server: RecordingServer, status: int) -> None:
    server.script = [Scripted(status, body={"code": "invalid_request", "message": "bad batch"})]
    with pytest.raises(WriteError) as caught:
        client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5)
    assert (caught.value.permanent, caught.value.status, caught.value.code, caught.value.message) == (
        True,
        status,
        "invalid_request",
        "bad batch",
    )
    assert len(server.requests) == 1


def test_409_conflict_is_retried(server: RecordingServer) -> None:
    server.script = [Scripted(409, body={"code": "conflict", "message": "retry"})]
    client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5)
    assert len(server.requests) == 2


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WriteError) as caught:
        client_for(f"http://127.0.0.1:{port}").request("POST", "/x", {}, deadline=time.time() + 5)
    assert caught.value.permanent is False and caught.value.code == "ConnectionError"


def test_an_unanswered_attempt_leaves_the_outcome_unknown_whatever_the_retry_answers(server: RecordingServer) -> None:
    """The first attempt reached LaunchDarkly but its answer came after the read timeout: it may have been
    applied, so the caller must treat the write as possibly landed even though the retry was refused."""
    server.script = [
        Scripted(delay=POLICY.read_timeout + 0.3),
        Scripted(400, body={"code": "invalid_request", "message": "bad"}),
    ]
    with pytest.raises(WriteError) as caught:
        client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5)
    assert (caught.value.status, caught.value.permanent, caught.value.outcome_unknown) == (400, True, True)
    assert len(server.requests) == 2


def test_a_success_after_an_unanswered_attempt_says_so(server: RecordingServer) -> None:
    """The retry landed, but the first attempt may still be applied later (over a newer write): the answer
    carries that, so the caller can look again."""
    server.script = [Scripted(delay=POLICY.read_timeout + 0.3)]
    response = client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5)
    assert response.status_code == 204 and unanswered_before(response)
    server.script = []
    assert not unanswered_before(client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5))


def test_a_refusal_without_earlier_silence_is_a_known_outcome(server: RecordingServer) -> None:
    server.script = [Scripted(503), Scripted(400, body={"code": "invalid_request", "message": "bad"})]
    with pytest.raises(WriteError) as caught:
        client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5)
    assert (caught.value.status, caught.value.outcome_unknown) == (400, False)


def test_the_token_never_appears_in_errors_or_repr(server: RecordingServer) -> None:
    server.default = Scripted(500, body={"code": "internal", "message": "oops"})
    client = client_for(server.url)
    with pytest.raises(WriteError) as caught:
        client.request("POST", "/x", {}, deadline=time.time() + 5)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(client)


def test_error_text_is_scrubbed_of_the_requests_context_keys_the_token_and_emails(server: RecordingServer) -> None:
    """LaunchDarkly's error text reaches log lines and the DLQ: what the request carried must not."""
    message = f"keys u-1 and u-10 refused (token {TOKEN}), also bob@example.org; batch[3] too long"
    server.default = Scripted(400, body={"code": "invalid_request", "message": message})
    with pytest.raises(WriteError) as caught:
        client_for(server.url).request("POST", "/x", {}, deadline=time.time() + 5, context_keys=["u-1", "u-10"])
    assert caught.value.message == (
        "keys <context key> and <context key> refused (token <token>), also <email>; batch[3] too long"
    )
    assert "u-1" not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_read_timeout_the_deadline_cut_short_is_a_deferral_not_a_failure(server: RecordingServer) -> None:
    """Started with 1.5 s left, the request may wait only that long for an answer that takes 2 s: the write is
    deferred (no receive spent), its outcome unknown (it may have landed)."""
    server.script = [Scripted(delay=2.0)]
    client = LaunchDarklyClient(server.url, TOKEN, policy=RetryPolicy(read_timeout=10.0))
    with pytest.raises(WriteError) as caught:
        client.request("POST", "/x", {}, deadline=time.time() + 1.5)
    assert (caught.value.permanent, caught.value.outcome_unknown, caught.value.retry_after) == (False, True, 0)
