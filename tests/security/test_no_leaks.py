"""No secret and no email address ever leaves the functions in a log line, a metric or a response.

The whole flow runs with known secret values — ingest handler → SQS (moto) → sync handler → LaunchDarkly
over HTTP — on the happy path and on every failing path (LaunchDarkly 400, 403, 5xx, unreachable;
unauthorized, badly signed and invalid requests), with email addresses as traits and, under the
`email_only` policy, as context keys. Everything the functions emit is captured: stdout and stderr
(where Powertools Logger writes and Powertools Metrics prints EMF blobs), every `logging` record of any
logger (whatever its handlers or propagation), the root logger, and every HTTP response body and header.
None of it may hold a secret, the Authorization header value, the base64 Basic credential or a full
email address.

Every test runs twice: with DEBUG logging (`POWERTOOLS_LOG_LEVEL=DEBUG`, and
`POWERTOOLS_LOGGER_LOG_EVENT=true`, which would log whole events, headers and all, if the functions let it),
and with every debug switch of Powertools on as well (`POWERTOOLS_DEV`, which turns on the Event Handler's
printing of whole events unless the resolver says `debug=False`, `POWERTOOLS_DEBUG` and the rest: see
TALKATIVE).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import hmac
import io
import json
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.package_logger import set_package_logger_handler

from ld_audiences_local.emulator import Emulator, Faults
from ld_audiences_local.handlers import FakeLambdaContext, load_handler
from tests.conftest import Aws, free_port
from tests.recording_server import RecordingServer, Scripted
from tests.security.conftest import api_event

LD_TOKEN = "api-LEAKCHECK-ld-token-4f0c9e2a"
CLIENT_SIDE_ID = "leakcheck-client-side-id"
WEBHOOK_CURRENT = "whsec-LEAKCHECK-current-77ab"
WEBHOOK_PREVIOUS = "whsec-LEAKCHECK-previous-31cd"
SIGNING_KEY = "sigkey-LEAKCHECK-signing-9e05"
BEARER = f"Bearer {WEBHOOK_CURRENT}"
BASIC_CREDENTIAL = base64.b64encode(f"{WEBHOOK_PREVIOUS}:".encode()).decode()
BASIC = f"Basic {BASIC_CREDENTIAL}"
SECRETS = {
    "LaunchDarkly token": LD_TOKEN,
    "webhook secret (current)": WEBHOOK_CURRENT,
    "webhook secret (previous)": WEBHOOK_PREVIOUS,
    "signing key": SIGNING_KEY,
    "Authorization header (Bearer)": BEARER,
    "Authorization header (Basic)": BASIC,
    "Basic credential": BASIC_CREDENTIAL,
    "Basic credential (current)": base64.b64encode(f"{WEBHOOK_CURRENT}:".encode()).decode(),
}
EMAILS = [
    "alice.leakcheck@example.com",
    "bob+segment@example.org",
    "carol.o'neil@example.co.uk",
    "dave@sub.example.net",
    "erin@example.io",
]
# Any email-shaped text at all, not just the ones above.
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
AUDIENCE_ID, AUDIENCE_KEY = "aud_leakcheck", "leakcheck_members"

# Powertools warns that it was asked to talk more: that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:POWERTOOLS_DE(V|BUG) environment variable is enabled:UserWarning")

EmulatorFactory = Callable[..., Emulator]
# moto's server runs in this process for the test: its access log is not output of the functions.
NOT_THE_FUNCTIONS = ("werkzeug",)
_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# The most an operator can turn on, as the environment variables Powertools 3.37 reads
# (aws_lambda_powertools/shared/constants.py).
DEBUG_LOGGING = {"POWERTOOLS_LOG_LEVEL": "DEBUG", "POWERTOOLS_LOGGER_LOG_EVENT": "true"}
TALKATIVE = {
    "debug-logging": DEBUG_LOGGING,
    "every-debug-switch": {
        **DEBUG_LOGGING,
        "POWERTOOLS_DEV": "true",  # Event Handler debug printing, pretty-printed log lines
        "POWERTOOLS_DEBUG": "true",  # Powertools' own package logger at DEBUG, to stdout
        "POWERTOOLS_EVENT_HANDLER_DEBUG": "true",  # the Event Handler's switch in Powertools before v2
        "POWERTOOLS_LOGGER_SAMPLE_RATE": "1",
        "POWERTOOLS_LOG_DEDUPLICATION_DISABLED": "true",  # Logger records reach the root logger too
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "true",
        "POWERTOOLS_TRACER_CAPTURE_ERROR": "true",
        "POWERTOOLS_TRACE_MIDDLEWARES": "true",
        # POWERTOOLS_DEV alone would switch metrics off, and the metrics must be checked too.
        "POWERTOOLS_METRICS_DISABLED": "false",
    },
}


def json_documents(text: str) -> Iterator[Any]:
    """Every JSON object in the text, one a line or pretty-printed over several (as under POWERTOOLS_DEV)."""
    decoder = json.JSONDecoder()
    index = 0
    while (start := text.find("{", index)) != -1:
        try:
            document, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
        else:
            yield document


def leaks(text: str) -> list[str]:
    found = [f"{name}: {value!r}" for name, value in SECRETS.items() if value in text]
    found += [f"email address: {match!r}" for match in EMAIL_PATTERN.findall(text)]
    return found


class Capture:
    """Everything the functions write: stdout/stderr, every LogRecord any logger handles, the root logger."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stdout, self.stderr, self.root = io.StringIO(), io.StringIO(), io.StringIO()
        self.records: list[str] = []
        self.responses: list[str] = []
        self._monkeypatch = monkeypatch
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Capture:
        # Powertools Logger binds its StreamHandler to sys.stdout when the logger is first created, which
        # happens when a handler module is loaded: load them inside this block.
        self._stack.enter_context(contextlib.redirect_stdout(self.stdout))
        self._stack.enter_context(contextlib.redirect_stderr(self.stderr))
        # Powertools sets up its own package logger once, on import (DEBUG to stdout under POWERTOOLS_DEBUG):
        # set it up again as a cold start in this environment would, and put it back afterwards.
        package_logger = logging.getLogger("aws_lambda_powertools")
        saved = package_logger.level, package_logger.propagate, package_logger.handlers[:]
        set_package_logger_handler()
        self._stack.callback(restore_logger, package_logger, *saved)
        root_handler = logging.StreamHandler(self.root)
        root_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(root_handler)
        self._stack.callback(logging.getLogger().removeHandler, root_handler)
        original = logging.Logger.handle
        records = self.records

        def handle(logger: logging.Logger, record: logging.LogRecord) -> None:
            if not record.name.startswith(NOT_THE_FUNCTIONS):
                records.append(render(record))
            original(logger, record)

        self._monkeypatch.setattr(logging.Logger, "handle", handle)
        self._stack.callback(self._monkeypatch.setattr, logging.Logger, "handle", original)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def response(self, value: Any) -> Any:
        """Record an HTTP response (or a handler's return value) for the leak check and pass it on."""
        self.responses.append(json.dumps(value, ensure_ascii=False))
        return value

    def outputs(self) -> dict[str, str]:
        return {
            "stdout": self.stdout.getvalue(),
            "stderr": self.stderr.getvalue(),
            "log records": "\n".join(self.records),
            "root logger": self.root.getvalue(),
            "responses": "\n".join(self.responses),
        }

    def metric_blobs(self) -> list[dict[str, Any]]:
        return [doc for doc in json_documents(self.stdout.getvalue()) if isinstance(doc, dict) and "_aws" in doc]

    def log_lines(self) -> list[dict[str, Any]]:
        return [doc for doc in json_documents(self.stdout.getvalue()) if isinstance(doc, dict) and "level" in doc]

    def assert_no_leaks(self) -> None:
        found = {where: leaks(text) for where, text in self.outputs().items()}
        found = {where: items for where, items in found.items() if items}
        assert not found, (
            "leaked:\n"
            + "\n".join(f"  {where}: {items}" for where, items in found.items())
            + ("\n--- stdout ---\n" + self.stdout.getvalue() + "\n--- records ---\n" + "\n".join(self.records))
        )


