"""Queue membership changes on SQS, ten per SendMessageBatch call, several calls at once."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import limits
from ld_audiences.change import MembershipChange
from ld_audiences.ingest import QueueUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

SQS_MAX_DELAY_SECONDS = 900
ATTEMPTS = 3  # per entry, for entries SQS reports as failed on its side


@dataclass(frozen=True, slots=True)
class Message:
    body: str
    delay_seconds: int = 0  # SQS keeps the message invisible this long (0-900)


class SqsChangeQueue:
    def __init__(self, client: SQSClient, queue_url: str, executor: Executor | None = None) -> None:
        self._client = client
        self._queue_url = queue_url
        # A 4,000-event Webhooks batch is 400 calls: sent one by one they would exceed Segment's 10 s timeout.
        self._executor = executor

    def send(self, changes: Sequence[MembershipChange]) -> None:
        """Queue every change, or raise QueueUnavailable (the sender retries the whole request)."""
        unsent = self.send_messages([Message(change.to_message()) for change in changes])
        if unsent:
            raise QueueUnavailable(f"SQS did not accept {len(unsent)} of {len(changes)} messages")

    def send_messages(self, messages: Sequence[Message]) -> list[int]:
        """Queue what SQS accepts; returns the indexes of the messages it did not."""
        starts = range(0, len(messages), limits.SQS_BATCH_ENTRIES)
        batches = [list(enumerate(messages[i : i + limits.SQS_BATCH_ENTRIES], start=i)) for i in starts]
        if self._executor is None or len(batches) <= 1:
            results = [self._send_batch(batch) for batch in batches]
        else:
            results = list(self._executor.map(self._send_batch, batches))
        return [index for unsent in results for index in unsent]

    def _send_batch(self, batch: list[tuple[int, Message]]) -> list[int]:
        pending = {str(index): message for index, message in batch}
        for _attempt in range(ATTEMPTS):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": entry_id,
                    "MessageBody": m.body,
                    "DelaySeconds": min(max(m.delay_seconds, 0), SQS_MAX_DELAY_SECONDS),
                }
                for entry_id, m in pending.items()
            ]
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except (ClientError, BotoCoreError):
                break
            failed = response.get("Failed", [])
            if any(f.get("SenderFault") for f in failed):
                break  # a sender fault fails the same way again: the queue refuses what we send
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                return []
        return [int(entry_id) for entry_id in pending]
