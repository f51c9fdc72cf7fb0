"""The whole product on loopback, no Docker: moto for AWS, the real handlers, an SQS event source.

`LocalStack` starts
* moto's server mode (SQS, Secrets Manager, DynamoDB) on 127.0.0.1 and a free port, with the queue,
  its dead-letter queue, the state table and both secrets created as the SAM template defines them;
* the real ingest handler behind a real HTTP server, each request wrapped into the API Gateway REST
  (v1) proxy event the deployed function receives;
* a poller that feeds the real sync handler the way Lambda's SQS event source mapping does: batch
  size and batching window, partial batch responses, visibility timeout, and the redrive policy's
  dead-letter queue after `max_receive_count` receives (moto itself moves the message, on the receive
  that would exceed the count, as SQS does);
* unless `launchdarkly_url` is given, the LaunchDarkly emulator (`emulator.py`) in process.

moto's SQS costs O(messages queued) per call (DESIGN.md), so the poller receives continuously while
messages arrive (long polls while idle return as soon as a message lands) and deletes every batch
as soon as it is handled; `speed_up_moto_sqs` removes the worst of that cost (same answers).

moto's backends and Powertools' parameter caches are process-wide: one LocalStack per process at a
time. The stack sets the environment variables of docs/CONTRACTS.md while it runs and restores the
previous environment when it stops.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences_local.handlers import FakeLambdaContext, Handler, load_handler
from ld_audiences_local.http_routing import AllMethodsHandler

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer
    from mypy_boto3_sqs import SQSClient

    from ld_audiences_local.emulator import Emulator

logger = logging.getLogger(__name__)

# The embedded defaults of docs/CONTRACTS.md ("Local stack defaults").
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105 (local-only dummy value)
QUEUE_NAME = "ld-audiences-changes"
DLQ_NAME = "ld-audiences-changes-dlq"
TABLE_NAME = "ld-audiences-state"
TOKEN_SECRET_NAME = "ld-audiences/launchdarkly-token"  # noqa: S105 (local-only dummy value)
WEBHOOK_SECRET_NAME = "ld-audiences/webhook-secret"  # noqa: S105 (local-only dummy value)
DEFAULT_LD_TOKEN = "api-local-token"  # noqa: S105 (local-only dummy value)
DEFAULT_CLIENT_SIDE_ID = "local-client-side-id"
DEFAULT_WEBHOOK_SECRET = "local-webhook-secret"  # noqa: S105 (local-only dummy value)
DEFAULT_PORT = 3000
MAX_RECEIVE_COUNT = 5
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCHING_WINDOW = 1.0
DEFAULT_SYNC_TIMEOUT = 10.0
# Six times the function timeout, as template.yaml sets it: a batch still being handled is never handed to a
# second poller, and a record failed back to SQS returns a minute later.
DEFAULT_VISIBILITY_TIMEOUT = 60
INGEST_TIMEOUT = 29.0  # API Gateway REST's integration timeout
STAGE = "local"
ROUTES = ("/events", "/v1/batch")
METRICS_NAMESPACE = "LdAudiences"
# Also their Powertools service names, as in template.yaml: each function logs through its own logger.
INGEST_FUNCTION = "ld-audiences-ingest"
SYNC_FUNCTION = "ld-audiences-sync"

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024
LAMBDA_MAX_PAYLOAD = 6 * 1024 * 1024
SQS_MAX_RECEIVE = 10
SQS_MAX_MESSAGE = 256 * 1024
IDLE_WAIT_SECONDS = 1  # long poll while idle: moto answers as soon as a message is added
WINDOW_POLL_SLEEP = 0.02  # between empty receives inside a batching window

_AWS_VARIABLES_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

_active_lock = threading.Lock()
_active: LocalStack | None = None


def bearer_secret(webhook_secret: str) -> str:
    """The secret a sender presents: the secret itself, or `current` of the JSON form."""
    value = webhook_secret.strip()
    if value.startswith("{"):
        current = json.loads(value).get("current")
        if not isinstance(current, str) or not current:
            raise ValueError('a JSON webhook secret needs a non-empty "current"')
        return current
    return value


# ----------------------------------------------------------------------------------------- SQS poller


@dataclass
class EventSourceStats:
    batches: int = 0
    records: int = 0
    failures: int = 0  # records returned to the queue (reported failed, or their whole batch failed)
    handler_errors: int = 0  # invocations that raised, timed out or answered an invalid response
    deleted: int = 0


class SqsEventSource:
    """Lambda's SQS event source mapping with `ReportBatchItemFailures`, as a thread.

    Collects up to `batch_size` messages (ten per ReceiveMessage) until the batch is full or the
    batching window has passed since the first message, invokes the handler with a real SQS event,
    deletes the records that succeeded and leaves the rest to reappear after the visibility timeout.
    A handler that raises, overruns its timeout or answers an invalid `batchItemFailures` fails the
    whole batch, as on Lambda.
    """

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batching_window: float = DEFAULT_BATCHING_WINDOW,
        function_timeout: float = DEFAULT_SYNC_TIMEOUT,
        function_name: str = SYNC_FUNCTION,
        region: str = REGION,
    ) -> None:
        if not 1 <= batch_size <= 10000:
            raise ValueError("batch_size must be between 1 and 10000")
        if not 0 <= batching_window <= 300:
            raise ValueError("batching_window must be between 0 and 300 seconds")
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.function_timeout = function_timeout
        self._function_name = function_name
        self._region = region
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = False  # messages received and not yet handed back or deleted
        self._lock = threading.Lock()
        self._stats = EventSourceStats()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("event source already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ld-audiences-sqs-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> None:
        """Stop polling; a batch being handled is finished first. `wait=False` only asks."""
        self._stopping.set()
        if wait and self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def idle(self) -> bool:
        """No batch is being collected, handled or acknowledged."""
        return not self._holding

    def stats(self) -> EventSourceStats:
        with self._lock:
            return EventSourceStats(**asdict(self._stats))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = self._collect()
                if batch and not self._stopping.is_set():
                    self._invoke(batch)
            except (BotoCoreError, ClientError):
                if self._stopping.is_set():
                    break
                logger.exception("SQS poll failed; retrying")
                self._stopping.wait(0.5)
            finally:
                self._holding = False

    def _receive(self, count: int, wait_seconds: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))  # type: ignore[arg-type]

    def _collect(self) -> list[dict[str, Any]]:
        batch = self._receive(min(SQS_MAX_RECEIVE, self.batch_size), IDLE_WAIT_SECONDS)
        if not batch:
            return []
        self._holding = True
        if self.batching_window <= 0:
            return batch
        window_ends = time.monotonic() + self.batching_window
        size = sum(len(m.get("Body", "")) for m in batch)
        while len(batch) < self.batch_size and not self._stopping.is_set():
            remaining = window_ends - time.monotonic()
            # Lambda stops at 6 MB of payload; never receive what could push the event past it.
            if remaining <= 0 or size + SQS_MAX_RECEIVE * SQS_MAX_MESSAGE > LAMBDA_MAX_PAYLOAD:
                break
            more = self._receive(min(SQS_MAX_RECEIVE, self.batch_size - len(batch)), 0)
            if more:
                batch.extend(more)
                size += sum(len(m.get("Body", "")) for m in more)
            else:
                time.sleep(min(WINDOW_POLL_SLEEP, remaining))
        return batch

    def _record(self, message: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": self._region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    def _invoke(self, batch: list[dict[str, Any]]) -> None:
        ids = [m["MessageId"] for m in batch]
        event = {"Records": [self._record(m) for m in batch]}
        context = FakeLambdaContext(self._function_name, timeout_seconds=self.function_timeout, region=self._region)
        started = time.monotonic()
        failed: set[str]
        try:
            response = self._handler(event, context)
        except Exception:
            logger.exception("the sync handler raised: the whole batch returns after the visibility timeout")
            failed, error = set(ids), True
        else:
            elapsed = time.monotonic() - started
            if elapsed > self.function_timeout:
                logger.error(
                    "the sync handler ran %.1f s, past its %.0f s timeout: batch failed", elapsed, self.function_timeout
                )
                failed, error = set(ids), True
            else:
                reported = partial_failures(response, ids)
                failed, error = (set(ids), True) if reported is None else (reported, False)
                if reported is None:
                    logger.error("invalid batchItemFailures in the sync response: the whole batch failed")
        done = [m for m in batch if m["MessageId"] not in failed]
        deleted = self._delete(done)
        with self._lock:
            self._stats.batches += 1
            self._stats.records += len(batch)
            self._stats.failures += len(failed)
            self._stats.handler_errors += int(error)
            self._stats.deleted += deleted

    def _delete(self, messages: list[dict[str, Any]]) -> int:
        deleted = 0
        for start in range(0, len(messages), SQS_MAX_RECEIVE):
            chunk = messages[start : start + SQS_MAX_RECEIVE]
            response = self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                logger.warning("could not delete a handled message: %s", failure.get("Code"))
        return deleted


def partial_failures(response: Any, batch_ids: list[str]) -> set[str] | None:
    """The record ids a partial batch response names, or None when the response is invalid and
    Lambda fails the whole batch (an id that is missing, empty or not in the batch)."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    items = response.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return None
    known = set(batch_ids)
    failed: set[str] = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """ReceiveMessage's attribute shape → the Lambda SQS event's (camelCase, binary as base64)."""
    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode() if isinstance(binary, bytes | bytearray) else binary,
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(b).decode() if isinstance(b, bytes | bytearray) else b
            for b in value.get("BinaryListValues", [])
        ],
        "dataType": value.get("DataType", "String"),
    }


