"""API Gateway REST (v1) with a Lambda proxy integration, in front of one ingest function instance.

What the deployed API does with a request before and after the function, given template.yaml's `Api`:
which routes exist; the request body inflated when it carries `Content-Encoding: gzip` or `deflate`
(`MinimumCompressionSize` 0) and handed over as text, since no binary media type is set; the proxy event;
one request at a time per function instance; and the HTTP answer made of the function's result.

What AWS refuses never reaches the function; the answers are API Gateway's own, `{"message": ...}`:

* a body over API Gateway's 10 MB: 413, text `HTTP content length exceeded 10485760 bytes.`;
* a path that is no route: 403 `Missing Authentication Token`;
* a content coding other than gzip, deflate or identity: 415 `Unsupported Media Type`;
* an event over Lambda's 6 MB synchronous request limit: 413 `Request Too Long`;
* a function that raises, times out, or answers no proxy result or more than Lambda's 6 MB:
  502 `Internal server error`.
"""

from __future__ import annotations

import base64
import fnmatch
import gzip
import json
import logging
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from ld_audiences_local.defaults import ACCOUNT_ID, INGEST_FUNCTION, REGION
from ld_audiences_local.handlers import FakeLambdaContext, Handler

logger = logging.getLogger(__name__)

STAGE = "local"
ROUTES = ("/events", "/v1/batch")
# template.yaml's Api (a test keeps them equal): no binary media type, so a JSON body reaches the function
# as text, not base64-encoded (+33 %) into Lambda's 6 MB; compression on for every size, so API Gateway
# inflates a gzip body itself and compresses answers for callers that accept gzip.
BINARY_MEDIA_TYPES: tuple[str, ...] = ()
MINIMUM_COMPRESSION_SIZE = 0
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
LAMBDA_MAX_REQUEST = 6 * 1024 * 1024  # a synchronous invocation's event, as serialized JSON
LAMBDA_MAX_RESPONSE = 6 * 1024 * 1024 + 100  # Lambda's own figure: "maximum allowed payload size (6291556 bytes)"
INGEST_TIMEOUT = 15.0  # template.yaml's IngestFunction Timeout (API Gateway itself waits 29 s)
# The content codings API Gateway inflates, with zlib's window bits for each.
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}

Headers = dict[str, str | list[str]]


class Request(NamedTuple):
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name), "")


class Answer(NamedTuple):
    status: int
    headers: Headers
    body: bytes


def json_answer(status: int, value: Any, headers: Headers | None = None) -> Answer:
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, _json(value))


def gateway_error(status: int, message: str, request_id: str, error_type: str | None = None) -> Answer:
    """API Gateway's own answer: `{"message": ...}`, never the function's `code`/`message` shape."""
    headers: Headers = {"x-amzn-RequestId": request_id}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return json_answer(status, {"message": message}, headers)


def body_too_large() -> Answer:
    """What API Gateway answers a body over 10 MB, before it knows the API (text, not JSON)."""
    message = f"HTTP content length exceeded {API_GATEWAY_MAX_BODY} bytes."
    return Answer(413, {"Content-Type": "text/plain; charset=utf-8"}, message.encode())


class ApiGateway:
    """The API in front of one ingest function: routes, proxy events, limits, one invocation at a time."""

    def __init__(self, handler: Handler, *, domain: str) -> None:
        self._handler = handler
        self._domain = domain
        self._lock = threading.Lock()  # one request at a time, like one Lambda instance
        self._counter_lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0

    def handle(self, request: Request) -> Answer:
        request_id = str(uuid.uuid4())
        if request.path not in ROUTES:
            return gateway_error(403, "Missing Authentication Token", request_id, "MissingAuthenticationTokenException")
        coding = request.header("content-encoding").strip().lower()
        if coding not in ("", "identity", *_INFLATE_WBITS):
            return gateway_error(415, "Unsupported Media Type", request_id)
        inflated = inflate(request.body, coding)
        # What API Gateway does with a body that is not exactly one member of its coding is not documented:
        # here it goes on as it came (bytes intact, as base64), and the function's exact reader refuses it.
        body, as_bytes = (request.body, True) if inflated is None else (inflated, False)
        event = proxy_event(request, body, request_id=request_id, domain=self._domain, as_bytes=as_bytes)
        if len(_serialized(event)) > LAMBDA_MAX_REQUEST:
            return gateway_error(413, "Request Too Long", request_id, "BadRequestException")
        answer = self.invoke(event)
        return compressed(answer, request.header("accept-encoding"))

    def invoke(self, event: dict[str, Any]) -> Answer:
        """Run the function on one proxy event; the answer API Gateway makes of its result."""
        with self._counter_lock:
            self.in_flight += 1
            self.requests += 1
        try:
            with self._lock:
                context = FakeLambdaContext(INGEST_FUNCTION, timeout_seconds=INGEST_TIMEOUT, region=REGION)
                started = time.monotonic()
                try:
                    result = self._handler(event, context)
                except Exception:
                    logger.exception("the ingest handler raised")
                    result = None
                if time.monotonic() - started > INGEST_TIMEOUT:
                    logger.error("the ingest handler ran past its %.0f s timeout", INGEST_TIMEOUT)
                    result = None
        finally:
            with self._counter_lock:
                self.in_flight -= 1
        return http_answer(result, event["requestContext"]["requestId"])


