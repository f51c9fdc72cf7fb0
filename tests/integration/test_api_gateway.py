"""The local stack's API Gateway over real HTTP, with a stand-in function that records what it is handed:
the proxy event the deployed API builds (template.yaml's Api: no binary media type, compression on), and
what API Gateway and Lambda refuse before or after the function, with API Gateway's own statuses and bodies."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from ld_audiences_local.api_gateway import API_GATEWAY_MAX_BODY, LAMBDA_MAX_REQUEST, LAMBDA_MAX_RESPONSE, ApiGateway
from ld_audiences_local.ingest_server import IngestServer

JSON = {"Content-Type": "application/json"}


def ok(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"accepted":1}'}


@dataclass
class Api:
    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    function: Callable[[dict[str, Any], Any], Any] = ok

    def post(
        self, path: str = "/events", body: bytes = b"[]", headers: dict[str, str] | None = None
    ) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=body, headers={**JSON, **(headers or {})}, timeout=30)


@pytest.fixture
def api() -> Iterator[Api]:
    server = IngestServer(("127.0.0.1", 0))
    api = Api(f"http://127.0.0.1:{server.server_port}")

    def handler(event: dict[str, Any], context: Any) -> Any:
        api.events.append(event)
        return api.function(event, context)

    server.gateway = ApiGateway(handler, domain="127.0.0.1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


def test_json_reaches_the_function_as_text_byte_for_byte(api: Api) -> None:
    body = json.dumps([{"userId": "zoë", "note": 'quote " and \\ backslash'}], ensure_ascii=False).encode()
    response = api.post("/v1/batch?x=1", body, {"Authorization": "Bearer s"})
    assert response.status_code == 200
    [event] = api.events
    assert event["isBase64Encoded"] is False
    assert event["body"].encode() == body
    assert (event["httpMethod"], event["path"], event["resource"]) == ("POST", "/v1/batch", "/v1/batch")
    assert event["headers"]["Authorization"] == "Bearer s"
    assert event["multiValueHeaders"]["Authorization"] == ["Bearer s"]
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["requestContext"]["requestId"] == response.headers["x-amzn-RequestId"]


@pytest.mark.parametrize("coding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_bodies_arrive_inflated_with_their_header(
    api: Api, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    body = json.dumps([{"userId": "u-1"}] * 50).encode()
    assert api.post(body=compress(body), headers={"Content-Encoding": coding}).status_code == 200
    [event] = api.events
    assert (event["body"].encode(), event["isBase64Encoded"]) == (body, False)
    assert event["headers"]["Content-Encoding"] == coding


def test_an_unsupported_coding_gets_415(api: Api) -> None:
    response = api.post(body=b"[]", headers={"Content-Encoding": "br"})
    assert (response.status_code, response.json()) == (415, {"message": "Unsupported Media Type"})
    assert api.events == []


@pytest.mark.parametrize(
    "body",
    [b"\x1f\x8b not gzip after all", gzip.compress(b"[1]") + gzip.compress(b"[2]"), gzip.compress(b"[1]")[:-4]],
    ids=["not-gzip", "two-members", "no-trailer"],
)
def test_a_body_that_is_not_exactly_one_gzip_member_reaches_the_function_intact(api: Api, body: bytes) -> None:
    """The function's exact reader refuses it with a reason; nothing is inflated halfway."""
    assert api.post(body=body, headers={"Content-Encoding": "gzip"}).status_code == 200
    [event] = api.events
    assert (base64.b64decode(event["body"]), event["isBase64Encoded"]) == (body, True)


def test_an_unknown_path_gets_api_gateways_403(api: Api) -> None:
    response = api.post("/event")
    assert (response.status_code, response.json()) == (403, {"message": "Missing Authentication Token"})
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert api.events == []


def test_a_body_over_10_mb_is_refused_before_the_api(api: Api) -> None:
    response = api.post(body=b"[" + b" " * API_GATEWAY_MAX_BODY + b"]")
    assert response.status_code == 413
    assert response.text == "HTTP content length exceeded 10485760 bytes."
    assert api.events == []


def test_an_event_over_lambdas_request_limit_gets_413_request_too_long(api: Api) -> None:
    # Under API Gateway's 10 MB, over Lambda's 6 MB once it is the proxy event.
    response = api.post(body=json.dumps(["x" * LAMBDA_MAX_REQUEST]).encode())
    assert (response.status_code, response.json()) == (413, {"message": "Request Too Long"})
    assert api.events == []


def test_a_gzip_body_that_inflates_past_lambdas_limit_gets_413(api: Api) -> None:
    bomb = gzip.compress(b"[" + b" " * (LAMBDA_MAX_REQUEST + 1) + b"]")
    assert len(bomb) < 100_000
    response = api.post(body=bomb, headers={"Content-Encoding": "gzip"})
    assert (response.status_code, response.json()) == (413, {"message": "Request Too Long"})
    assert api.events == []


def test_the_limit_is_lambdas_on_the_whole_event(api: Api) -> None:
    """Events a few bytes under and over 6 MiB, headers and request context counted (their sizes vary by a
    few bytes from request to request: the Content-Length digits, the request time)."""
    api.post(body=b'["x"]')
    envelope = len(json.dumps(api.events.pop(), separators=(",", ":")).encode()) - len(b'["x"]') - 2  # 2: \" \"
    room = LAMBDA_MAX_REQUEST - envelope - len(b'["x"]') - 2
    under = json.dumps(["x" * (room - 64)]).encode()
    assert api.post(body=under).status_code == 200
    assert api.events[0]["body"].encode() == under
    over = json.dumps(["x" * (room + 64)]).encode()
    assert api.post(body=over).status_code == 413
    assert len(api.events) == 1


@pytest.mark.parametrize(
    "function",
    [
        lambda event, context: {"statusCode": 200, "body": "x" * LAMBDA_MAX_RESPONSE},
        lambda event, context: 1 / 0,
        lambda event, context: {"body": "no statusCode"},
    ],
    ids=["response-over-6-mb", "raises", "not-a-proxy-result"],
)
def test_a_failed_invocation_gets_502(api: Api, function: Callable[[dict[str, Any], Any], Any]) -> None:
    api.function = function
    response = api.post()
    assert (response.status_code, response.json()) == (502, {"message": "Internal server error"})
    assert len(api.events) == 1


def test_answers_are_gzipped_for_callers_that_accept_gzip(api: Api) -> None:
    compressed = api.post(headers={"Accept-Encoding": "gzip"})
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert compressed.json() == {"accepted": 1}  # requests inflates it
    plain = api.post(headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json() == {"accepted": 1}
