"""Real components on loopback for every test that needs them: moto in server mode, the LaunchDarkly
emulator over HTTP."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from ld_audiences.context_state import ContextStates
from ld_audiences.dead_letters import SqsDeadLetters
from ld_audiences.pending_log import PendingLog
from ld_audiences.state_table import table_definition
from ld_audiences.sync import Synchronizer
from ld_audiences.writers import SegmentWriter
from ld_audiences_local.ambiguities import Ambiguities, every_variant, label
from ld_audiences_local.emulator import Emulator
from ld_audiences_local.moto_patches import prepare_moto

LD_TOKEN = "api-test-token-0123456789"
CLIENT_SIDE_ID = "test-client-id"
REGION = "us-east-1"

# Never let a test reach real AWS, whatever the developer's shell has configured.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION=REGION,
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_DEV="false",
)


class PoolFullWarnings(logging.Handler):
    """urllib3's "Connection pool is full" warning means a client has more threads than pooled connections
    and opens a new connection for each request over the pool (issue 9, item 2): no test run may log one.
    Checked after every test (background threads' warnings go to the test running then) and once more
    when the session ends."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._seen: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("Connection pool is full"):
            with self._guard:
                self._seen.append(f"{record.threadName}: {record.getMessage()}")

    def take(self) -> list[str]:
        with self._guard:
            seen, self._seen = self._seen, []
        return seen


POOL_FULL = PoolFullWarnings()
_pool_logger = logging.getLogger("urllib3.connectionpool")  # botocore and requests both pool through it
_pool_logger.addHandler(POOL_FULL)
if not _pool_logger.isEnabledFor(logging.WARNING):
    _pool_logger.setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def no_connection_pool_full() -> Iterator[None]:
    yield
    seen = POOL_FULL.take()
    if seen:
        pytest.fail(f"urllib3 warned {len(seen)} time(s) that a connection pool is full: {seen[:3]}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    seen = POOL_FULL.take()
    if seen:
        print(f"\nurllib3 warned {len(seen)} time(s) after the last test that a connection pool is full: {seen[:3]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs on two pytest-xdist workers (`--dist loadgroup`): the tests that share a module-scoped
    fixture (a local stack, a run through it) go to one worker, which builds it once; the rest spread."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is None:
            continue
        if any(defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    prepare_moto()  # the same moto as the local stack's
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass
class Aws:
    endpoint: str
    sqs: Any
    dynamodb: Any
    secrets: Any
    queue_url: str
    dlq_url: str
    table: str
    token_secret: str
    webhook_secret: str

    def queue_messages(self, url: str) -> list[dict[str, Any]]:
        """Everything in a queue, received once (and left invisible)."""
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=300
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(batch)

    def sqs_event(self) -> dict[str, Any]:
        """The main queue's messages as the Lambda SQS event source delivers them to sync."""
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "awsRegion": REGION,
                }
                for m in self.queue_messages(self.queue_url)
            ]
        }


def make_sync(
    aws: Aws, writer: SegmentWriter, chunk_size: int = 1000, *, dynamodb: Any = None, **options: Any
) -> Synchronizer:
    """The sync core as an invocation builds it, on the test's table and queues (`dynamodb` stands in for the
    client, to inject faults)."""
    client = dynamodb or aws.dynamodb
    clock = options.get("clock", time.time)  # the stores keep the sync's time
    return Synchronizer(
        writer=writer,
        log=PendingLog(client, aws.table, clock=clock),
        states=ContextStates(client, aws.table, clock=clock),
        dead_letters=SqsDeadLetters(aws.sqs, aws.dlq_url),
        chunk_size=chunk_size,
        **options,
    )


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """A fresh queue, DLQ, state table and secrets in moto, and the environment pointing at them."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_endpoint, region_name=REGION)

    sqs, dynamodb, secrets = client("sqs"), client("dynamodb"), client("secretsmanager")
    suffix = uuid.uuid4().hex[:10]
    dlq_url = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"changes-{suffix}",
        Attributes={"RedrivePolicy": f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"3"}}'},
    )["QueueUrl"]
    table = f"state-{suffix}"
    dynamodb.create_table(**table_definition(table))
    token_secret = secrets.create_secret(Name=f"ld-token-{suffix}", SecretString=LD_TOKEN)["ARN"]
    webhook_secret = secrets.create_secret(Name=f"webhook-{suffix}", SecretString="webhook-secret-value")["ARN"]
    return Aws(moto_endpoint, sqs, dynamodb, secrets, queue_url, dlq_url, table, token_secret, webhook_secret)


@contextlib.contextmanager
def running_emulator(ambiguities: Ambiguities | None = None, *, strict: bool = False) -> Iterator[Emulator]:
    """The tests' emulator; `strict`: on the way out, no answer of it strayed from LaunchDarkly's documentation
    (tests that provoke undocumented refusals on purpose are not strict)."""
    emu = Emulator(
        tokens=(LD_TOKEN,), client_side_ids=(CLIENT_SIDE_ID,), reject_cohorts=("aud_rejected",), ambiguities=ambiguities
    )
    emu.start()
    try:
        yield emu
        if strict:
            assert emu.stats()["spec_violations"] == []
    finally:
        emu.stop()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture(params=every_variant(), ids=label)
def emulator_every_answer(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The emulator under each answer LaunchDarkly's documentation leaves open (ambiguities.py)."""
    with running_emulator(request.param, strict=True) as emu:
        yield emu