def restore_logger(logger: logging.Logger, level: int, propagate: bool, handlers: list[logging.Handler]) -> None:
    logger.setLevel(level)
    logger.propagate = propagate
    logger.handlers[:] = handlers


def render(record: logging.LogRecord) -> str:
    """All a LogRecord carries: message, arguments, extra fields, exception and stack."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is still checked, raw
        message = repr((record.msg, record.args))
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_FIELDS}
    parts = [record.name, record.levelname, message, repr(record.args), repr(extras)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    if record.stack_info:
        parts.append(record.stack_info)
    return " ".join(parts)


# ----------------------------------------------------------------------------------------- the flow


@dataclass
class Flow:
    aws: Aws
    monkeypatch: pytest.MonkeyPatch
    capture: Capture
    env: dict[str, str] = field(default_factory=dict)

    def configure(self, **overrides: str) -> None:
        for name, value in {**self.env, **overrides}.items():
            self.monkeypatch.setenv(name, value)

    def ingest(self, event: dict[str, Any], **env: str) -> tuple[int, dict[str, Any]]:
        self.configure(**env)
        response = self.capture.response(load_handler("ingest")(event, FakeLambdaContext("ingest")))
        return response["statusCode"], json.loads(response["body"])

    def sync(self, launchdarkly_url: str, timeout: float = 30.0) -> dict[str, Any]:
        self.configure(LD_BASE_URL=launchdarkly_url)
        event = self.aws.sqs_event()
        assert event["Records"], "nothing was queued"
        handler = load_handler("sync")
        return self.capture.response(handler(event, FakeLambdaContext("sync", timeout_seconds=timeout)))


@pytest.fixture(params=list(TALKATIVE))
def flow(aws: Aws, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Flow]:
    secret = json.dumps({"current": WEBHOOK_CURRENT, "previous": WEBHOOK_PREVIOUS, "signing": SIGNING_KEY})
    suffix = uuid.uuid4().hex[:8]
    webhook_arn = aws.secrets.create_secret(Name=f"leak-webhook-{suffix}", SecretString=secret)["ARN"]
    token_arn = aws.secrets.create_secret(Name=f"leak-token-{suffix}", SecretString=LD_TOKEN)["ARN"]
    env = {
        "QUEUE_URL": aws.queue_url,
        "DLQ_URL": aws.dlq_url,
        "STATE_TABLE_NAME": aws.table,
        "WEBHOOK_SECRET_ARN": webhook_arn,
        "LD_TOKEN_SECRET_ARN": token_arn,
        "LD_CLIENT_SIDE_ID": CLIENT_SIDE_ID,
        "CONTEXT_KEY_POLICY": "email_only",
        # A fresh service name: Powertools binds a logger's stream once per name, and it must be ours.
        "POWERTOOLS_SERVICE_NAME": f"ld-audiences-leakcheck-{suffix}",
        "POWERTOOLS_METRICS_NAMESPACE": "LdAudiencesLeakCheck",
        **TALKATIVE[request.param],
    }
    # The root logger as Lambda's runtime leaves it (WARNING): botocore's DEBUG wire logs are the operator's
    # own choice, not something the functions do.
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    flow = Flow(aws, monkeypatch, Capture(monkeypatch), env)
    flow.configure()  # before the capture starts: it sets up Powertools' package logger from the environment
    # Entered by each test itself (`with flow.capture:`): pytest puts its own sys.stdout back between a
    # fixture's setup and the test's call.
    yield flow


def audience_event(
    email: str, *, kind: str = "identify", value: Any = True, user_id: str | None = None, message_id: str | None = None
) -> dict[str, Any]:
    """An Engage audience event with the email where Engage puts it (traits / context.traits)."""
    event: dict[str, Any] = {
        "type": kind,
        "messageId": message_id or f"personas_{uuid.uuid4().hex[:20]}",
        "timestamp": "2026-11-20T10:00:00.123456789Z",
        "sentAt": None,
        "context": {
            "personas": {
                "computation_class": "audience",
                "computation_id": AUDIENCE_ID,
                "computation_key": AUDIENCE_KEY,
                "space_id": "spa_leak",
            }
        },
    }
    if user_id is not None:
        event["userId"] = user_id
    if kind == "identify":
        event["traits"] = {AUDIENCE_KEY: value, "email": email, "name": "Leak Check"}
    else:
        event["event"] = "Audience Entered"
        event["properties"] = {AUDIENCE_KEY: value, "audience_key": AUDIENCE_KEY}
        event["context"]["traits"] = {"email": email}
    return event


def request(
    payload: Any,
    *,
    authorization: str = BEARER,
    path: str = "/events",
    gzipped: bool = False,
    signature: str | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
    method: str = "POST",
) -> dict[str, Any]:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Authorization": authorization, "Content-Type": content_type}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    headers["X-Signature"] = signature or hmac.new(SIGNING_KEY.encode(), body, hashlib.sha1).hexdigest()
    return api_event(
        body=base64.b64encode(body).decode() if gzipped else body.decode(),
        headers=headers,
        is_base64=gzipped,
        method=method,
        path=path,
    )


def check_captured_something(capture: Capture, *messages: str) -> None:
    """The capture itself works: the expected log lines and EMF blobs were seen (else 'no leak' means nothing)."""
    seen = {str(line.get("message")) for line in capture.log_lines()}
    for message in messages:
        assert any(line.startswith(message) for line in seen), f"log line {message!r} not captured; saw {seen}"
    assert capture.metric_blobs(), "no EMF metric blob captured"


# ----------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("writer", ["segment-audiences", "rest"])
def test_whole_flow_with_emails_as_context_keys_leaks_nothing(
    flow: Flow, emulator_factory: EmulatorFactory, writer: str
) -> None:
    flow.env.update(LD_WRITER=writer, LD_PROJECT_KEY="default", LD_ENVIRONMENT_KEY="production")
    with flow.capture:
        emulator = emulator_factory()
        events = [
            audience_event(EMAILS[0]),
            audience_event(EMAILS[1], kind="track"),
            audience_event(EMAILS[2], user_id=EMAILS[3]),  # an email as userId too
        ]
        # Segment's client form: Basic write key, gzip, the write key repeated in the body, /v1/batch.
        batch = {"batch": events, "writeKey": WEBHOOK_CURRENT, "sentAt": "2026-11-20T10:00:01Z"}
        assert flow.ingest(request(batch, authorization=BASIC, path="/v1/batch", gzipped=True))[0] == 200
        status, body = flow.ingest(request(audience_event(EMAILS[4], value="false")))
        assert (status, body["accepted"]) == (200, 1)

        result = flow.sync(emulator.url)

        assert result == {"batchItemFailures": []}
        (segment,) = emulator.segments()
        assert set(segment["included"]) == {EMAILS[0], EMAILS[1], EMAILS[2]}  # emails really were the context keys
        check_captured_something(flow.capture, "request answered", "batch synced")
        metric_names = {
            m["Name"]
            for blob in flow.capture.metric_blobs()
            for d in blob["_aws"]["CloudWatchMetrics"]
            for m in d["Metrics"]
        }
        assert {"EventsAccepted", "ContextsAdded", "ContextsRemoved"} <= metric_names
        flow.capture.assert_no_leaks()


@dataclass
class Failure:
    name: str
    make: Callable[[EmulatorFactory, list[RecordingServer]], str]  # returns the LaunchDarkly base URL
    dead_lettered: bool
    timeout: float = 30.0


def _rejecting_emulator(factory: EmulatorFactory, _: list[RecordingServer]) -> str:
    return factory(reject_cohorts=(AUDIENCE_ID,)).url


def _echoing_400(_: EmulatorFactory, servers: list[RecordingServer]) -> str:
    # A LaunchDarkly error that quotes what it was sent: the context key (an email) and the token.
    message = f"batch[0].userId {EMAILS[0]!r} is not valid for token {LD_TOKEN}"
    server = RecordingServer(default=Scripted(400, body={"code": "invalid_request", "message": message}))
    servers.append(server)
    return server.url


def _wrong_token_emulator(factory: EmulatorFactory, _: list[RecordingServer]) -> str:
    return factory(tokens=("api-some-other-token",)).url


def _failing_emulator(factory: EmulatorFactory, _: list[RecordingServer]) -> str:
    return factory(faults=Faults(rate_5xx=1.0, seed=7)).url


def _unreachable(_: EmulatorFactory, __: list[RecordingServer]) -> str:
    return f"http://127.0.0.1:{free_port()}"


FAILURES = [
    Failure("launchdarkly-400-permanent", _rejecting_emulator, dead_lettered=True),
    Failure("launchdarkly-400-echoing-input", _echoing_400, dead_lettered=True),
    Failure("launchdarkly-403-bad-token", _wrong_token_emulator, dead_lettered=True),
    # 8 s: the sync keeps 3 s for its answer and starts no segment in the last 2, so 3 s to fail in.
    Failure("launchdarkly-5xx-transient", _failing_emulator, dead_lettered=False, timeout=8.0),
    Failure("launchdarkly-unreachable", _unreachable, dead_lettered=False, timeout=8.0),
]


@pytest.mark.parametrize("failure", FAILURES, ids=[f.name for f in FAILURES])
def test_failing_launchdarkly_leaks_nothing(flow: Flow, emulator_factory: EmulatorFactory, failure: Failure) -> None:
    with flow.capture:
        servers: list[RecordingServer] = []
        try:
            url = failure.make(emulator_factory, servers)
            events = [audience_event(EMAILS[0]), audience_event(EMAILS[1], kind="track")]
            assert flow.ingest(request(events))[0] == 200
            result = flow.sync(url, timeout=failure.timeout)
        finally:
            for server in servers:
                server.close()

        dead = flow.aws.queue_messages(flow.aws.dlq_url)
        # Recorded either way (no record goes back to SQS): dead-lettered, or pending until LaunchDarkly answers.
        assert result == {"batchItemFailures": []}
        assert len(dead) == (2 if failure.dead_lettered else 0)
        check_captured_something(flow.capture, "request answered", "batch synced")
        assert any(line["level"] in ("ERROR", "WARNING") for line in flow.capture.log_lines()), "failure not logged"
        flow.capture.assert_no_leaks()
        # Dead letters keep the change (its context key is the email, by design) but never a secret.
        for message in dead:
            attributes = json.dumps(message.get("MessageAttributes", {}))
            assert not [s for s in SECRETS.values() if s in attributes + message["Body"]], attributes
            assert not EMAIL_PATTERN.search(attributes), attributes


def test_refused_requests_leak_nothing(flow: Flow) -> None:
    with flow.capture:
        good = audience_event(EMAILS[0])
        body = json.dumps([good]).encode()
        signature = hmac.new(SIGNING_KEY.encode(), body, hashlib.sha1).hexdigest()
        altered = body.replace(EMAILS[0].encode(), EMAILS[1].encode())
        too_long = "x" * 1025 + "@example.com"
        answers = [
            # Unauthorized: wrong secret, an email as the token, the secret as Basic password, no header.
            (401, request([good], authorization="Bearer not-the-secret")),
            (401, request([good], authorization=f"Bearer {EMAILS[2]}")),
            (401, request([good], authorization="Basic " + base64.b64encode(f":{WEBHOOK_CURRENT}".encode()).decode())),
            (401, request([good], authorization="")),
            # Right secret, bad or replayed signatures.
            (401, request([good], signature="0" * 40)),
            (401, request(None, raw=altered, signature=signature)),
            # Refused as a whole, with emails in the body.
            (400, request(None, raw=b'{"userId": "' + EMAILS[3].encode() + b'", broken')),
            (415, request([good], content_type="text/plain")),
            (405, request([good], method="GET")),
            # Every event invalid or skipped, each carrying an email.
            (
                200,
                request(
                    [
                        audience_event(EMAILS[0], value="maybe"),
                        audience_event(too_long),
                        audience_event("al\ud800ce@example.com"),
                        {**audience_event(EMAILS[1], user_id=EMAILS[2]), "timestamp": f"not a time {EMAILS[3]}"},
                        audience_event(EMAILS[4], kind="track", value={"email": EMAILS[4]}),
                        {
                            "type": "identify",
                            "userId": EMAILS[0],
                            "traits": {"email": EMAILS[1]},
                        },  # not an audience event
                    ]
                ),
            ),
        ]
        for expected, event in answers:
            status, body_ = flow.ingest(event)
            assert status == expected, body_
        # The webhook secret cannot be read, or holds malformed JSON around the real secret: logged, 503.
        missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope"
        malformed = flow.aws.secrets.create_secret(
            Name=f"leak-malformed-{uuid.uuid4().hex[:8]}", SecretString=f'{{"current": "{WEBHOOK_CURRENT}",, }}'
        )["ARN"]
        for arn in (missing, malformed):
            status, _ = flow.ingest(request([good]), WEBHOOK_SECRET_ARN=arn)
            assert status == 503
        assert flow.aws.queue_messages(flow.aws.queue_url) == []
        check_captured_something(flow.capture, "request answered", "webhook secret unavailable")
        flow.capture.assert_no_leaks()


# ----------------------------------------------------------------------------------------- emulators


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    started: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        options: dict[str, Any] = {"tokens": (LD_TOKEN,), "client_side_ids": (CLIENT_SIDE_ID,), **kwargs}
        emulator = Emulator(**options)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()
