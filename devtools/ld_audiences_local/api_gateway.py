"""API Gateway REST (v1) with a Lambda proxy integration, in front of one ingest function instance.

What the deployed API does with a request before and after the function: which routes exist, the proxy
event it builds, one request at a time per function instance, and the HTTP answer it makes of the
function's result (502 when the function fails).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from ld_audiences_local.defaults import ACCOUNT_ID, INGEST_FUNCTION, REGION
from ld_audiences_local.handlers import FakeLambdaContext, Handler

logger = logging.getLogger(__name__)

STAGE = "local"
ROUTES = ("/events", "/v1/batch")
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
INGEST_TIMEOUT = 29.0  # API Gateway REST's integration timeout

Headers = dict[str, str | list[str]]


class Answer(NamedTuple):
    status: int
    headers: Headers
    body: bytes


def json_answer(status: int, value: Any, headers: Headers | None = None) -> Answer:
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, _json(value))


class ApiGateway:
    """The API in front of one ingest function: routes, proxy events, one invocation at a time."""

    def __init__(self, handler: Handler, *, domain: str) -> None:
        self._handler = handler
        self._domain = domain
        self._lock = threading.Lock()  # one request at a time, like one Lambda instance
        self._counter_lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0

    def handle(
        self, *, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> Answer:
        if path not in ROUTES:
            return json_answer(
                404, {"code": "not_found", "message": f"no such resource; use POST {' or POST '.join(ROUTES)}"}
            )
        event = proxy_event(
            method=method, path=path, query=query, headers=headers, body=body, source_ip=source_ip, domain=self._domain
        )
        return self.invoke(event)

    def invoke(self, event: dict[str, Any]) -> Answer:
        """Run the function on one proxy event; the answer API Gateway would send (502 when it fails)."""
        with self._counter_lock:
            self.in_flight += 1
            self.requests += 1
        try:
            with self._lock:
                context = FakeLambdaContext(INGEST_FUNCTION, timeout_seconds=INGEST_TIMEOUT, region=REGION)
                try:
                    result = self._handler(event, context)
                except Exception:
                    logger.exception("the ingest handler raised")
                    result = None
        finally:
            with self._counter_lock:
                self.in_flight -= 1
        return http_answer(result, event["requestContext"]["requestId"])


def proxy_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
    domain: str = "localhost",
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway sends for one request, binary media types on."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)

    lowered = {name.lower(): value for name, value in single.items()}
    text: str | None = None
    is_base64 = False
    if body:
        if lowered.get("content-encoding", "").strip():
            is_base64 = True
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                is_base64 = True
        if is_base64:
            text = base64.b64encode(body).decode("ascii")

    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": lowered.get("host", domain),
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": {"sourceIp": source_ip, "userAgent": lowered.get("user-agent")},
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": "local",
            "resourcePath": path,
            "stage": STAGE,
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def http_answer(result: Any, request_id: str) -> Answer:
    """The function's proxy result as API Gateway sends it: status, headers, body bytes (502 if invalid)."""
    gateway_headers: Headers = {"x-amzn-RequestId": request_id}
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return json_answer(502, {"message": "Internal server error"}, gateway_headers)
    headers: Headers = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = [str(v) for v in values]
    for name, value in (result.get("headers") or {}).items():
        headers[name] = str(value)
    headers.update(gateway_headers)
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return Answer(result["statusCode"], headers, payload)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
