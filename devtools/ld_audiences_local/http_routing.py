"""A request handler that sends every HTTP method to one `_serve`, where the routes (and the 405s for
methods a route does not take) live: the emulator and the local ingest server answer like real APIs."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler


class AllMethodsHandler(BaseHTTPRequestHandler):
    def _serve(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()
