"""Who the local stack's servers answer: this machine's tools, never a web page the developer happens to visit.

moto holds the webhook secret and the LaunchDarkly token, and the status page shows what the pipeline does;
both listen on loopback, which a browser reaches too. A page from another origin says so in `Origin` (on
every CORS request) and `Sec-Fetch-Site` (on every request of a recent browser); a page that rebinds its own
DNS name to 127.0.0.1 still sends that name in `Host`. So a request is answered only when its `Host` is a
loopback name with the server's port, it names no other origin, and it is no CORS preflight: no
`Access-Control-*` header is ever granted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# The name `sam local invoke`'s containers reach the host by (events/env.json): moto answers it too.
DOCKER_HOST_NAME = "host.docker.internal"
# Sec-Fetch-Site of a request a page of this very server made, or one the user typed.
_OWN_FETCH_SITES = frozenset({"same-origin", "none"})


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str


def _name_and_port(netloc: str) -> tuple[str, int | None] | None:
    try:
        split = urlsplit(f"//{netloc}")
        return (split.hostname or "", split.port)
    except ValueError:  # a port that is no number
        return None


def refusal(
    method: str, headers: Mapping[str, str], port: int, names: Iterable[str] = LOOPBACK_NAMES
) -> Refusal | None:
    """Why a request to the server on `port` is not answered (None: it is). `headers` by lower-case name;
    `names` are the host names the server answers to."""
    allowed = {(name, port) for name in names}
    if _name_and_port(headers.get("host", "")) not in allowed:
        return Refusal(421, "this server answers only requests addressed to it on loopback")
    origin = headers.get("origin")
    if origin is not None:
        split = urlsplit(origin)
        if split.scheme != "http" or _name_and_port(split.netloc) not in allowed:
            return Refusal(403, "cross-origin requests are refused")
    if headers.get("sec-fetch-site", "none") not in _OWN_FETCH_SITES:
        return Refusal(403, "cross-origin requests are refused")
    if method == "OPTIONS" and "access-control-request-method" in headers:
        return Refusal(403, "CORS preflights are refused: no other origin may read this server")
    return None


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class LoopbackOnly:
    """WSGI middleware: refuses what `refusal` refuses, and drops any `Access-Control-*` header the wrapped
    application (moto, which enables CORS for every origin) would send."""

    def __init__(self, app: WSGIApp, names: Iterable[str] = LOOPBACK_NAMES) -> None:
        self._app = app
        self._names = frozenset(names)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        headers = {
            key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items() if key.startswith("HTTP_")
        }
        refused = refusal(environ["REQUEST_METHOD"], headers, int(environ["SERVER_PORT"]), self._names)
        if refused is not None:
            body = f"{refused.reason}\n".encode()
            start_response(
                f"{refused.status} Refused",
                [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            )
            return [body]

        def start_without_cors(status: str, response_headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(k, v) for k, v in response_headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, *exc_info)

        return self._app(environ, start_without_cors)
