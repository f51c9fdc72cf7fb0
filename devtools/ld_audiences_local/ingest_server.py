"""The local stack's HTTP endpoint: real HTTP on loopback in front of the API Gateway model.

It reads each request (Content-Length or chunked, refusing bodies over API Gateway's limit without reading
them) and hands it to `ApiGateway`, which is attached once the ingest function is loaded; `GET /` and
`GET /status.json` are the local stack's own status page (status_page.py), which the deployed API does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ld_audiences_local.api_gateway import (
    API_GATEWAY_MAX_BODY,
    Answer,
    ApiGateway,
    Request,
    body_too_large,
    json_answer,
)
from ld_audiences_local.http_routing import AllMethodsHandler
from ld_audiences_local.status_page import Page


class IngestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, access_log: bool = False) -> None:
        super().__init__(address, _IngestHandler)
        self.access_log = access_log
        self.gateway: ApiGateway | None = None
        self.pages: Mapping[str, Page] = {}  # GET routes of the local stack's own (status page)


class _IngestHandler(AllMethodsHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall
    server_version = "ld-audiences-local"
    sys_version = ""
    server: IngestServer

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only; never headers (they carry the secret).
        if self.server.access_log:
            super().log_message(format, *args)

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(json_answer(400, {"code": "bad_request", "message": str(exc)}))
            return
        if body is None:
            self.close_connection = True
            self._send(body_too_large())
            return
        split = urlsplit(self.path)
        page = self.server.pages.get(split.path) if self.command in ("GET", "HEAD") else None
        if page is not None:
            self._send(page(self.command, {name.lower(): value for name, value in self.headers.items()}))
            return
        gateway = self.server.gateway
        assert gateway is not None, "the ingest server serves once the function is loaded"
        headers = list(self.headers.items())
        self._send(
            gateway.handle(Request(self.command, split.path, split.query, headers, body, self.client_address[0]))
        )

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw)
        except ValueError:
            raise ValueError("invalid Content-Length") from None
        if length < 0:
            raise ValueError("invalid Content-Length")
        if length > API_GATEWAY_MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024).strip()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ValueError("invalid chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return bytes(data)
            if len(data) + size > API_GATEWAY_MAX_BODY:
                return None
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        skip = {"content-length", "transfer-encoding", "connection"}
        headers: Mapping[str, str | list[str]] = answer.headers
        for name, value in headers.items():
            if name.lower() in skip:
                continue
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, str(item))
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD" and answer.body:
            self.wfile.write(answer.body)
