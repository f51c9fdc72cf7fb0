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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ld_audiences_local import ld_spec
from ld_audiences_local.ambiguities import Ambiguities
from ld_audiences_local.http_routing import AllMethodsHandler
from ld_audiences_local.rate_window import RouteRateLimit, RouteWindows
from ld_audiences_local.segment_listing import FilterError, query_int, segment_filter
from ld_audiences_local.terminal import printable

API_VERSION = "20240415"
VALID_VERSIONS = (20191212, 20220603, 20240415)
SEGMENT_KEY_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# LaunchDarkly context kinds: letters, digits, ".", "_", "-"; "kind" and "multi" are reserved.
CONTEXT_KIND_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
RESERVED_CONTEXT_KINDS = frozenset({"kind", "multi"})
# Tags: 1 to 64 letters, digits, ".", "_", "-" (what LaunchDarkly's Terraform provider validates).
TAG_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
# What a new LaunchDarkly account starts with: project "default" with these two environments.
DEFAULT_ENVIRONMENTS = ("default/production", "default/test")
# The integration key of LaunchDarkly's Segment integration; synced segments are keyed "{it}-{cohortId}".
SYNCED_SEGMENT_SOURCE = "segment-audiences"
# Far above any sane request; guards the emulator against a runaway client filling memory.
MAX_BODY_BYTES = 64 * 1024 * 1024

# What the rate limit counts over every token and route: windows opened, those that answered a 429, 429s.
_LIMIT_COUNTS = ("windows", "windows_with_429", "429")
# How often a 429 carries a reset time that has already passed (the real service does this too).
_PAST_RESET_PROBABILITY = 0.2
_RETRY_AFTER_PROBABILITY = 0.5

_JSONValue = Any


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


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class _Response:
    status: int
    body: _JSONValue = None
    headers: dict[str, str] | None = None
    drop: bool = False
    delay: float = 0.0


@dataclass
class _Request:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    headers: Mapping[str, str]
    content_type: str
    body: bytes


@dataclass(frozen=True)
class _Environment:
    project: str
    key: str
    client_side_id: str  # LaunchDarkly's environment `_id`

    def to_json(self) -> dict[str, _JSONValue]:
        """LaunchDarkly's `Environment` representation; the keys are stand-ins, never real secrets."""
        digest = _digest(f"{self.project}/{self.key}")
        return {
            "_links": _self_link(f"/api/v2/projects/{quote(self.project)}/environments/{quote(self.key)}"),
            "_id": self.client_side_id,
            "key": self.key,
            "name": self.key,
            "apiKey": f"sdk-emulator-{digest}",
            "mobileKey": f"mob-emulator-{digest}",
            "color": "F5A623",
            "defaultTtl": 0,
            "secureMode": False,
            "defaultTrackEvents": False,
            "requireComments": False,
            "confirmChanges": False,
            "tags": [],
            "critical": False,
        }


@dataclass
class _Segment:
    project: str
    environment: str
    key: str
    name: str
    description: str | None
    tags: list[str]
    unbounded: bool
    context_kind: str | None
    creation_date: int
    generation: int
    included: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    # Synced segments only: the environment's client-side ID and the cohort they were created for.
    client_side_id: str | None = None
    cohort_id: str | None = None

    @property
    def synced(self) -> bool:
        return self.cohort_id is not None

    @property
    def path(self) -> str:
        return f"/api/v2/segments/{quote(self.project)}/{quote(self.environment)}/{quote(self.key)}"

    def to_json(self) -> dict[str, _JSONValue]:
        """LaunchDarkly's `UserSegment` representation. Big segments list no members."""
        doc: dict[str, _JSONValue] = {
            "_links": _self_link(self.path),
            "key": self.key,
            "name": self.name,
            "tags": list(self.tags),
            "creationDate": self.creation_date,
            "lastModifiedDate": self.creation_date,
            "version": 1,
            "deleted": False,
            "rules": [],
            "unbounded": self.unbounded,
            "generation": self.generation,
        }
        if self.description is not None:
            doc["description"] = self.description
        if self.unbounded:
            doc["unboundedContextKind"] = self.context_kind
        else:
            doc["included"] = sorted(self.included)
            doc["excluded"] = sorted(self.excluded)
        if self.synced:
            doc["_external"] = SYNCED_SEGMENT_SOURCE
        return doc

    @property
    def inspection_id(self) -> str:
        """Synced segments by client-side ID and cohort, as the segment-audiences writer knows them."""
        if self.synced:
            return f"{self.client_side_id}/{self.cohort_id}"
        return f"{self.project}/{self.environment}/{self.key}"

    def inspection(self) -> dict[str, _JSONValue]:
        """The emulator's own view, members included (GET /emulator/segments)."""
        where: dict[str, _JSONValue]
        if self.synced:
            where = {"kind": "synced", "key": self.cohort_id, "environment": self.client_side_id}
        else:
            kind = "big" if self.unbounded else "standard"
            where = {"kind": kind, "key": self.key, "project": self.project, "environment": self.environment}
        return {
            "id": self.inspection_id,
            **where,
            "name": self.name,
            "contextKind": self.context_kind,
            "included": sorted(self.included),
            "excluded": sorted(self.excluded),
            # Where LaunchDarkly's REST API finds it.
            "projectKey": self.project,
            "environmentKey": self.environment,
            "segmentKey": self.key,
        }


