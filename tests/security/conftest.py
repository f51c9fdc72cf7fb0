"""Shared pieces of the security tests: API Gateway proxy events built from raw parts, and one set of
AWS resources in moto per test module (hypothesis cannot use function-scoped fixtures, and a fresh
queue per corpus case would only make the suite slower)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import pytest

from ld_audiences.change import MembershipChange
from ld_audiences_local.handlers import FakeLambdaContext, Handler, load_handler
from tests.conftest import REGION

# SQS accepts #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF in a message body
# (SendMessage docs) and refuses, or rewrites to U+FFFD, anything else. moto does not check: tests do.
SQS_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def sqs_safe(text: str) -> bool:
    return SQS_FORBIDDEN.search(text) is None


def api_event(
    *,
    body: str | None,
    headers: Mapping[str, str] | None = None,
    is_base64: bool = False,
    method: str = "POST",
    path: str = "/events",
    query: Mapping[str, list[str]] | None = None,
    received: datetime | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event exactly as the ingest function receives one."""
    headers = dict(headers or {})
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} if query else None,
        "multiValueQueryStringParameters": dict(query) if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": f"req-{uuid.uuid4()}",
            "stage": "v1",
            "httpMethod": method,
            "resourcePath": path,
            "path": f"/v1{path}",
            "identity": {"sourceIp": "127.0.0.1"},
            **({"requestTimeEpoch": int(received.timestamp() * 1000)} if received else {}),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


@dataclass
class IngestStack:
    """A queue, a DLQ and secrets in moto, plus ingest handlers loaded against them (cached per environment)."""

    endpoint: str
    monkeypatch: pytest.MonkeyPatch
    sqs: Any = None
    secrets: Any = None
    queue_url: str = ""
    dlq_url: str = ""
    base_env: dict[str, str] = field(default_factory=dict)
    arns: dict[str, str] = field(default_factory=dict)  # secrets a test module stored, by its own names
    _handlers: dict[frozenset[tuple[str, str]], Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name=REGION)
        self.secrets = boto3.client("secretsmanager", endpoint_url=self.endpoint, region_name=REGION)
        suffix = uuid.uuid4().hex[:10]
        self.dlq_url = self.sqs.create_queue(QueueName=f"sec-dlq-{suffix}")["QueueUrl"]
        self.queue_url = self.sqs.create_queue(QueueName=f"sec-changes-{suffix}")["QueueUrl"]
        self.monkeypatch.setenv("AWS_ENDPOINT_URL", self.endpoint)

    def secret(self, value: str) -> str:
        """Store a secret value in moto and return its ARN."""
        name = f"sec-{uuid.uuid4().hex[:12]}"
        arn: str = self.secrets.create_secret(Name=name, SecretString=value)["ARN"]
        return arn

    def handler(self, env: Mapping[str, str]) -> Handler:
        """The real ingest `lambda_handler`, loaded with `base_env` + `env` (cached per environment)."""
        merged = {"QUEUE_URL": self.queue_url, **self.base_env, **env}
        key = frozenset(merged.items())
        if key not in self._handlers:
            for name, value in merged.items():
                self.monkeypatch.setenv(name, value)
            self._handlers[key] = load_handler("ingest")
        return self._handlers[key]

    def call(self, handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
        return handler(event, FakeLambdaContext("ingest"))

    def drain(self) -> list[str]:
        """Every message now in the queue (received and deleted)."""
        bodies: list[str] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", [])
            if not messages:
                return bodies
            bodies.extend(m["Body"] for m in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


@pytest.fixture(scope="module")
def ingest_stack(moto_endpoint: str) -> Iterator[IngestStack]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "ld-audiences-security")
        monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LdAudiencesSecurity")
        yield IngestStack(moto_endpoint, monkeypatch)


def validate_queued(bodies: list[str]) -> list[MembershipChange]:
    """Every queued body must be a valid membership change that SQS can carry unchanged."""
    changes = []
    for body in bodies:
        assert sqs_safe(body), f"a queued body holds characters SQS refuses: {body!r}"
        change = MembershipChange.from_message(body)
        # Re-validate from scratch: the model's own constraints, and a lossless round trip.
        assert MembershipChange.model_validate(change.model_dump()) == change
        assert MembershipChange.from_message(change.to_message()) == change
        changes.append(change)
    return changes


def error_shape_ok(status: int, body: Any) -> bool:
    """Segment's clients retry any error whose JSON body lacks `code` and `message`."""
    if status == 200:
        return isinstance(body, dict)
    return (
        isinstance(body, dict)
        and isinstance(body.get("code"), str)
        and bool(body["code"])
        and isinstance(body.get("message"), str)
        and bool(body["message"])
    )


def decode_response(response: dict[str, Any]) -> tuple[int, Any]:
    assert isinstance(response, dict) and isinstance(response.get("statusCode"), int), response
    body = response.get("body")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return response["statusCode"], json.loads(body)
