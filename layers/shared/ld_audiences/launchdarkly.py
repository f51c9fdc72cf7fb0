"""HTTP client for LaunchDarkly's API: auth headers, timeouts, and the retry rule of `retry.py`."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import quote

import requests

from ld_audiences.rate_limit import LocalRateLimit, RateLimit, wait_for_window, window_from
from ld_audiences.retry import RetryPolicy, is_transient

API_VERSION = "20240415"
DEADLINE = "deadline"  # WriteError code of a request never sent: no time left
RATE_LIMITED = "rate_limited"  # WriteError code of a request never sent: the rate-limit window is spent


class WriteError(Exception):
    """A LaunchDarkly call that did not succeed. `permanent` ones must not be retried.

    `outcome_unknown`: some attempt got no answer (timeout, dropped connection), so LaunchDarkly may have
    applied it, or may still apply it, whatever the later attempts answered.
    `retry_after`: the call was not made (or gave up) only because of time — the rate-limit window or the
    invocation's deadline — and can be tried again after that many seconds: no failure of its own.
    """

    def __init__(
        self,
        permanent: bool,
        status: int | None,
        code: str,
        message: str,
        *,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status or 'no response'} {code}: {message}")
        self.permanent, self.status, self.code, self.message = permanent, status, code, message
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class LaunchDarklyClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._session = session or requests.Session()
        self._token = token
        self._rate_limit = rate_limit or LocalRateLimit()
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._stats_lock = threading.Lock()  # several audiences are written at once
        self.responses: Counter[str] = Counter()  # "204", "429", "error", … for metrics
        self.retries = 0
        self.rate_limit_waits = 0

    def _jitter(self) -> float:
        """Added to every rate-limit wait: invocations released by one reset should not all arrive in its
        first millisecond."""
        return self._rng.uniform(0, 0.25)

    def __repr__(self) -> str:  # the token must never show up in a log line or traceback
        return f"LaunchDarklyClient({self.base_url!r})"

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.responses.clear()
            self.retries = self.rate_limit_waits = 0

    def _count(self, response: str | None = None, *, retry: bool = False, waited: bool = False) -> None:
        with self._stats_lock:
            if response is not None:
                self.responses[response] += 1
            self.retries += retry
            self.rate_limit_waits += waited

    def request(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        deadline: float,
        expected: Collection[int] = (),
        conflict_is_transient: bool = True,
        context_keys: Collection[str] = (),
    ) -> requests.Response:
        """Send one request, retrying transient failures while `deadline` (epoch seconds) allows, and
        never faster than the shared rate-limit window lets it.

        Returns a 2xx response or one whose status is in `expected`; raises WriteError otherwise, with
        LaunchDarkly's error text scrubbed of the token, e-mail addresses and `context_keys` (the keys
        the request carries, which LaunchDarkly may quote back).
        """
        headers = {
            "Authorization": self._token,  # LaunchDarkly takes the bare token, no "Bearer"
            "LD-API-Version": API_VERSION,
            "Content-Type": "application/json",
            "User-Agent": "ld-audiences/1",
        }
        attempt = 0
        unanswered = False  # an attempt went out and got no answer
        failure: WriteError | None = None
        while True:
            # A request started this close to the deadline could not see its answer: do not start it (and do
            # not take a request from the shared window for it).
            latest_start = deadline - self.policy.min_request_seconds
            if self._clock() > latest_start:
                raise failure or _out_of_time(unanswered)
            wait = wait_for_window(
                self._rate_limit,
                clock=self._clock,
                sleep=self._sleep,
                jitter=self._jitter,
                latest_start=latest_start,
                max_wait=self.policy.max_rate_limit_wait,
            )
            if wait is not None:
                self._count(waited=True)
                raise WriteError(
                    False, 429, RATE_LIMITED, "rate-limit window", outcome_unknown=unanswered, retry_after=wait
                )
            remaining = deadline - self._clock()
            if remaining < self.policy.min_request_seconds:
                raise failure or _out_of_time(unanswered)
            timeout = (min(self.policy.connect_timeout, remaining), min(self.policy.read_timeout, remaining))
            try:
                response = self._session.request(
                    method, self.base_url + path, json=body, headers=headers, timeout=timeout
                )
            except requests.RequestException as exc:
                self._count("error")
                unanswered = True
                # A read timeout the deadline cut short is the invocation's lack of time, not LaunchDarkly's
                # failure: the records are deferred (and looked at again, the outcome being unknown).
                cut_short = isinstance(exc, requests.ReadTimeout) and timeout[1] < self.policy.read_timeout
                failure = WriteError(
                    False,
                    None,
                    type(exc).__name__,
                    "connection failed or timed out",
                    outcome_unknown=True,
                    retry_after=0 if cut_short else None,
                )
                wait = self.policy.backoff(attempt, self._rng)
            else:
                status = response.status_code
                self._count(str(status))
                now = self._clock()
                windows = window_from(status, response.headers, now)
                for window in windows:
                    self._rate_limit.learn(window)
                if 200 <= status < 300 or status in expected:
                    setattr(response, _UNANSWERED, unanswered)
                    return response
                code, message = error_details(response, context_keys)
                transient = is_transient(status) and (status != 409 or conflict_is_transient)
                if status == 429:
                    # LaunchDarkly asks for at least its wait, which this request keeps even where the shared
                    # window could not (an answer it took for an earlier window's, the table unavailable);
                    # without a usable one, trying again at once would only spin. Giving up before then is
                    # a matter of time, not a failure.
                    if windows:
                        wait = max(window.reset_at for window in windows) - now + self._jitter()
                    else:
                        wait = self.policy.rate_limit_backoff(attempt, self._rng)
                    failure = WriteError(False, 429, code, message, outcome_unknown=unanswered, retry_after=wait)
                else:
                    failure = WriteError(not transient, status, code, message, outcome_unknown=unanswered)
                    if not transient:
                        raise failure
                    wait = self.policy.backoff(attempt, self._rng)
            attempt += 1
            if (
                attempt >= self.policy.max_attempts
                or wait > self.policy.max_rate_limit_wait
                or self._clock() + wait >= latest_start
            ):
                raise failure
            self._count(retry=True)
            if wait > 0:
                self._sleep(wait)


def json_object(response: requests.Response) -> dict[str, Any]:
    """The response's JSON object; empty when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