# ----------------------------------------------------------------------------------------- HTTP ingest


class _IngestServer(ThreadingHTTPServer):
    daemon_threads = True
    stack: LocalStack


class _IngestHandler(AllMethodsHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the delayed-ACK stall
    server_version = "ld-audiences-local"
    sys_version = ""
    server: _IngestServer

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines only; never headers (they carry the secret).
        if self.server.stack.access_log:
            super().log_message(format, *args)

    def _serve(self) -> None:
        stack = self.server.stack
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._send(400, {"Content-Type": "application/json"}, _json({"code": "bad_request", "message": str(exc)}))
            return
        if body is None:
            self.close_connection = True
            self._send(
                413,
                {"Content-Type": "application/json"},
                _json({"code": "body_too_large", "message": "API Gateway accepts at most 10 MB"}),
            )
            return
        split = urlsplit(self.path)
        if split.path not in ROUTES:
            missing = {"code": "not_found", "message": f"no such resource; use POST {' or POST '.join(ROUTES)}"}
            self._send(404, {"Content-Type": "application/json"}, _json(missing))
            return
        event = stack.api_gateway_event(
            method=self.command,
            path=split.path,
            query=split.query,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
        )
        status, headers, payload = stack.invoke_ingest(event)
        self._send(status, headers, payload)

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

    def _send(self, status: int, headers: Mapping[str, str | list[str]], payload: bytes) -> None:
        self.send_response(status)
        skip = {"content-length", "transfer-encoding", "connection"}
        for name, value in headers.items():
            if name.lower() in skip:
                continue
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, str(item))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------------------- the stack


