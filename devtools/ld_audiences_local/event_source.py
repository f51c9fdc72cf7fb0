"""Lambda's SQS event source mapping, as a thread: how the sync function is fed on the local stack.

Batch size and batching window, partial batch responses (`ReportBatchItemFailures`), the visibility
timeout, and the redrive policy's dead-letter queue after `maxReceiveCount` receives (moto itself moves
the message, on the receive that would exceed the count, as SQS does).

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

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = logging.getLogger(__name__)

LAMBDA_MAX_PAYLOAD = 6 * 1024 * 1024
SQS_MAX_RECEIVE = 10
SQS_MAX_MESSAGE = 256 * 1024
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
        seconds = time.monotonic() - started
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