@dataclass(frozen=True)
class _Route:
    template: str
    parts: tuple[str, ...]
    handlers: Mapping[str, str]  # HTTP method → Emulator method
    auth: str = "none"  # "none" | "rest" | "segment-audiences"

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.handlers)

    def writes(self, method: str) -> bool:
        """LaunchDarkly API calls that change state: the ones faults are injected into."""
        return self.auth != "none" and method not in ("GET", "HEAD")


def _route(template: str, auth: str = "none", **handlers: str) -> _Route:
    return _Route(template, tuple(template.strip("/").split("/")), handlers, auth)


_SEGMENTS = "/api/v2/segments/{projectKey}/{environmentKey}"
_SEGMENT = f"{_SEGMENTS}/{{segmentKey}}"
_ROUTES: tuple[_Route, ...] = (
    _route("/api/v2/segment-targets/segment-audiences", "segment-audiences", POST="_segment_audiences"),
    _route("/api/v2/versions", "rest", GET="_versions"),
    _route("/api/v2/projects/{projectKey}", "rest", GET="_get_project"),
    _route("/api/v2/projects/{projectKey}/environments/{environmentKey}", "rest", GET="_get_environment"),
    _route(_SEGMENTS, "rest", GET="_list_segments", POST="_create_segment"),
    _route(_SEGMENT, "rest", GET="_get_segment", DELETE="_delete_segment"),
    _route(f"{_SEGMENT}/contexts", "rest", POST="_update_contexts"),
    _route(f"{_SEGMENT}/contexts/{{contextKey}}", "rest", GET="_get_membership"),
    _route(f"{_SEGMENT}/users/{{userKey}}", "rest", GET="_get_membership"),
    _route("/sdk/goals/{clientSideId}", GET="_sdk_goals", HEAD="_sdk_goals"),
    _route("/emulator/segments", GET="_inspect_segments"),
    _route("/emulator/stats", GET="_inspect_stats"),
    _route("/emulator/faults", POST="_inspect_faults"),
    _route("/emulator/reset", POST="_inspect_reset"),
)


def _match(path: str) -> tuple[_Route | None, dict[str, str]]:
    # Split before decoding so an encoded "/" inside a key stays part of that key.
    raw = path.strip("/").split("/") if path not in ("", "/") else []
    if path != "/" + "/".join(raw):
        return None, {}  # trailing or doubled slashes are not routes on the real API either
    for route in _ROUTES:
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


def _digest(text: str) -> str:
    """24 hex digits, the shape of LaunchDarkly's ids, stable for the same text."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _self_link(href: str) -> dict[str, _JSONValue]:
    return {"self": {"href": href, "type": "application/json"}}


def _parse_environments(environments: Iterable[str], client_side_ids: Iterable[str]) -> list[_Environment]:
    """`project/environment` keys; the i-th client-side ID is the i-th environment's (the others get one)."""
    keys, ids = list(environments), list(client_side_ids)
    if len(ids) > len(keys):
        raise ValueError("more client-side IDs than environments: each client-side ID belongs to one environment")
    parsed: list[_Environment] = []
    for i, text in enumerate(keys):
        project, _, environment = text.partition("/")
        if not (SEGMENT_KEY_RE.match(project) and SEGMENT_KEY_RE.match(environment)):
            raise ValueError(f"environment {text!r} is not PROJECT_KEY/ENVIRONMENT_KEY")
        parsed.append(_Environment(project, environment, ids[i] if i < len(ids) else _digest(text)))
    if len({(e.project, e.key) for e in parsed}) < len(parsed) or len({e.client_side_id for e in parsed}) < len(parsed):
        raise ValueError("environments and client-side IDs must be unique")
    return parsed