def inflate(body: bytes, coding: str) -> bytes | None:
    """The body API Gateway hands on for a content coding (lower case): inflated, or None when it is not
    exactly one complete member of that coding."""
    if coding in ("", "identity") or not body:
        return body
    inflater = zlib.decompressobj(wbits=_INFLATE_WBITS[coding])
    try:
        # Anything longer could not fit Lambda's event anyway: stop there (413 follows), gzip bomb or not.
        data = inflater.decompress(body, LAMBDA_MAX_REQUEST + 1)
    except zlib.error:
        return None
    if len(data) > LAMBDA_MAX_REQUEST:
        return data
    return data if inflater.eof and not inflater.unused_data else None


def proxy_event(
    request: Request, body: bytes, *, request_id: str, domain: str = "localhost", as_bytes: bool = False
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway sends for one request (its headers as they came)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in request.headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)

    is_base64 = as_bytes or is_binary(request.header("content-type"))
    text: str | None = None
    if body:
        # Text is handed over as UTF-8; bytes that are not UTF-8 cannot survive that.
        text = base64.b64encode(body).decode("ascii") if is_base64 else body.decode("utf-8", "replace")

    now = datetime.now(UTC)
    return {
        "resource": request.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": request.header("host") or domain,
            "extendedRequestId": request_id,
            "httpMethod": request.method,
            "identity": {"sourceIp": request.source_ip, "userAgent": request.header("user-agent") or None},
            "path": f"/{STAGE}{request.path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": "local",
            "resourcePath": request.path,
            "stage": STAGE,
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def is_binary(content_type: str) -> bool:
    """Whether API Gateway base64-encodes a body of this Content-Type (a binary media type matches it)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return any(fnmatch.fnmatchcase(media_type, pattern) for pattern in BINARY_MEDIA_TYPES)


def http_answer(result: Any, request_id: str) -> Answer:
    """The function's proxy result as API Gateway sends it: status, headers, body bytes (502 if invalid)."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return gateway_error(502, "Internal server error", request_id, "InternalServerErrorException")
    if len(json.dumps(result).encode()) > LAMBDA_MAX_RESPONSE:
        # Lambda refuses to return it: the invocation fails, whatever the function meant to answer.
        logger.error("the ingest handler's response is over Lambda's %d-byte limit", LAMBDA_MAX_RESPONSE)
        return gateway_error(502, "Internal server error", request_id, "InternalServerErrorException")
    headers: Headers = {}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = [str(v) for v in values]
    for name, value in (result.get("headers") or {}).items():
        headers[name] = str(value)
    headers["x-amzn-RequestId"] = request_id
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return Answer(result["statusCode"], headers, payload)


def compressed(answer: Answer, accept_encoding: str) -> Answer:
    """gzip-compressed for a caller that accepts it, as an API with a MinimumCompressionSize answers."""
    accepted = {part.split(";", 1)[0].strip().lower() for part in accept_encoding.split(",")}
    already = any(name.lower() == "content-encoding" for name in answer.headers)
    if "gzip" not in accepted or already or not answer.body or len(answer.body) < MINIMUM_COMPRESSION_SIZE:
        return answer
    return Answer(answer.status, {**answer.headers, "Content-Encoding": "gzip"}, gzip.compress(answer.body))


def _serialized(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
