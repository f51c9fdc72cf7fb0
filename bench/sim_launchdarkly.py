"""LaunchDarkly's segment-audiences endpoint in process, behind a real `requests.Session`.

A transport adapter answers what `requests` has fully prepared (the JSON body encoded, headers built),
so the product's client does all its own work. The model, from the first-sync issue and LaunchDarkly's
documentation (docs/LAUNCHDARKLY.md): an answer takes `base_latency` plus `per_key_latency` per key; the
route rate limit is the local emulator's own model (devtools/ld_audiences_local/models/rate_window.py: a window
opened by its first request, 10 s by default, counted when a request arrives, its headers), on the
simulation's clock; beyond the limit, 429 with `{"code": "rate_limited", ...}` and nothing applied.
Segments keep real state (every item lands in the segment of the batch's first item, as LaunchDarkly does).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import BaseAdapter

from ld_audiences_local.models.rate_window import RouteRateLimit, RouteWindows

# The token and route every write of the simulation spends (one API token, one route).
ROUTE = ("token", "POST /api/v2/segment-targets/segment-audiences")


@dataclass
class LaunchDarklyModel:
    clock: Callable[[], float]
    block: Callable[[float], None]  # spends virtual time in the calling task
    uncounted: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    base_latency: float = 0.150
    per_key_latency: float = 0.001 / 10
    rate_limit: RouteRateLimit = field(default_factory=lambda: RouteRateLimit.per_second(5))
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    statuses: Counter[int] = field(default_factory=Counter)
    keys_written: int = 0
    reads: int = 0
    windows: int = 0  # windows opened

    def __post_init__(self) -> None:
        self._windows = RouteWindows(self.rate_limit)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        spent = self._windows.spend(ROUTE, self.clock())
        self.windows += spent.opened
        headers = spent.headers
        if not spent.allowed:
            self.statuses[429] += 1
            payload = json.dumps({"code": "rate_limited", "message": "Rate limit exceeded"})
            return 429, headers, payload.encode()
        batch = body.get("batch", [])
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
