"""Lambda's SQS event source mapping, as a thread: how the sync function is fed on the local stack.

The rules (batch size and batching window, payload, partial batch responses) are the shared model's,
ld_audiences_local/models/sqs_event_source.py, which the simulation follows too; this module drives them
on real time against moto's queue. The visibility timeout and the redrive policy's dead-letter queue are
moto's own (it moves a message on the receive that would exceed `maxReceiveCount`, as SQS does).

moto's SQS costs O(messages queued) per call, so the poller receives continuously while messages arrive
(long polls while idle return as soon as a message lands) and deletes every batch as soon as it is handled.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences_local.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHING_WINDOW,
    DEFAULT_SYNC_TIMEOUT,
    REGION,
    SYNC_FUNCTION,
)
from ld_audiences_local.handlers import FakeLambdaContext, Handler
from ld_audiences_local.models.sqs_event_source import Batch, EventSourceMapping, partial_failures, settle

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

__all__ = ["BatchOutcome", "EventSourceStats", "SqsEventSource", "partial_failures"]

SQS_MAX_DELETE = 10  # entries of one DeleteMessageBatch
IDLE_WAIT_SECONDS = 1  # long poll while idle: moto answers as soon as a message is added
WINDOW_POLL_SLEEP = 0.02  # between empty receives inside a batching window
RECENT_BATCHES = 50  # kept for the status page


@dataclass(frozen=True)
class BatchOutcome:
    """One invocation of the function: when it ended, its records, how many went back to the queue."""

    finished_at: float  # epoch seconds
    records: int
    failed: int
    seconds: float
    handler_error: bool  # raised, ran past its timeout or answered an invalid response: the whole batch failed


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
        # The queue's visibility timeout and redrive policy are moto's to apply: not given here.
        self.mapping = EventSourceMapping(batch_size, batching_window, function_timeout)
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._function_name = function_name
        self._region = region
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = False  # messages received and not yet handed back or deleted
        self._lock = threading.Lock()
        self._stats = EventSourceStats()
        self._recent: deque[BatchOutcome] = deque(maxlen=RECENT_BATCHES)

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

    def recent_batches(self) -> list[BatchOutcome]:
        """The last RECENT_BATCHES invocations, oldest first."""
        with self._lock:
            return list(self._recent)

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

    @property
    def batch_size(self) -> int:
        return self.mapping.batch_size

    @property
    def batching_window(self) -> float:
        return self.mapping.batching_window

    @property
    def function_timeout(self) -> float:
        return self.mapping.function_timeout

    def _collect(self) -> list[dict[str, Any]]:
        gathering = Batch(self.mapping)
        messages = self._receive(gathering.receivable(), IDLE_WAIT_SECONDS)
        if not messages:
            return []
        self._holding = True
        self._add(gathering, messages)
        # A poll asks only for what surely fits (`receivable`): a received message cannot be put back.
        while not gathering.complete(time.monotonic()) and not self._stopping.is_set():
            more = self._receive(gathering.receivable(), 0)
            if more:
                self._add(gathering, more)
                messages.extend(more)
            else:
                assert gathering.closes_at is not None
                time.sleep(max(0.0, min(WINDOW_POLL_SLEEP, gathering.closes_at - time.monotonic())))
        return messages

    @staticmethod
    def _add(gathering: Batch, messages: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for message in messages:
            gathering.add(len(message.get("Body", "").encode()), now)

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
        response, raised = None, False
        try:
            response = self._handler(event, context)
        except Exception:
            logger.exception("the sync handler raised")
            raised = True
        seconds = time.monotonic() - started
        settlement = settle(ids, response, seconds=seconds, timeout=self.function_timeout, raised=raised)
        if settlement.error is not None:
            logger.error(
                "the sync handler %s (%.1f s, timeout %.0f s): the whole batch returns after the visibility timeout",
                settlement.error,
                seconds,
                self.function_timeout,
            )
        failed, error = settlement.failed, settlement.error is not None
        done = [m for m in batch if m["MessageId"] not in failed]
        deleted = self._delete(done)
        with self._lock:
            self._recent.append(BatchOutcome(time.time(), len(batch), len(failed), seconds, error))
            self._stats.batches += 1
            self._stats.records += len(batch)
            self._stats.failures += len(failed)
            self._stats.handler_errors += int(error)
            self._stats.deleted += deleted

    def _delete(self, messages: list[dict[str, Any]]) -> int:
        deleted = 0
        for start in range(0, len(messages), SQS_MAX_DELETE):
            chunk = messages[start : start + SQS_MAX_DELETE]
            response = self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                logger.warning("could not delete a handled message: %s", failure.get("Code"))
        return deleted


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
