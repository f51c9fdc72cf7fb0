"""AWS on loopback: moto's server mode with the queue, its dead-letter queue, the state table and both
secrets created as template.yaml defines them. It answers this machine's tools only, never a web page
(loopback_guard.py): it holds both secrets.

moto's backends are process-wide and outlive a server: starting removes what an earlier run in this process
left under the same names (and nothing else), so every run starts empty.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from ld_audiences.aws_clients import LONG_POLL_READ_TIMEOUT, client_config
from ld_audiences.state_table import table_definition
from ld_audiences_cli.status import queue_depth
from ld_audiences_local.defaults import (
    ACCESS_KEY,
    DLQ_NAME,
    QUEUE_NAME,
    REGION,
    SECRET_KEY,
    TABLE_NAME,
    TOKEN_SECRET_NAME,
    WEBHOOK_SECRET_NAME,
)
from ld_audiences_local.loopback_guard import DOCKER_HOST_NAME, LOOPBACK_NAMES, LoopbackOnly
from ld_audiences_local.moto_patches import prepare_moto

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from werkzeug.serving import BaseWSGIServer

DLQ_RETENTION_SECONDS = 1209600  # 14 days, SQS's longest, as template.yaml sets it


class LocalAws:
    """A moto server on 127.0.0.1 (`port`, 0: a free one), and the product's resources in it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.url = ""
        self.queue_url = ""
        self.queue_arn = ""
        self.dlq_url = ""
        self.dlq_arn = ""
        self.token_secret_arn = ""
        self.webhook_secret_arn = ""
        self.sqs: SQSClient | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve moto; OSError when the port is taken."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        prepare_moto()
        werkzeug_logger = logging.getLogger("werkzeug")
        if werkzeug_logger.level == logging.NOTSET:
            werkzeug_logger.setLevel(logging.WARNING)  # no line per moto request
        # Bound here, not by werkzeug, which answers a taken port with sys.exit (moto's ThreadedMotoServer
        # then waits forever for a server that never starts).
        with socket.create_server(("127.0.0.1", self.port)) as listening:
            app = LoopbackOnly(DomainDispatcherApplication(create_backend_app), LOOPBACK_NAMES | {DOCKER_HOST_NAME})
            self._server = make_server(
                "127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler, fd=listening.fileno()
            )
        self._thread = threading.Thread(target=self._server.serve_forever, name="ld-audiences-moto", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None

    def client(self, service: str) -> Any:
        """A boto3 client for moto (explicit endpoint and credentials; independent of the environment)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            # moto answers one DynamoDB transaction at a time, slower than DynamoDB: a longer read timeout.
            config=client_config(threads=20, read_timeout=LONG_POLL_READ_TIMEOUT),
        )

    def create_resources(
        self, *, visibility_timeout: int, max_receive_count: int, launchdarkly_token: str, webhook_secret: str
    ) -> None:
        self._delete_leftovers()
        sqs: SQSClient = self.client("sqs")
        self.sqs = sqs
        self.dlq_url = sqs.create_queue(
            QueueName=DLQ_NAME, Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
        )["QueueUrl"]
        self.dlq_arn = self._queue_arn(self.dlq_url)
        redrive = {"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": max_receive_count}
        self.queue_url = sqs.create_queue(
            QueueName=QUEUE_NAME,
            Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        self.queue_arn = self._queue_arn(self.queue_url)

        dynamodb = self.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE_NAME))
        dynamodb.update_time_to_live(
            TableName=TABLE_NAME, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

        secrets = self.client("secretsmanager")
        self.token_secret_arn = secrets.create_secret(Name=TOKEN_SECRET_NAME, SecretString=launchdarkly_token)["ARN"]
        self.webhook_secret_arn = secrets.create_secret(Name=WEBHOOK_SECRET_NAME, SecretString=webhook_secret)["ARN"]

    def queue_counts(self, queue_url: str) -> dict[str, int]:
        assert self.sqs is not None, "no resources created"
        return asdict(queue_depth(self.sqs, queue_url))

    def _queue_arn(self, queue_url: str) -> str:
        assert self.sqs is not None
        return self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def _delete_leftovers(self) -> None:
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
