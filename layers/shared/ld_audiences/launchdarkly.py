"""HTTP client for LaunchDarkly's API: auth headers, timeouts, and the retry rule of `retry.py`."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any

import requests

from ld_audiences.retry import RetryPolicy, is_transient

API_VERSION = "20240415"
DEADLINE = "deadline"  # WriteError code of a request never sent: no time left


class WriteError(Exception):
    """A LaunchDarkly call that did not succeed. `permanent` ones must not be retried.

    `outcome_unknown`: some attempt got no answer (timeout, dropped connection), so LaunchDarkly may have
    applied it, or may still apply it, whatever the later attempts answered.
    """

    def __init__(
        self, permanent: bool, status: int | None, code: str, message: str, *, outcome_unknown: bool = False
    ) -> None:
        super().__init__(f"{status or 'no response'} {code}: {message}")
        self.permanent, self.status, self.code, self.message = permanent, status, code, message
        self.outcome_unknown = outcome_unknown


class LaunchDarklyClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self._session = session or requests.Session()
        self._token = token
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self.responses: Counter[str] = Counter()  # "204", "429", "error", … for metrics
        self.retries = 0

    def __repr__(self) -> str:  # the token must never show up in a log line or traceback
        return f"LaunchDarklyClient({self.base_url!r})"

    def request(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        deadline: float,
        expected: Collection[int] = (),
        conflict_is_transient: bool = True,
    ) -> requests.Response:
        """Send one request, retrying transient failures while `deadline` (epoch seconds) allows.

        Returns a 2xx response or one whose status is in `expected`; raises WriteError otherwise.
        """
        headers = {
            "Authorization": self._token,  # LaunchDarkly takes the bare token, no "Bearer"
            "LD-API-Version": API_VERSION,
            "Content-Type": "application/json",
            "User-Agent": "ld-audiences/1",
        }
        attempt = 0
        unanswered = False  # an attempt went out and got no answer
        while True:
            remaining = deadline - self._clock()
            if remaining < self.policy.min_request_seconds:
                raise WriteError(False, None, DEADLINE, "no time left in this invocation", outcome_unknown=unanswered)
            timeout = (min(self.policy.connect_timeout, remaining), min(self.policy.read_timeout, remaining))
            try:
                response = self._session.request(
                    method, self.base_url + path, json=body, headers=headers, timeout=timeout
                )
            except requests.RequestException as exc:
                self.responses["error"] += 1
                unanswered = True
                failure = WriteError(
                    False, None, type(exc).__name__, "connection failed or timed out", outcome_unknown=True
                )
                wait = self.policy.backoff(attempt, self._rng)
            else:
                self.responses[str(response.status_code)] += 1
                status = response.status_code
                if 200 <= status < 300 or status in expected:
                    return response
                code, message = error_details(response)
                transient = is_transient(status) and (status != 409 or conflict_is_transient)
                failure = WriteError(not transient, status, code, message, outcome_unknown=unanswered)
                if not transient:
                    raise failure
                if status == 429:
                    wait = self.policy.rate_limit_wait(response.headers, self._clock(), self._rng)
                else:
                    wait = self.policy.backoff(attempt, self._rng)
            attempt += 1
            if attempt >= self.policy.max_attempts or self._clock() + wait >= deadline:
                raise failure
            self.retries += 1
            self._sleep(wait)


def error_details(response: requests.Response) -> tuple[str, str]:
    """LaunchDarkly's `{"code", "message"}` error body, or the status line when there is none."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        code, message = str(data.get("code", "unknown")), str(data.get("message", ""))
    else:
        code, message = f"http_{response.status_code}", response.reason or ""
    return _scrub(code, response)[:100], _scrub(message, response)[:500]


# What an email address looks like, enough to find one quoted in an error message.
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _scrub(text: str, response: requests.Response) -> str:
    """An error message can quote what the request carried: context keys (email addresses under the
    email_only policy) or even the token. It ends up in log lines and dead-letter attributes, so both go."""
    request = getattr(response, "request", None)
    token = request.headers.get("Authorization") if request is not None else None
    if isinstance(token, str) and token:
        text = text.replace(token, "<token>")
    return _EMAIL.sub("<email>", text)
