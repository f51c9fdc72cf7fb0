"""In-memory stand-ins for the network: what lets the benchmarks measure our code and nothing else.

None of this is product code; the product's real classes (Synchronizer, LaunchDarklyClient, the
writers, SqsChangeQueue, the handlers) run unchanged on top of these.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from botocore.exceptions import ClientError

from bench.sim_aws import InProcessDynamoDB
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.state_table import table_definition


class DirectDynamoDB:
    """A DynamoDB client without botocore: each call goes straight to an `InProcessDynamoDB` (bench/sim_aws/,
    checked against moto in tests/unit/test_sim_aws.py) and is answered as a boto3 client answers (binary
    values as bytes, errors as `ClientError`). It lets the pure-core figure count the sync's own CPU:
    `answer_seconds` is the CPU the stand-in spent answering, to be subtracted."""

    def __init__(self, service: InProcessDynamoDB) -> None:
        self.service = service
        self.answer_seconds = 0.0

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        operation = "".join(part.title() for part in name.split("_"))

        def call(**request: Any) -> dict[str, Any]:
            started = time.process_time()
            status, answer = self.service.answer(operation, json.loads(json.dumps(request, default=_b64)))
            answer = _unb64(answer)
            self.answer_seconds += time.process_time() - started
            if status != 200:
                error = {"Code": answer.get("__type", "").rpartition("#")[2], "Message": answer.get("message", "")}
                raise ClientError({**answer, "Error": error}, name)
            return answer

        return call


def direct_state_table(table: str = "bench-state") -> DirectDynamoDB:
    """A fresh state table that never throttles, behind a direct client."""
    service = InProcessDynamoDB(time.time, throttle=False)
    service.create_table(table_definition(table))
    return DirectDynamoDB(service)


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def _unb64(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("B"), str):
            return {"B": base64.b64decode(value["B"])}
        return {k: _unb64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


@dataclass
class RecordedRequest:
    method: str
    url: str
    bytes: int
    items: int


@dataclass
class RecordingSession:
    """A `requests.Session` stand-in for `LaunchDarklyClient`: answers 204 like segment-audiences,
    counts requests and the bytes `requests` would send, and keeps segment state like LaunchDarkly
    (every item lands in the segment of the batch's first item)."""

    requests: list[RecordedRequest] = field(default_factory=list)
    members: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    keep_state: bool = True

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> requests.Response:
        body = _json_bytes(json)
        batch = json.get("batch", []) if isinstance(json, dict) else []
        self.requests.append(RecordedRequest(method, url, len(body), len(batch)))
        if self.keep_state and batch:
            segment = self.members[batch[0]["cohortId"]]
            for item in batch:
                (segment.add if item["value"] else segment.discard)(item["userId"])
        response = requests.Response()
        response.status_code = 204
        response._content = b""
        response.reason = "No Content"
        response.url = url
        return response

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.requests)


def _json_bytes(body: Any) -> bytes:
    # Exactly what requests does with `json=`: json.dumps(..., allow_nan=False), UTF-8.
    return json.dumps(body, allow_nan=False).encode("utf-8")


def json_bytes(body: Any) -> int:
    return len(_json_bytes(body))


class NullDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[QueuedRecord, str]] = []

    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        self.sent.append((record, reason))
        return True


def send_batch_success(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """SQS's SendMessageBatch answer when every entry was accepted."""
    return {
        "Successful": [
            {
                "Id": e["Id"],
                "MessageId": str(uuid.uuid4()),
                "MD5OfMessageBody": hashlib.md5(e["MessageBody"].encode(), usedforsecurity=False).hexdigest(),
            }
            for e in entries
        ],
        "Failed": [],
    }


class FakeSqsClient:
    """Accepts SendMessageBatch like SQS does (every entry successful), thread-safe, no network."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.messages = 0
        self.bytes = 0

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        size = sum(len(e["MessageBody"]) for e in Entries)
        with self._lock:
            self.calls += 1
            self.messages += len(Entries)
            self.bytes += size
        return send_batch_success(Entries)


class FakeSecretsClient:
    """What Powertools' SecretsProvider calls: `get_secret_value`."""

    def __init__(self, value: str) -> None:
        self._value = value
        self.calls = 0

    def get_secret_value(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"SecretString": self._value, "Name": "webhook-secret", "VersionId": "v1"}