_UNANSWERED = "ld_audiences_unanswered_before"


def unanswered_before(response: requests.Response) -> bool:
    """Whether an attempt before this answer got none: LaunchDarkly may still apply that one, later."""
    return bool(getattr(response, _UNANSWERED, False))


def _out_of_time(unanswered: bool) -> WriteError:
    return WriteError(
        False, None, DEADLINE, "no time left in this invocation", outcome_unknown=unanswered, retry_after=0
    )


MIN_SCRUBBED_KEY = 3  # shorter context keys are left in LaunchDarkly's error text (see error_details)


def error_details(response: requests.Response, context_keys: Iterable[str] = ()) -> tuple[str, str]:
    """LaunchDarkly's `{"code", "message"}` error body, or the status line when there is none, scrubbed
    (see `_scrub`): it ends up in log lines and dead-letter attributes."""
    data = json_object(response)
    if data:
        code, message = str(data.get("code", "unknown")), str(data.get("message", ""))
    else:
        code, message = f"http_{response.status_code}", response.reason or ""
    request = getattr(response, "request", None)
    token = request.headers.get("Authorization") if request is not None else None
    # Keys of one or two characters identify no one, and scrubbing them would mangle LaunchDarkly's own words
    # (a key "b" inside "forbidden", the code that names the failure in dead letters).
    secrets = {key: "<context key>" for key in context_keys if len(key) >= MIN_SCRUBBED_KEY}
    if isinstance(token, str) and token:
        secrets[token] = "<token>"
    # Scrubbed whole, then cut: a cut first could leave the start of a key behind.
    return _scrub(code, secrets)[:100], _scrub(message, secrets)[:500]


# What an email address looks like, enough to find one quoted in an error message.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _scrub(text: str, secrets: dict[str, str]) -> str:
    """An error message can quote what the request carried: context keys (personal data, e-mail addresses
    under the email_only policy) or even the token. Each is replaced by its placeholder wherever it shows,
    as sent or as JSON or a URL would escape it, and so is any other e-mail-shaped text."""
    forms: dict[str, str] = {}
    for secret, placeholder in secrets.items():
        escaped = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe=""))
        for form in (secret, *escaped):
            if form and form in text:
                forms.setdefault(form, placeholder)
    if forms:
        # One pass, longest first: a key inside a longer one, or inside a placeholder, is not replaced twice.
        pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))
        text = pattern.sub(lambda match: forms[match.group()], text)
    return _EMAIL.sub("<email>", text)