class LocalStack:
    """moto + the real handlers over HTTP + the SQS event source (+ the LaunchDarkly emulator).

    Use as a context manager, or `start()` / `stop()`. `url` is the ingest base URL once started
    (`POST {url}/events`, `POST {url}/v1/batch`).
    """

    def __init__(
        self,
        *,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        launchdarkly_url: str | None = None,
        launchdarkly_token: str = DEFAULT_LD_TOKEN,
        client_side_id: str = DEFAULT_CLIENT_SIDE_ID,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        writer: str = "segment-audiences",
        project_key: str = "",
        environment_key: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        batching_window: float = DEFAULT_BATCHING_WINDOW,
        context_key_policy: str = "user_id_only",
        context_kind: str = "user",
        chunk_size: int = 1000,
        visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
        max_receive_count: int = MAX_RECEIVE_COUNT,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT,
        sync_concurrency: int = 1,
        log_level: str = "WARNING",
        metrics: bool = False,
        access_log: bool = False,
    ) -> None:
        if writer == "rest" and not (project_key and environment_key):
            raise ValueError("the rest writer needs project_key and environment_key")
        if not 0 <= visibility_timeout <= 43200:
            raise ValueError("visibility_timeout must be between 0 and 43200 seconds")
        if visibility_timeout < sync_timeout:
            # Lambda refuses such an event source mapping: records would be redelivered mid-batch.
            raise ValueError("visibility_timeout must be at least sync_timeout")
        if not 1 <= sync_concurrency <= 64:
            raise ValueError("sync_concurrency must be between 1 and 64")
        if not 1 <= max_receive_count <= 1000:
            raise ValueError("max_receive_count must be between 1 and 1000")
        bearer_secret(webhook_secret)  # fail now on a JSON secret without "current"
        self.host = host
        self.port = port
        self._external_launchdarkly = launchdarkly_url.rstrip("/") if launchdarkly_url else None
        self.launchdarkly_url = self._external_launchdarkly
        self.launchdarkly_token = launchdarkly_token
        self.client_side_id = client_side_id
        self.webhook_secret = webhook_secret
        self.writer = writer
        self.project_key = project_key
        self.environment_key = environment_key
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.context_key_policy = context_key_policy
        self.context_kind = context_kind
        self.chunk_size = chunk_size
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self.sync_timeout = sync_timeout
        self.sync_concurrency = sync_concurrency
        self.log_level = log_level
        self.metrics = metrics
        self.access_log = access_log

        self.emulator: Emulator | None = None  # the in-process emulator, when this stack started one
        self.moto_url = ""
        self.queue_url = ""
        self.queue_arn = ""
        self.dlq_url = ""
        self.dlq_arn = ""
        self.table_name = TABLE_NAME
        self.sqs: SQSClient | None = None
        self._moto: ThreadedMotoServer | None = None
        self._http: _IngestServer | None = None
        self._http_thread: threading.Thread | None = None
        self._sources: list[SqsEventSource] = []
        self._ingest: Handler | None = None
        self._ingest_lock = threading.Lock()  # one request at a time, like one Lambda instance
        self._in_flight = 0
        self._ingest_requests = 0
        self._counter_lock = threading.Lock()
        self._saved_env: dict[str, str | None] | None = None
        self._started = False

    # ------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("local stack not started")
        return f"http://{self.host}:{self._http.server_port}"

    @property
    def bearer_secret(self) -> str:
        return bearer_secret(self.webhook_secret)

    def start(self) -> str:
        """Start everything; returns the ingest base URL. Raises OSError when the port is taken."""
        global _active
        with _active_lock:
            if self._started:
                raise RuntimeError("this local stack is already running")
            if _active is not None:
                raise RuntimeError("another LocalStack is running in this process (moto state is process-wide)")
            _active = self
        try:
            # Bind first: a taken port fails fast, before anything else is started.
            self._http = _IngestServer((self.host, self.port), _IngestHandler)
            self._http.stack = self
            self._start_moto()
            self._start_launchdarkly()
            self._set_environment(self._aws_environment())
            self._create_resources()
            self._set_environment(self._function_environment())
            self._load_functions()
            self._http_thread = threading.Thread(
                target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, name="ld-audiences-ingest", daemon=True
            )
            self._http_thread.start()
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop everything this stack started and restore the environment. Safe to call twice."""
        global _active
        if self._http is not None:
            if self._http_thread is not None:
                self._http.shutdown()
                self._http_thread.join(timeout=5)
            self._http.server_close()
            self._http_thread = None
        for source in self._sources:
            source.stop(wait=False)  # their idle long polls end while moto shuts down
        finishing = time.monotonic() + self.sync_timeout
        while any(not source.idle for source in self._sources) and time.monotonic() < finishing:
            time.sleep(0.02)  # a batch being handled still needs moto
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
            self._moto = None
        for source in self._sources:
            source.stop()
        self._sources = []
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                self.emulator.stop()
        self._restore_environment()
        _clear_parameter_caches()
        self._started = False
        with _active_lock:
            if _active is self:
                _active = None

    # ------------------------------------------------------------------------------------ set-up

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        prepare_moto()
        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)  # no line per moto request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"

    def _start_launchdarkly(self) -> None:
        if self._external_launchdarkly:
            self.launchdarkly_url = self._external_launchdarkly
            return
        from ld_audiences_local.emulator import Emulator

        self.emulator = Emulator(tokens=(self.launchdarkly_token,), client_side_ids=(self.client_side_id,))
        self.launchdarkly_url = self.emulator.start(host="127.0.0.1", port=0)

    def client(self, service: str) -> Any:
        """A boto3 client for moto (explicit endpoint and credentials; independent of the environment)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, max_pool_connections=20),
        )

    def _delete_leftovers(self) -> None:
        """moto's backends are process-wide and outlive a server: remove what an earlier stack in this
        process left under our names (and nothing else), so every stack starts empty."""
        sqs = self.client("sqs")
        for name in (QUEUE_NAME, DLQ_NAME):
            with contextlib.suppress(ClientError):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        with contextlib.suppress(ClientError):
            self.client("dynamodb").delete_table(TableName=TABLE_NAME)
        secrets = self.client("secretsmanager")
        for name in (TOKEN_SECRET_NAME, WEBHOOK_SECRET_NAME):
            with contextlib.suppress(ClientError):
                secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    def _create_resources(self) -> None:
        self._delete_leftovers()
        sqs: SQSClient = self.client("sqs")
        self.sqs = sqs
        self.dlq_url = sqs.create_queue(QueueName=DLQ_NAME, Attributes={"MessageRetentionPeriod": "1209600"})[
            "QueueUrl"
        ]
        self.dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": self.max_receive_count}
        self.queue_url = sqs.create_queue(
            QueueName=QUEUE_NAME,
            Attributes={"VisibilityTimeout": str(self.visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=TABLE_NAME,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=TABLE_NAME, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

        secrets = self.client("secretsmanager")
        self._token_secret_arn = secrets.create_secret(Name=TOKEN_SECRET_NAME, SecretString=self.launchdarkly_token)[
            "ARN"
        ]
        self._webhook_secret_arn = secrets.create_secret(Name=WEBHOOK_SECRET_NAME, SecretString=self.webhook_secret)[
            "ARN"
        ]

    def _aws_environment(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        env.update(dict.fromkeys(_AWS_VARIABLES_CLEARED))
        # Service-specific endpoints would win over AWS_ENDPOINT_URL.
        env.update(dict.fromkeys(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")))
        return env

    def _function_environment(self) -> dict[str, str | None]:
        return {
            "QUEUE_URL": self.queue_url,
            "WEBHOOK_SECRET_ARN": self._webhook_secret_arn,
            "CONTEXT_KEY_POLICY": self.context_key_policy,
            "DEFAULT_CONTEXT_KIND": self.context_kind,
            "ALLOWED_CONTEXT_KINDS": None,  # the template's default: only the default kind
            "LD_TOKEN_SECRET_ARN": self._token_secret_arn,
            "LD_WRITER": self.writer,
            "LD_CLIENT_SIDE_ID": self.client_side_id,
            "LD_PROJECT_KEY": self.project_key,
            "LD_ENVIRONMENT_KEY": self.environment_key,
            "LD_BASE_URL": self.launchdarkly_url,
            "LD_CHUNK_SIZE": str(self.chunk_size),
            "STATE_TABLE_NAME": TABLE_NAME,
            "DLQ_URL": self.dlq_url,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": self.log_level.upper(),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "false" if self.metrics else "true",
        }

    def _set_environment(self, values: Mapping[str, str | None]) -> None:
        if self._saved_env is None:
            self._saved_env = {}
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_environment(self) -> None:
        for name, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = None

    def _load_functions(self) -> None:
        # Powertools keeps one Secrets Manager provider (and its cache) per process: a previous
        # stack's would point at a stopped moto.
        _clear_parameter_caches()
        self._set_environment({"POWERTOOLS_SERVICE_NAME": INGEST_FUNCTION})
        self._ingest = load_handler("ingest")
        self._set_environment({"POWERTOOLS_SERVICE_NAME": SYNC_FUNCTION})
        # One module per concurrent sync "instance": each has its own globals, as separate Lambda
        # execution environments do; they share the queue, the state table and LaunchDarkly.
        for instance in range(self.sync_concurrency):
            sync = load_handler("sync", instance=instance if self.sync_concurrency > 1 else None)
            source = SqsEventSource(
                self.client("sqs"),
                self.queue_url,
                self.queue_arn,
                sync,
                batch_size=self.batch_size,
                batching_window=self.batching_window,
                function_timeout=self.sync_timeout,
                region=REGION,
            )
            self._sources.append(source)
        for source in self._sources:
            source.start()

    # ------------------------------------------------------------------------------------ ingest

    def api_gateway_event(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
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
                "domainName": lowered.get("host", f"{self.host}:{self.port}"),
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

    def invoke_ingest(self, event: dict[str, Any]) -> tuple[int, dict[str, str | list[str]], bytes]:
        """Run the ingest handler on one proxy event; returns status, headers and body bytes as API
        Gateway would send them (502 when the function fails)."""
        request_id = event["requestContext"]["requestId"]
        with self._counter_lock:
            self._in_flight += 1
            self._ingest_requests += 1
        try:
            with self._ingest_lock:
                assert self._ingest is not None
                context = FakeLambdaContext(INGEST_FUNCTION, timeout_seconds=INGEST_TIMEOUT, region=REGION)
                try:
                    result = self._ingest(event, context)
                except Exception:
                    logger.exception("the ingest handler raised")
                    result = None
        finally:
            with self._counter_lock:
                self._in_flight -= 1
        gateway_headers: dict[str, str | list[str]] = {"x-amzn-RequestId": request_id}
        if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
            gateway_headers["Content-Type"] = "application/json"
            return 502, gateway_headers, _json({"message": "Internal server error"})
        headers: dict[str, str | list[str]] = {}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = [str(v) for v in values]
        for name, value in (result.get("headers") or {}).items():
            headers[name] = str(value)
        headers.update(gateway_headers)
        body = result.get("body") or ""
        payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
        return result["statusCode"], headers, payload

    # ------------------------------------------------------------------------------------ inspection

    def queue_counts(self, queue_url: str | None = None) -> dict[str, int]:
        assert self.sqs is not None, "local stack not started"
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    def drained(self) -> bool:
        """Nothing queued, in flight or being ingested, and the poller holds no batch."""

        def idle() -> bool:
            return bool(self._sources) and all(s.idle for s in self._sources) and not self._in_flight

        return idle() and not any(self.queue_counts().values()) and idle()

    def wait_until_drained(self, timeout: float = 60.0) -> None:
        """Block until `drained()` holds twice in a row; TimeoutError (with the counts) otherwise.

        Records that keep failing stay in flight until SQS moves them to the DLQ, after
        `max_receive_count` receives, `visibility_timeout` seconds apart.
        """
        ends = time.monotonic() + timeout
        streak = 0
        while True:
            streak = streak + 1 if self.drained() else 0
            if streak >= 2:
                return
            if time.monotonic() > ends:
                raise TimeoutError(f"the queue did not drain within {timeout:.0f} s: {self.queue_counts()}")
            time.sleep(0.05)

    def dead_letter_count(self) -> int:
        counts = self.queue_counts(self.dlq_url)
        return counts["visible"] + counts["in_flight"] + counts["delayed"]

    def dead_letters(self) -> list[dict[str, Any]]:
        """The DLQ's messages (body and attributes), left in place (visible again right away)."""
        assert self.sqs is not None, "local stack not started"
        from ld_audiences_local.redrive import list_dead_letters

        return [asdict(m) for m in list_dead_letters(self.sqs, self.dlq_url, wait_seconds=0)]

    def stats(self) -> dict[str, int]:
        source = EventSourceStats()
        for each in self._sources:
            for name, value in asdict(each.stats()).items():
                setattr(source, name, getattr(source, name) + value)
        with self._counter_lock:
            requests_seen = self._ingest_requests
        return {
            "ingest_requests": requests_seen,
            "batches": source.batches,
            "records": source.records,
            "failures": source.failures,
            "handler_errors": source.handler_errors,
            "deleted": source.deleted,
            "dead_lettered": self.dead_letter_count() if self.sqs else 0,
        }

    def describe(self) -> Iterator[str]:
        """Human-readable lines about what runs where (no secrets)."""
        yield f"ingest:       POST {self.url}/events, POST {self.url}/v1/batch"
        yield f"moto (AWS):   {self.moto_url}"
        yield f"queue:        {self.queue_url} (visibility {self.visibility_timeout} s)"
        yield f"dead letters: {self.dlq_url} (after {self.max_receive_count} receives)"
        yield f"state table:  {TABLE_NAME}"
        where = "in-process emulator" if self.emulator is not None else "external"
        yield f"LaunchDarkly: {self.launchdarkly_url} ({where}, writer {self.writer})"
        yield (
            f"sync:         batch size {self.batch_size}, batching window {self.batching_window:g} s, "
            f"concurrency {self.sync_concurrency}"
        )


_moto_patched = False


def prepare_moto() -> None:
    """Make the in-process moto behave like AWS under concurrent callers, and fast enough to keep up."""
    speed_up_moto_sqs()
    make_moto_sqs_thread_safe()
    make_moto_dynamodb_atomic()


def speed_up_moto_sqs() -> None:
    """Make moto's SQS calls cheap without changing what they answer (moto runs in this process).

    moto 5 reads the clock through a datetime round trip for every message on every walk of a
    queue, and walks the queue three times per message sent (the ContentBasedDeduplication lookup
    builds every queue attribute) and per message received (the retention check does the same):
    with 700 messages queued a ReceiveMessage took ~0.5 s, a SendMessageBatch ~0.25 s, so a local
    run fell behind and never caught up. Same values, computed directly: ~7 ms and ~20 ms.
    Idempotent; skipped when moto's internals are not the expected ones.
    """
    global _moto_patched
    if _moto_patched:
        return
    from moto.core import utils
    from moto.sqs import models

    backend = getattr(models, "SQSBackend", None)
    if not (
        getattr(models, "unix_time", None) is utils.unix_time
        and getattr(models, "unix_time_millis", None) is utils.unix_time_millis
        and backend is not None
        and hasattr(backend, "is_message_valid_based_on_retention_period")
    ):
        logger.warning("moto's SQS internals are not the expected ones: SQS calls stay slow")
        return
    slow_unix_time = utils.unix_time

    def unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else slow_unix_time(dt)

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention_period + message.sent_timestamp / 1000 > time.time())

    setattr(models, "unix_time", unix_time)  # noqa: B010 (names moto does not export)
    setattr(models, "unix_time_millis", unix_time_millis)  # noqa: B010
    setattr(backend, "is_message_valid_based_on_retention_period", is_message_valid_based_on_retention_period)  # noqa: B010
    _moto_patched = True


def make_moto_sqs_thread_safe() -> None:
    """Make moto's SQS receives and deletes atomic per queue, as SQS's are (moto runs in this process).

    moto (5.2) deletes a message by rebuilding the queue's message list from the list it started with,
    without the lock its sends take: when a second delete and a send land meanwhile, the first delete's
    list drops the new message and brings back the other deleted one. The sync pollers delete while
    ingest sends: measured, 394 of 12,000 messages lost with four senders and two pollers, and a chaos
    run now and then ended with a member stale because its latest change was never delivered. Concurrent
    receives also race: one message handed to both pollers, or a receive failing with "Set changed size
    during iteration" after it had already hidden some messages. Both now hold the queue's own lock (a
    long poll releases it while it waits, like every waiter on that condition).
    """
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue.delete_message, "_ld_audiences_locked", False):
        return
    delete, receive = Queue.delete_message, SQSBackend.receive_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return receive(self, queue_name, *args, **kwargs)

    delete_message._ld_audiences_locked = True  # type: ignore[attr-defined]
    setattr(Queue, "delete_message", functools.wraps(delete)(delete_message))  # noqa: B010
    setattr(SQSBackend, "receive_message", functools.wraps(receive)(receive_message))  # noqa: B010


def _clear_parameter_caches() -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # type: ignore[no-untyped-call]


_dynamodb_lock = threading.RLock()


def make_moto_dynamodb_atomic() -> None:
    """Make moto's DynamoDB item writes atomic, as DynamoDB's are (moto runs in this process).

    moto (5.2) checks a ConditionExpression and applies the update in separate steps without a lock,
    and for an item that does not exist yet each request creates its own: two conditional updates of
    one new item from concurrent requests can both pass, and one is silently lost (measured: 7 in
    2,000 concurrent pairs). The state store relies on DynamoDB's per-item atomicity, and concurrent
    sync pollers claim the same new contexts all the time: serialize moto's item calls.
    """
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("get_item", "put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name, None)
        if original is None or getattr(original, "_ld_audiences_atomic", False):
            continue

        def serialized(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _dynamodb_lock:
                return _original(*args, **kwargs)

        serialized._ld_audiences_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, functools.wraps(original)(serialized))
