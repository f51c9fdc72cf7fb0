"""A real HTTP server on loopback that answers from a script and records every request, for tests
that must see exact request bodies and headers or exact response sequences."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Scripted:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class RecordingServer:
    def __init__(self, script: list[Scripted] | None = None, default: Scripted | None = None) -> None:
        self.script = list(script or [])
        self.default = default or Scripted()
        self.requests: list[Recorded] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                owner.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), json.loads(raw) if raw else None)
                )
                answer = owner.script.pop(0) if owner.script else owner.default
                payload = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
