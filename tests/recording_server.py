"""A real HTTP server on loopback that answers from a script and records every request, for tests
that must see exact request bodies and headers or exact response sequences."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON; None when the body is empty or not JSON (gzip, say)
    raw: bytes


@dataclass
class Scripted:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0  # seconds between taking the request and answering it


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class RecordingServer:
    """Answers with the next `script` entry, else `respond(request)` when given, else `default`."""

    def __init__(
        self,
        script: list[Scripted] | None = None,
        default: Scripted | None = None,
        respond: Callable[[Recorded], Scripted] | None = None,
    ) -> None:
        self.script = list(script or [])
        self.default = default or Scripted()
        self.respond = respond
        self.requests: list[Recorded] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                request = Recorded(self.command, self.path, dict(self.headers.items()), _json_or_none(raw), raw)
                owner.requests.append(request)
                if owner.script:
                    answer = owner.script.pop(0)
                else:
                    answer = owner.respond(request) if owner.respond else owner.default
                time.sleep(answer.delay)
                payload = json.dumps(answer.body).encode() if answer.body is not None else b""
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except ConnectionError:  # the client gave up waiting (a delayed answer): expected here
                    self.close_connection = True

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
