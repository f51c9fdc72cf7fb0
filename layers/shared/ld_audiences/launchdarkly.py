"""HTTP client for LaunchDarkly's API: auth headers, timeouts, and the retry rule of `retry.py`."""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import quote

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
        context_keys: Collection[str] = (),
    ) -> requests.Response:
        """Send one request, retrying transient failures while `deadline` (epoch seconds) allows.

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
                code, message = error_details(response, context_keys)
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


def json_object(response: requests.Response) -> dict[str, Any]:
    """The response's JSON object; empty when the body is not one."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


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
    secrets = {key: "<context key>" for key in context_keys}
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