def _fault_streams(seed: int | None) -> tuple[random.Random, random.Random]:
    """The random streams of the faults and of the late writes, both from one seed."""
    return random.Random(seed), random.Random(None if seed is None else f"late-{seed}")


def _error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _bad(message: str, code: str = "invalid_request") -> _ApiError:
    return _ApiError(400, code, message)


def _keys_in(doc: _JSONValue) -> int:
    """How many context keys a write carries: segment-audiences items, or included/excluded adds and removes."""
    if not isinstance(doc, dict):
        return 0
    if isinstance(doc.get("batch"), list):
        return len(doc["batch"])
    sections = [doc.get(target) for target in ("included", "excluded")]
    return sum(
        len(section.get(change) or [])
        for section in sections
        if isinstance(section, dict)
        for change in ("add", "remove")
    )


def _parse_json_object(body: bytes) -> dict[str, _JSONValue]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"invalid JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("request body must be a JSON object")
    return doc


def _req_str(doc: Mapping[str, _JSONValue], name: str, where: str = "", allow_empty: bool = False) -> str:
    path = f"{where}{name}"
    if name not in doc or doc[name] is None:
        raise _bad(f"{path} is required")
    value = doc[name]
    if not isinstance(value, str):
        raise _bad(f"{path} must be a string")
    if not allow_empty and not value:
        raise _bad(f"{path} must be a non-empty string")
    return value


def _check_context_kind(kind: str, path: str) -> None:
    if not CONTEXT_KIND_RE.match(kind) or kind in RESERVED_CONTEXT_KINDS:
        raise _bad(f"{path} is not a valid context kind: {kind!r}")


