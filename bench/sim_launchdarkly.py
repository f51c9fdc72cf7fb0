"""LaunchDarkly's segment-audiences endpoint in process, behind a real `requests.Session`.

A transport adapter answers what `requests` has fully prepared (the JSON body encoded, headers built),
so the product's client does all its own work. The model, from the first-sync issue and LaunchDarkly's
documentation (docs/LAUNCHDARKLY.md): an answer takes `base_latency` plus `per_key_latency` per key;
at most `limit` requests per `window` seconds, counted when a request arrives; every answer carries
`X-Ratelimit-Route-Remaining` and `X-Ratelimit-Reset` (epoch ms of the window's end) unless
`remaining_headers` is off, in which case only 429s say anything (`X-Ratelimit-Reset`); beyond the
limit, 429 with `{"code": "rate_limited", ...}` and nothing applied. Segments keep real state (every
item lands in the segment of the batch's first item, as LaunchDarkly does).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import BaseAdapter


@dataclass
class LaunchDarklyModel:
    clock: Callable[[], float]
    block: Callable[[float], None]  # spends virtual time in the calling task
    uncounted: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    base_latency: float = 0.150
    per_key_latency: float = 0.001 / 10
    limit: int = 5
    window: float = 1.0
    remaining_headers: bool = True
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    statuses: Counter[int] = field(default_factory=Counter)
    keys_written: int = 0
    reads: int = 0
    _window_index: int = -1
    _used: int = 0

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        now = self.clock()
        index = math.floor(now / self.window)
        if index != self._window_index:
            self._window_index, self._used = index, 0
        reset_ms = str(int((index + 1) * self.window * 1000))
        self._used += 1
        batch = body.get("batch", [])
        if self._used > self.limit:
            self.statuses[429] += 1
            payload = json.dumps({"code": "rate_limited", "message": "You've exceeded the API rate limit."})
            return 429, {"X-Ratelimit-Reset": reset_ms, "X-Ratelimit-Route-Remaining": "0"}, payload.encode()
        headers = {"X-Ratelimit-Reset": reset_ms}
        if self.remaining_headers:
            headers["X-Ratelimit-Route-Remaining"] = str(self.limit - self._used)
        if batch:
            segment = self.members[batch[0]["cohortId"]]
            for item in batch:
                (segment.add if item["value"] else segment.discard)(item["userId"])
            self.keys_written += len(batch)
        self.statuses[204] += 1
        return 204, headers, b""

    def read(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """Big-segment reads (docs/LAUNCHDARKLY.md): the segment, and one context's membership. A synced
        segment is keyed `segment-audiences-<audience id>`."""
        self.reads += 1
        parts = path.split("?")[0].strip("/").split("/")  # api v2 segments proj env key [contexts ctx]
        key = parts[5] if len(parts) > 5 else ""
        cohort = key.removeprefix("segment-audiences-")
        members = self.members.get(cohort)
        if members is None:
            return 404, {}, json.dumps({"code": "not_found", "message": "Unknown segment"}).encode()
        if len(parts) == 6:
            return 200, {}, json.dumps({"key": key, "unbounded": True, "unboundedContextKind": "user"}).encode()
        context = requests.utils.unquote(parts[7])
        answer = {"userKey": context, "included": context in members, "excluded": False}
        return 200, {}, json.dumps(answer).encode()

    def latency(self, body: dict[str, Any]) -> float:
        return self.base_latency + self.per_key_latency * len(body.get("batch", []))


class _Adapter(BaseAdapter):
    def __init__(self, model: LaunchDarklyModel) -> None:
        super().__init__()
        self._model = model

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:  # type: ignore[override]
        model = self._model
        with model.uncounted():
            if request.method == "GET":
                body: dict[str, Any] = {}
                status, headers, payload = model.read(request.path_url)
            else:
                body = json.loads(request.body or b"{}")
                # The limit counts a request when it arrives; the answer comes after LaunchDarkly's work.
                status, headers, payload = model.answer(body)
        model.block(model.latency(body))
        response = requests.Response()
        response.status_code, response._content, response.url = status, payload, request.url or ""
        response.headers.update(headers)
        response.request = request
        response.reason = {429: "Too Many Requests", 404: "Not Found", 200: "OK"}.get(status, "No Content")
        return response

    def close(self) -> None:
        pass


def session_for(model: LaunchDarklyModel) -> requests.Session:
    session = requests.Session()
    session.mount("https://", _Adapter(model))
    return session
