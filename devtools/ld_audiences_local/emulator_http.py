"""The LaunchDarkly emulator on the wire: its routes, and an HTTP/1.1 server on loopback that reads each
request, finds its route (404, 405 with `Allow`) and hands it to the emulator (`Dispatcher`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from ld_audiences_cli.terminal import printable
from ld_audiences_local.emulator_requests import ApiError, Request, Response
from ld_audiences_local.http_routing import AllMethodsHandler

# Far above any sane request; guards the emulator against a runaway client filling memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
INSPECTION_PREFIX = "/emulator/"


@dataclass(frozen=True)
class Route:
    template: str
    parts: tuple[str, ...]
    handlers: Mapping[str, str]  # HTTP method → handler name (LaunchDarklyApi's, or the Emulator's for /emulator/)
    auth: str = "none"  # "none" | "rest" | "segment-audiences"

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.handlers)

    @property
    def inspection(self) -> bool:
        """The emulator's own routes, not LaunchDarkly's: never counted, limited or faulted."""
        return self.template.startswith(INSPECTION_PREFIX)

    def writes(self, method: str) -> bool:
        """LaunchDarkly API calls that change state: the ones faults are injected into."""
        return self.auth != "none" and method not in ("GET", "HEAD")


def _route(template: str, auth: str = "none", **handlers: str) -> Route:
    return Route(template, tuple(template.strip("/").split("/")), handlers, auth)


SEGMENTS = "/api/v2/segments/{projectKey}/{environmentKey}"
_SEGMENT = f"{SEGMENTS}/{{segmentKey}}"
ROUTES: tuple[Route, ...] = (
    _route("/api/v2/segment-targets/segment-audiences", "segment-audiences", POST="segment_audiences"),
    _route("/api/v2/versions", "rest", GET="versions"),
    _route("/api/v2/projects/{projectKey}", "rest", GET="get_project"),
    _route("/api/v2/projects/{projectKey}/environments/{environmentKey}", "rest", GET="get_environment"),
    _route(SEGMENTS, "rest", GET="list_segments", POST="create_segment"),
    _route(_SEGMENT, "rest", GET="get_segment", DELETE="delete_segment"),
    _route(f"{_SEGMENT}/contexts", "rest", POST="update_contexts"),
    _route(f"{_SEGMENT}/contexts/{{contextKey}}", "rest", GET="get_membership"),
    _route(f"{_SEGMENT}/users/{{userKey}}", "rest", GET="get_membership"),
    _route("/sdk/goals/{clientSideId}", GET="sdk_goals", HEAD="sdk_goals"),
    _route(f"{INSPECTION_PREFIX}segments", GET="inspect_segments"),
    _route(f"{INSPECTION_PREFIX}stats", GET="inspect_stats"),
    _route(f"{INSPECTION_PREFIX}faults", POST="inspect_faults"),
    _route(f"{INSPECTION_PREFIX}reset", POST="inspect_reset"),
)


def match(path: str) -> tuple[Route | None, dict[str, str]]:
    # Split before decoding so an encoded "/" inside a key stays part of that key.
    raw = path.strip("/").split("/") if path not in ("", "/") else []
    if path != "/" + "/".join(raw):
        return None, {}  # trailing or doubled slashes are not routes on the real API either
    for route in ROUTES:
        if len(route.parts) != len(raw):
            continue
        params: dict[str, str] = {}
        for tpl, seg in zip(route.parts, raw, strict=True):
            if tpl.startswith("{"):
                value = unquote(seg)
                if not value:
                    break
                params[tpl[1:-1]] = value
            elif tpl != seg:
                break
        else:
            return route, params
    return None, {}


class Dispatcher(Protocol):
    """What the server needs of the emulator."""

    access_log: bool

    def dispatch(self, route: Route, request: Request) -> Response: ...

    def count(self, key: str, status: str) -> None: ...

    def wait(self, seconds: float) -> None: ...


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        super().__init__(address, _Handler)
        self.dispatcher = dispatcher

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout during a slow fault) makes the write fail; that is expected
        # traffic here, not a server bug worth a traceback on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(AllMethodsHandler):
    # Keep-alive like the real API, so client connection pools and dropped-connection faults behave
    # as they do in production.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms a response on loopback).
    disable_nagle_algorithm = True
    server_version = "ld-audiences-emulator"
    sys_version = ""
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only; headers (Authorization) are never logged.
        if self.server.dispatcher.access_log:
            # http.server escapes a request line's control characters; this override must as well.
            sys.stderr.write(f"emulator: {printable(f'{self.address_string()} {format % args}')}\n")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(411, "invalid_request", "chunked bodies are not supported; send Content-Length")
        raw = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "invalid_request", "invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, "request_entity_too_large", "request body too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        dispatcher = self.server.dispatcher
        method = self.command
        url = urlsplit(self.path)
        route, params = match(url.path)
        stats_key = f"{method} {route.template if route else '<unmatched>'}"
        try:
            body = self._read_body()
            if route is None:
                raise ApiError(404, "not_found", "Unknown resource")
            if method not in route.methods:
                raise ApiError(
                    405, "method_not_allowed", f"{method} is not allowed here", {"Allow": ", ".join(route.methods)}
                )
            request = Request(
                method=method,
                params=params,
                query=dict(parse_qsl(url.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                content_type=self.headers.get_content_type() if "Content-Type" in self.headers else "",
                body=body,
            )
            response = dispatcher.dispatch(route, request)
        except ApiError as err:
            response = err.response()

        counted = not (route and route.inspection)
        if response.drop:
            if counted:
                dispatcher.count(stats_key, "dropped")
            # No status line at all: the client sees the connection close mid-request.
            self.close_connection = True
            return
        if response.delay > 0:
            dispatcher.wait(response.delay)
        if counted:
            dispatcher.count(stats_key, str(response.status))
        self._send(response, head=method == "HEAD")

    def _send(self, response: Response, head: bool) -> None:
        self.send_response(response.status)
        payload = b""
        if response.body is not None:
            payload = json.dumps(response.body, separators=(",", ":")).encode()
            self.send_header("Content-Type", "application/json")
        if response.status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        for name, value in (response.headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if payload and not head:
            self.wfile.write(payload)