def _key_list(doc: Mapping[str, _JSONValue], name: str, where: str) -> list[str]:
    path = f"{where}.{name}"
    if name not in doc or doc[name] is None:
        return []
    value = doc[name]
    if not isinstance(value, list):
        raise _bad(f"{path} must be an array of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _bad(f"{path}[{i}] must be a non-empty string")
    return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator

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
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only; headers (Authorization) are never logged.
        if self.server.emulator.access_log:
            # http.server escapes a request line's control characters; this override must as well.
            sys.stderr.write(f"emulator: {printable(f'{self.address_string()} {format % args}')}\n")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _ApiError(411, "invalid_request", "chunked bodies are not supported; send Content-Length")
        raw = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise _ApiError(400, "invalid_request", "invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _ApiError(413, "request_entity_too_large", "request body too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        emulator = self.server.emulator
        method = self.command
        url = urlsplit(self.path)
        route, params = _match(url.path)
        stats_key = f"{method} {route.template if route else '<unmatched>'}"
        try:
            body = self._read_body()
            if route is None:
                raise _ApiError(404, "not_found", "Unknown resource")
            if method not in route.methods:
                raise _ApiError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed here",
                    {"Allow": ", ".join(route.methods)},
                )
            request = _Request(
                method=method,
                params=params,
                query=dict(parse_qsl(url.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                content_type=self.headers.get_content_type() if "Content-Type" in self.headers else "",
                body=body,
            )
            response = emulator._dispatch(route, request)
        except _ApiError as err:
            response = _Response(err.status, _error_body(err.code, err.message), err.headers)

        counted = not (route and route.template.startswith("/emulator/"))
        if response.drop:
            if counted:
                emulator._count(stats_key, "dropped")
            # No status line at all: the client sees the connection close mid-request.
            self.close_connection = True
            return
        if response.delay > 0:
            emulator._stopping.wait(response.delay)
        if counted:
            emulator._count(stats_key, str(response.status))
        self._send(response, head=method == "HEAD")

    def _send(self, response: _Response, head: bool) -> None:
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


class Emulator:
    """LaunchDarkly on loopback. All state sits behind one lock; handlers run in server threads.

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
        envs = _parse_environments(environments, client_side_ids)
        self._environments = {(e.project, e.key): e for e in envs}
        self._by_client_side_id = {e.client_side_id: e for e in envs}
        self._reject = frozenset(reject_cohorts)
        self.access_log = access_log
        self._lock = threading.Lock()
        self._faults = faults or Faults()
        self._rng, self._late_rng = _fault_streams(self._faults.seed)
        self._clock = clock  # the rate limit's (the simulation's tests drive it)
        # The account's window on each route, and its global window
        self._windows = RouteWindows(rate_limit) if rate_limit is not None else None
        self.ambiguities = ambiguities or Ambiguities()
        self._spec_violations: list[str] = []
        self._limit_counts = dict.fromkeys(_LIMIT_COUNTS, 0)
        self._late_applied = 0  # late writes applied so far
        self._epoch = 0  # reset() counts up: a late write from before a reset is never applied
        self._segments: dict[tuple[str, str, str], _Segment] = {}
        self._generations: dict[tuple[str, str, str], int] = {}  # creations per key, deletions included
        self._requests: dict[str, dict[str, int]] = {}
        self._fault_counts = {"429": 0, "5xx": 0, "slow": 0, "drop": 0, "late": 0}
        self._writes = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._stopping = threading.Event()

    # ----------------------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = _Server((host, port), _Handler)
        server.emulator = self
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
        faults.__post_init__()  # a caller may have mutated fields after construction
        with self._lock:
            self._faults = faults
            self._rng, self._late_rng = _fault_streams(faults.seed)

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """The tokens that may do everything from now on (a rotation: the old one is refused with 401)."""
        with self._lock:
            self._tokens = frozenset(tokens)

    def set_rate_limit(self, rate_limit: RouteRateLimit | None) -> None:
        """Limit every token on every API route from now on (None: unlimited); windows start afresh."""
        with self._lock:
            self._windows = RouteWindows(rate_limit) if rate_limit is not None else None

    @property
    def faults(self) -> Faults:
        with self._lock:
            return Faults(**asdict(self._faults))

    def segments(self) -> list[dict[str, _JSONValue]]:
        """Every segment with its members, by inspection id: `{client-side ID}/{cohort id}` for synced
        segments, `{project}/{environment}/{key}` for the others."""
        with self._lock:
            return sorted((s.inspection() for s in self._segments.values()), key=lambda d: str(d["id"]))

    def included(self, segment_id: str) -> set[str]:
        """Members of a segment by inspection id; empty for a segment that does not exist (see segments())."""
        with self._lock:
            for segment in self._segments.values():
                if segment.inspection_id == segment_id:
                    return set(segment.included)
        return set()

    def stats(self) -> dict[str, _JSONValue]:
        with self._lock:
            return {
                "requests": {k: dict(v) for k, v in sorted(self._requests.items())},
                "faults": dict(self._fault_counts),
                "writes": self._writes,
                "rate_limit": dict(self._limit_counts),
                "late_applied": self._late_applied,
                "spec_violations": list(self._spec_violations),
            }

    def reset(self) -> None:
        """Forget segments, stats, rate-limit windows and late writes not yet applied; faults and the rate
        limit stay, with the random streams restarted from their seed."""
        with self._lock:
            self._segments.clear()
            self._generations.clear()
            self._requests.clear()
            self._fault_counts = dict.fromkeys(self._fault_counts, 0)
            self._writes = self._late_applied = 0
            self._limit_counts = dict.fromkeys(_LIMIT_COUNTS, 0)
            if self._windows is not None:
                self._windows = RouteWindows(self._windows.limit)
            self._spec_violations.clear()
            self._epoch += 1
            self._rng, self._late_rng = _fault_streams(self._faults.seed)

    def _count(self, key: str, status: str) -> None:
        with self._lock:
            by_status = self._requests.setdefault(key, {})
            by_status[status] = by_status.get(status, 0) + 1

    # ----------------------------------------------------------------------------- dispatch

    def _authorize(self, route: _Route, req: _Request) -> None:
        token = req.headers.get("authorization")
        if route.auth == "segment-audiences":
            if token not in self._tokens:
                raise _ApiError(403, "forbidden", "Access to the requested resource was denied")
            if req.headers.get("ld-api-version") != API_VERSION:
                raise _bad(f"LD-API-Version must be {API_VERSION}", "invalid_api_version")
        elif route.auth == "rest":
            if token not in self._tokens | self._reader_tokens:
                raise _ApiError(401, "unauthorized", "Invalid access token")
            version = req.headers.get("ld-api-version")
            if version is not None and version not in {str(v) for v in VALID_VERSIONS} | {"beta"}:
                raise _bad(f"unsupported LD-API-Version {version!r}", "invalid_api_version")
            if token not in self._tokens and route.writes(req.method):
                raise _ApiError(403, "forbidden", "Access to the requested resource was denied")

    def _dispatch(self, route: _Route, req: _Request) -> _Response:
        self._authorize(route, req)
        limit_headers = self._spend_rate_limit(route, req)
        try:
            response = self._dispatch_within_limit(route, req)
        except _ApiError as err:
            response = _Response(err.status, _error_body(err.code, err.message), err.headers)
        if limit_headers:
            response.headers = {**limit_headers, **(response.headers or {})}
        self._check_answer(route, req, response)
        return response

    def _check_against_spec(self, route: _Route, req: _Request) -> None:
        """400 for a body that does not match its operation's published schema (a body that is not JSON is
        left to the handler's own message)."""
        if req.method != "POST" or route.auth == "none":
            return
        try:
            doc = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        problem = ld_spec.request_problem(req.method, route.template, doc)
        if problem is not None:
            raise _bad(f"Invalid request body: {problem}")
        limit = self.ambiguities.max_keys_per_request
        keys = _keys_in(doc)
        if limit is not None and keys > limit:
            raise _bad(f"Invalid request body: {keys} context keys, more than the {limit} allowed in one request")

    def _check_answer(self, route: _Route, req: _Request, response: _Response) -> None:
        """Record any answer LaunchDarkly does not document for the operation (`stats()["spec_violations"]`):
        the emulator's own bug, unless a switch chose an undocumented answer on purpose."""
        if response.drop or route.auth == "none":
            return
        chosen = route.template == _SEGMENTS and req.method == "POST" and response.status == 409
        if chosen and self.ambiguities.duplicate_create in ("key_exists", "conflict"):
            return
        problem = ld_spec.response_problem(req.method, route.template, response.status, response.body)
        if problem is not None:
            with self._lock:
                self._spec_violations.append(f"{req.method} {route.template}: {problem}")

    def _dispatch_within_limit(self, route: _Route, req: _Request) -> _Response:
        write = route.writes(req.method)
        slow = False
        handler: Callable[[_Request], _Response] = getattr(self, route.handlers[req.method])
        if write:
            if req.method == "POST" and req.content_type != "application/json":
                raise _ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
            self._check_against_spec(route, req)
            fault = self._draw_fault()
            if fault == "late":
                self._apply_late(handler, req)
                return _Response(0, drop=True)
            if fault == "slow":
                slow = True
            elif fault is not None:
                return self._fault_response(fault)

        try:
            response = handler(req)
        except _ApiError as err:
            response = _Response(err.status, _error_body(err.code, err.message), err.headers)
        if write and 200 <= response.status < 300:
            with self._lock:
                self._writes += 1
        if slow:
            # The change is already applied: a client that times out and retries must be idempotent.
            with self._lock:
                response.delay = self._faults.slow_seconds
        return response

    def _spend_rate_limit(self, route: _Route, req: _Request) -> dict[str, str]:
        """Count the request in the account's window on this route and in its global window: the headers every
        answer carries, or 429 past either limit. Every token of the emulator is one account, as LaunchDarkly
        counts ("the account is permitted to make per ten seconds"); requests that fail authentication are
        not counted."""
        with self._lock:
            if self._windows is None or route.auth == "none":
                return {}
            spent = self._windows.spend(f"{req.method} {route.template}", self._clock())
            self._limit_counts["windows"] += spent.opened
            self._limit_counts["429"] += not spent.allowed
            self._limit_counts["windows_with_429"] += spent.first_refusals
        if not spent.allowed:
            raise _ApiError(429, "rate_limited", "Rate limit exceeded", spent.headers)
        return spent.headers

    def _apply_late(self, handler: Callable[[_Request], _Response], req: _Request) -> None:
        """Apply the write `late_seconds` from now, in a thread of its own; never if the emulator stops or
        is reset first."""
        with self._lock:
            delay, epoch = self._faults.late_seconds, self._epoch

        def apply() -> None:
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._epoch != epoch:
                    return
            try:
                status = handler(req).status
            except _ApiError as err:
                status = err.status
            with self._lock:
                if self._epoch == epoch:
                    self._late_applied += 1
                    self._writes += 200 <= status < 300

        threading.Thread(target=apply, name="ld-emulator-late-write", daemon=True).start()

    def _draw_fault(self) -> str | None:
        with self._lock:
            f = self._faults
            # Draw every number on every write so a seed gives the same sequence whatever the rates (late
            # writes draw from a stream of their own, so the other faults' sequences stay what they were).
            d_drop, d_5xx, d_429, d_slow = (self._rng.random() for _ in range(4))
            d_late = self._late_rng.random()
            if d_drop < f.rate_drop:
                self._fault_counts["drop"] += 1
                return "drop"
            if d_late < f.rate_late:
                self._fault_counts["late"] += 1
                return "late"
            if d_5xx < f.rate_5xx:
                self._fault_counts["5xx"] += 1
                return "5xx"
            if d_429 < f.rate_429:
                self._fault_counts["429"] += 1
                return "429"
            if d_slow < f.rate_slow:
                self._fault_counts["slow"] += 1
                return "slow"
        return None

    def _fault_response(self, fault: str) -> _Response:
        with self._lock:
            reset_ms = self._faults.reset_ms
            past = self._rng.random() < _PAST_RESET_PROBABILITY
            with_retry_after = self._rng.random() < _RETRY_AFTER_PROBABILITY
            status_5xx = self._rng.choice((500, 502, 503))
            past_by = self._rng.randint(1, max(1, reset_ms))
        if fault == "drop":
            return _Response(0, drop=True)
        if fault == "5xx":
            phrase = HTTPStatus(status_5xx).phrase
            code = phrase.lower().replace(" ", "_")
            return _Response(status_5xx, _error_body(code, f"{phrase} (injected)"))
        now_ms = int(time.time() * 1000)
        delta_ms = -past_by if past else reset_ms
        headers = {"X-Ratelimit-Reset": str(now_ms + delta_ms), "X-Ratelimit-Route-Remaining": "0"}
        if with_retry_after:
            # Whole seconds, rounded down: a sub-second reset says "0", as the real header can.
            headers["Retry-After"] = str(max(0, delta_ms) // 1000)
        return _Response(429, _error_body("rate_limited", "Rate limit exceeded (injected)"), headers)

    # ----------------------------------------------------------------------------- segment-audiences

    def _segment_audiences(self, req: _Request) -> _Response:
        doc = _parse_json_object(req.body)
        env_id = _req_str(doc, "environmentId")
        kind = _req_str(doc, "contextKind")
        _check_context_kind(kind, "contextKind")
        batch = doc.get("batch")
        if batch is None:
            raise _bad("batch is required")
        if not isinstance(batch, list):
            raise _bad("batch must be an array")
        if not batch:
            raise _bad("batch must not be empty")
        items: list[tuple[str, str, str, bool]] = []
        for i, item in enumerate(batch):
            where = f"batch[{i}]."
            if not isinstance(item, dict):
                raise _bad(f"batch[{i}] must be an object")
            user_id = _req_str(item, "userId", where)
            cohort_name = _req_str(item, "cohortName", where)
            cohort_id = _req_str(item, "cohortId", where)
            if "value" not in item or item["value"] is None:
                raise _bad(f"{where}value is required")
            if not isinstance(item["value"], bool):
                raise _bad(f"{where}value must be a boolean")
            items.append((user_id, cohort_name, cohort_id, item["value"]))
        env = self._by_client_side_id.get(env_id)
        if env is None:
            raise _bad("unknown environmentId")
        _, first_name, first_cohort, _ = items[0]
        if first_cohort in self._reject:
            raise _bad("cohort rejected")
        by_cohort: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for user_id, name, cohort, value in items:
            if self.ambiguities.mixed_cohorts == "first_item":
                name, cohort = first_name, first_cohort
            by_cohort.setdefault((cohort, name), []).append((user_id, value))
        with self._lock:
            segments = [
                (self._synced_segment(env, cohort, name, kind), changes)
                for (cohort, name), changes in by_cohort.items()
            ]
            for seg, changes in segments:
                for user_id, value in changes:
                    if value:
                        seg.included.add(user_id)
                    else:
                        seg.included.discard(user_id)
        return _Response(204)

    def _synced_segment(self, env: _Environment, cohort: str, name: str, kind: str) -> _Segment:
        """The cohort's synced segment, created at the key LaunchDarkly's validation server gives it
        (docs/LAUNCHDARKLY.md); the lock is held. 409, which the capability documents, for a key held by
        another segment or a context kind that differs."""
        address = (env.project, env.key, f"{SYNCED_SEGMENT_SOURCE}-{cohort}")
        seg = self._segments.get(address)
        if seg is None:
            seg = self._new_segment(address, name, None, [], True, kind)
            seg.client_side_id, seg.cohort_id = env.client_side_id, cohort
        elif not seg.synced:
            raise _ApiError(
                409, "conflict", f"segment {address[2]!r} exists and is not synced from {SYNCED_SEGMENT_SOURCE}"
            )
        elif seg.context_kind != kind:
            raise _ApiError(
                409, "conflict", f"contextKind {kind!r} does not match the segment's context kind {seg.context_kind!r}"
            )
        seg.name = name
        return seg

    def _new_segment(
        self,
        address: tuple[str, str, str],
        name: str,
        description: str | None,
        tags: list[str],
        unbounded: bool,
        context_kind: str | None,
    ) -> _Segment:
        """Create and store a segment (the lock is held); a key created again counts a new generation."""
        generation = self._generations.get(address, 0) + 1
        self._generations[address] = generation
        project, environment, key = address
        now = int(time.time() * 1000)
        segment = _Segment(project, environment, key, name, description, tags, unbounded, context_kind, now, generation)
        self._segments[address] = segment
        return segment

    # ----------------------------------------------------------------------------- projects, environments

    def _versions(self, req: _Request) -> _Response:
        return _Response(
            200,
            {
                "validVersions": list(VALID_VERSIONS),
                "latestVersion": VALID_VERSIONS[-1],
                "currentVersion": int(API_VERSION),
                "beta": req.headers.get("ld-api-version") == "beta",
            },
        )

    def _get_project(self, req: _Request) -> _Response:
        project = req.params["projectKey"]
        environments = [e.to_json() for e in self._environments.values() if e.project == project]
        if not environments:
            raise _ApiError(404, "not_found", "Unknown project")
        path = f"/api/v2/projects/{quote(project)}"
        doc: dict[str, _JSONValue] = {
            "_links": {
                **_self_link(path),
                "environments": {"href": f"{path}/environments", "type": "application/json"},
            },
            "_id": _digest(project),
            "key": project,
            "name": project,
            "tags": [],
            "includeInSnippetByDefault": False,
        }
        if "environments" in req.query.get("expand", "").split(","):
            doc["environments"] = {
                "_links": _self_link(f"{path}/environments"),
                "totalCount": len(environments),
                "items": environments,
            }
        return _Response(200, doc)

    def _environment(self, req: _Request) -> _Environment:
        """The request's environment; 404 for an unknown project or environment, as LaunchDarkly answers."""
        project, key = req.params["projectKey"], req.params["environmentKey"]
        env = self._environments.get((project, key))
        if env is None:
            known = any(e.project == project for e in self._environments.values())
            raise _ApiError(404, "not_found", "Unknown environment" if known else "Unknown project")
        return env

    def _get_environment(self, req: _Request) -> _Response:
        return _Response(200, self._environment(req).to_json())

    # ----------------------------------------------------------------------------- REST segments

    def _create_segment(self, req: _Request) -> _Response:
        env = self._environment(req)
        doc = _parse_json_object(req.body)
        key = _req_str(doc, "key")
        if not SEGMENT_KEY_RE.match(key):
            raise _bad(f"key must match {SEGMENT_KEY_RE.pattern}")
        name = _req_str(doc, "name")
        unbounded = doc.get("unbounded", False)
        if not isinstance(unbounded, bool):
            raise _bad("unbounded must be a boolean")
        context_kind: str | None = None
        if unbounded:
            context_kind = _req_str(doc, "unboundedContextKind")
            _check_context_kind(context_kind, "unboundedContextKind")
        elif doc.get("unboundedContextKind") is not None:
            raise _bad("unboundedContextKind is only allowed when unbounded is true")
        description = doc.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad("description must be a string")
        tags = doc.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_RE.match(t) for t in tags):
            raise _bad(f"tags must be an array of strings matching {TAG_RE.pattern}")
        address = (env.project, env.key, key)
        with self._lock:
            if address in self._segments:
                duplicate = self.ambiguities.duplicate_create
                if duplicate == "key_exists":
                    raise _ApiError(409, "key_exists", "Duplicate segment key")
                if duplicate == "conflict":
                    raise _ApiError(409, "conflict", "A segment with this key already exists")
                if duplicate == "bad_request":
                    raise _bad("A segment with this key already exists")
            segment = self._new_segment(address, name, description, list(tags), unbounded, context_kind)
            return _Response(201, segment.to_json())

    def _list_segments(self, req: _Request) -> _Response:
        """`getSegments`: `limit` (default 20), `offset`, and the `filter` fields the project's tools use."""
        env = self._environment(req)
        try:
            limit, offset = query_int(req.query, "limit", 20), query_int(req.query, "offset", 0)
            matches = segment_filter(req.query.get("filter", ""))
        except FilterError as exc:
            raise _bad(str(exc)) from None
        with self._lock:
            found = [
                seg.to_json()
                for (project, environment, _), seg in sorted(self._segments.items())
                if (project, environment) == (env.project, env.key) and matches(seg)
            ]
        path = f"/api/v2/segments/{quote(env.project)}/{quote(env.key)}"
        return _Response(
            200, {"_links": _self_link(path), "totalCount": len(found), "items": found[offset : offset + limit]}
        )

    def _segment(self, req: _Request) -> _Segment:
        """The request's segment (the lock is held); 404 when it, its project or environment is unknown."""
        env = self._environment(req)
        segment = self._segments.get((env.project, env.key, req.params["segmentKey"]))
        if segment is None:
            raise _ApiError(404, "not_found", "Unknown segment")
        return segment

    def _big_segment(self, req: _Request) -> _Segment:
        segment = self._segment(req)
        if not segment.unbounded:
            raise _bad("segment is not a big segment (unbounded); this operation does not support standard segments")
        return segment

    def _get_segment(self, req: _Request) -> _Response:
        with self._lock:
            return _Response(200, self._segment(req).to_json())

    def _delete_segment(self, req: _Request) -> _Response:
        with self._lock:
            segment = self._segment(req)
            del self._segments[(segment.project, segment.environment, segment.key)]
        return _Response(204)

    def _update_contexts(self, req: _Request) -> _Response:
        doc = _parse_json_object(req.body)
        if doc.get("included") is None and doc.get("excluded") is None:
            raise _bad("included or excluded is required")
        changes: dict[str, tuple[list[str], list[str]]] = {}
        for target in ("included", "excluded"):
            section = doc.get(target)
            if section is None:
                continue
            if not isinstance(section, dict):
                raise _bad(f"{target} must be an object with add and remove arrays")
            add = _key_list(section, "add", target)
            remove = _key_list(section, "remove", target)
            both = sorted(set(add) & set(remove))
            if both:
                # Ambiguous intent; a client that coalesces changes per context never sends this.
                raise _bad(f"{target}: context key {both[0]!r} is in both add and remove")
            changes[target] = (add, remove)
        with self._lock:
            seg = self._big_segment(req)
            if seg.key in self._reject:
                raise _bad("cohort rejected")
            for target, (add, remove) in changes.items():
                members = seg.included if target == "included" else seg.excluded
                members.update(add)
                members.difference_update(remove)
        return _Response(204)

    def _get_membership(self, req: _Request) -> _Response:
        """LaunchDarkly's `BigSegmentTarget`: its key field is `userKey` on the contexts route too."""
        context_key = req.params.get("contextKey") or req.params["userKey"]
        with self._lock:
            seg = self._big_segment(req)
            known = context_key in seg.included or context_key in seg.excluded
            if not known and self.ambiguities.unknown_context == "not_found":
                raise _ApiError(404, "not_found", "Invalid resource identifier")
            return _Response(
                200,
                {
                    "userKey": context_key,
                    "included": context_key in seg.included,
                    "excluded": context_key in seg.excluded,
                },
            )

    def _sdk_goals(self, req: _Request) -> _Response:
        if req.params["clientSideId"] not in self._by_client_side_id:
            raise _ApiError(404, "not_found", "Unknown client-side ID")
        return _Response(200, [])

    # ----------------------------------------------------------------------------- inspection

    def _inspect_segments(self, req: _Request) -> _Response:
        return _Response(200, {"segments": self.segments()})

    def _inspect_stats(self, req: _Request) -> _Response:
        return _Response(200, self.stats())

    def _inspect_faults(self, req: _Request) -> _Response:
        # The body replaces the whole configuration: {} turns every fault off.
        doc = _parse_json_object(req.body) if req.body.strip() else {}
        known = {f.name for f in fields(Faults)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise _bad(f"unknown fault field {unknown[0]!r}")
        try:
            faults = Faults(**doc)
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None
        self.set_faults(faults)
        return _Response(204)

    def _inspect_reset(self, req: _Request) -> _Response:
        self.reset()
        return _Response(204)


def serve(port: int, host: str = "127.0.0.1", **kwargs: Any) -> None:
    """Run the emulator in the foreground until Ctrl-C (the `ld-audiences emulator` command)."""
    emulator = Emulator(**kwargs)
    url = emulator.start(host=host, port=port)
    print(f"listening on {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(Exception):
            emulator.stop()
