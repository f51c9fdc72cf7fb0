"""A strict, stateful LaunchDarkly stand-in served over HTTP on loopback.

It implements the endpoints ld-audiences talks to (segment-audiences, the big-segment REST API with its
membership reads, projects and environments, the credential checks) with real state, LaunchDarkly's
field names, validation and error bodies, and rate-limit headers (docs/LAUNCHDARKLY.md says where each
comes from), and it can inject faults into the write endpoints so the product's real HTTP client can be
exercised against 429s, 5xx, slow answers, dropped connections and writes applied after the connection
dropped. A deterministic route rate limit (`RouteRateLimit`) answers 429 like LaunchDarkly past N requests
per window.

Request bodies are checked against LaunchDarkly's published schemas and the emulator's own answers against
the documented statuses and bodies (`ld_spec`); where the documentation leaves an answer open, `Ambiguities`
picks one.

This module puts the parts together and decides the order of the checks; each part is a module of its own:
the account's state (emulator_state), its endpoints (emulator_api), the rate limit (emulator_rate_limit),
the faults (emulator_faults) and the HTTP server with its routes (emulator_http).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from ld_audiences_local import ld_spec
from ld_audiences_local.ambiguities import Ambiguities
from ld_audiences_local.emulator_api import API_VERSION, VALID_VERSIONS, LaunchDarklyApi
from ld_audiences_local.emulator_faults import FaultInjector, Faults
from ld_audiences_local.emulator_http import SEGMENTS, EmulatorServer, Route
from ld_audiences_local.emulator_rate_limit import AccountRateLimit
from ld_audiences_local.emulator_requests import ApiError, JSONValue, Request, Response, bad, keys_in, parse_json_object
from ld_audiences_local.emulator_state import DEFAULT_ENVIRONMENTS, Account, parse_environments
from ld_audiences_local.models.rate_window import RouteRateLimit

# What other modules import from here.
__all__ = ["DEFAULT_ENVIRONMENTS", "Emulator", "Faults", "RouteRateLimit", "serve"]


class Emulator:
    """LaunchDarkly on loopback; handlers run in server threads.

    `environments` are the projects and environments that exist (`project/environment` keys; by default
    what a new LaunchDarkly account starts with); `client_side_ids[i]` is the client-side ID of the i-th.
    `tokens` may do everything; `reader_tokens` may only read (LaunchDarkly's Reader role).
    `rate_limit` limits the account on every API route (None: unlimited).
    `ambiguities` picks LaunchDarkly's answer wherever its documentation leaves it open.
    """

    def __init__(
        self,
        tokens: Iterable[str] = ("api-local-token",),
        client_side_ids: Iterable[str] = ("local-client-side-id",),
        faults: Faults | None = None,
        reject_cohorts: Iterable[str] = (),
        access_log: bool = False,
        *,
        environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
        reader_tokens: Iterable[str] = (),
        rate_limit: RouteRateLimit | None = None,
        clock: Callable[[], float] = time.time,
        ambiguities: Ambiguities | None = None,
    ) -> None:
        self._tokens = frozenset(tokens)
        self._reader_tokens = frozenset(reader_tokens)
        self._account = Account(parse_environments(environments, client_side_ids))
        self._api = LaunchDarklyApi(self._account, ambiguities or Ambiguities(), reject_cohorts)
        self.access_log = access_log
        self._stopping = threading.Event()
        self._faults = FaultInjector(faults or Faults(), self._stopping)
        self._rate_limit = AccountRateLimit(rate_limit, clock)
        self._lock = threading.Lock()  # the counts below
        self._spec_violations: list[str] = []
        self._requests: dict[str, dict[str, int]] = {}
        self._writes = 0
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = EmulatorServer((host, port), self)
        self._stopping.clear()
        self._server = server
        self._url = f"http://{host}:{server.server_port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ld-emulator", daemon=True
        )
        self._thread.start()
        return self._url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a slow fault; late writes are never applied
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    # ----------------------------------------------------------------------------- control / inspection

    def set_faults(self, faults: Faults) -> None:
        self._faults.configure(faults)

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """The tokens that may do everything from now on (a rotation: the old one is refused with 401)."""
        with self._lock:
            self._tokens = frozenset(tokens)

    def set_rate_limit(self, rate_limit: RouteRateLimit | None) -> None:
        """Limit every token on every API route from now on (None: unlimited); windows start afresh."""
        self._rate_limit.set_limit(rate_limit)

    @property
    def ambiguities(self) -> Ambiguities:
        return self._api.ambiguities

    @ambiguities.setter
    def ambiguities(self, ambiguities: Ambiguities) -> None:
        """Tests switch LaunchDarkly's open answers on a running emulator."""
        self._api.ambiguities = ambiguities

    @property
    def faults(self) -> Faults:
        return self._faults.faults

    def segments(self) -> list[dict[str, JSONValue]]:
        """Every segment with its members, by inspection id: `{client-side ID}/{cohort id}` for synced
        segments, `{project}/{environment}/{key}` for the others."""
        return self._account.inspection()

    def included(self, segment_id: str) -> set[str]:
        """Members of a segment by inspection id; empty for a segment that does not exist (see segments())."""
        return self._account.included(segment_id)

    def stats(self) -> dict[str, JSONValue]:
        with self._lock:
            requests = {k: dict(v) for k, v in sorted(self._requests.items())}
            writes, violations = self._writes, list(self._spec_violations)
        return {
            "requests": requests,
            "faults": self._faults.counts(),
            "writes": writes,
            "rate_limit": self._rate_limit.counts(),
            "late_applied": self._faults.late_applied,
            "spec_violations": violations,
        }

    def reset(self) -> None:
        """Forget segments, stats, rate-limit windows and late writes not yet applied; faults and the rate
        limit stay, with the random streams restarted from their seed."""
        self._faults.reset()  # first: a late write due meanwhile must not land in the emptied account
        self._account.clear()
        self._rate_limit.reset()
        with self._lock:
            self._requests.clear()
            self._writes = 0
            self._spec_violations.clear()

    # ----------------------------------------------------------------------------- what the server calls

    def count(self, key: str, status: str) -> None:
        with self._lock:
            by_status = self._requests.setdefault(key, {})
            by_status[status] = by_status.get(status, 0) + 1

    def wait(self, seconds: float) -> None:
        """Wait out a slow answer, or until the emulator stops."""
        self._stopping.wait(seconds)

    def dispatch(self, route: Route, req: Request) -> Response:
        """Authenticate, count against the rate limit, check the body against LaunchDarkly's schema, draw a
        fault, answer; and record an answer LaunchDarkly does not document."""
        if route.inspection:
            inspect: Callable[[Request], Response] = getattr(self, f"_{route.handlers[req.method]}")
            return inspect(req)
        self._authorize(route, req)
        limit_headers = self._rate_limit.spend(f"{req.method} {route.template}") if route.auth != "none" else {}
        try:
            response = self._answer(route, req)
        except ApiError as err:
            response = err.response()
        if limit_headers:
            response.headers = {**limit_headers, **(response.headers or {})}
        self._check_answer(route, req, response)
        return response

    def _authorize(self, route: Route, req: Request) -> None:
        with self._lock:
            tokens = self._tokens
        token = req.headers.get("authorization")
        if route.auth == "segment-audiences":
            if token not in tokens:
                raise ApiError(403, "forbidden", "Access to the requested resource was denied")
            if req.headers.get("ld-api-version") != API_VERSION:
                raise bad(f"LD-API-Version must be {API_VERSION}", "invalid_api_version")
        elif route.auth == "rest":
            if token not in tokens | self._reader_tokens:
                raise ApiError(401, "unauthorized", "Invalid access token")
            version = req.headers.get("ld-api-version")
            if version is not None and version not in {str(v) for v in VALID_VERSIONS} | {"beta"}:
                raise bad(f"unsupported LD-API-Version {version!r}", "invalid_api_version")
            if token not in tokens and route.writes(req.method):
                raise ApiError(403, "forbidden", "Access to the requested resource was denied")

    def _answer(self, route: Route, req: Request) -> Response:
        handler: Callable[[Request], Response] = getattr(self._api, route.handlers[req.method])
        if not route.writes(req.method):
            return handler(req)
        if req.method == "POST" and req.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
        self._check_against_spec(route, req)
        return self._faults.write(lambda: self._write(handler, req))

    def _write(self, handler: Callable[[Request], Response], req: Request) -> Response:
        try:
            response = handler(req)
        except ApiError as err:
            response = err.response()
        if 200 <= response.status < 300:
            with self._lock:
                self._writes += 1
        return response

    def _check_against_spec(self, route: Route, req: Request) -> None:
        """400 for a body that does not match its operation's published schema (a body that is not JSON is
        left to the handler's own message)."""
        if req.method != "POST":
            return
        try:
            doc = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        problem = ld_spec.request_problem(req.method, route.template, doc)
        if problem is not None:
            raise bad(f"Invalid request body: {problem}")
        limit = self.ambiguities.max_keys_per_request
        keys = keys_in(doc)
        if limit is not None and keys > limit:
            raise bad(f"Invalid request body: {keys} context keys, more than the {limit} allowed in one request")

    def _check_answer(self, route: Route, req: Request, response: Response) -> None:
        """Record any answer LaunchDarkly does not document for the operation (`stats()["spec_violations"]`):
        the emulator's own bug, unless a switch chose an undocumented answer on purpose."""
        if response.drop or route.auth == "none":
            return
        chosen = route.template == SEGMENTS and req.method == "POST" and response.status == 409
        if chosen and self.ambiguities.duplicate_create in ("key_exists", "conflict"):
            return
        problem = ld_spec.response_problem(req.method, route.template, response.status, response.body)
        if problem is not None:
            with self._lock:
                self._spec_violations.append(f"{req.method} {route.template}: {problem}")

    # ----------------------------------------------------------------------------- /emulator/ routes

    def _inspect_segments(self, req: Request) -> Response:
        return Response(200, {"segments": self.segments()})

    def _inspect_stats(self, req: Request) -> Response:
        return Response(200, self.stats())

    def _inspect_faults(self, req: Request) -> Response:
        # The body replaces the whole configuration: {} turns every fault off.
        doc = parse_json_object(req.body) if req.body.strip() else {}
        unknown = sorted(set(doc) - {f.name for f in fields(Faults)})
        if unknown:
            raise bad(f"unknown fault field {unknown[0]!r}")
        try:
            faults = Faults(**doc)
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        self.set_faults(faults)
        return Response(204)

    def _inspect_reset(self, req: Request) -> Response:
        self.reset()
        return Response(204)


def serve(port: int, host: str = "127.0.0.1", **kwargs: Any) -> None:
    """Run the emulator in the foreground until Ctrl-C (the `ld-audiences emulator` command)."""
    emulator = Emulator(**kwargs)
    try:
        # Inside the try: a Ctrl-C right after the line (its reader may act on it at once) still stops cleanly.
        print(f"listening on {emulator.start(host=host, port=port)}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            emulator.stop()
