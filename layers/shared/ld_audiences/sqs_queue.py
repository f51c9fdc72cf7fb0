"""Queue membership changes on SQS, ten per SendMessageBatch call, several calls at once."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences import limits
from ld_audiences.change import MembershipChange
from ld_audiences.ingest import QueueUnavailable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ATTEMPTS = 3  # per entry, for entries SQS reports as failed on its side
# A 4,000-event Webhooks batch is 400 calls: sent one by one they would exceed Segment's 10 s timeout.
PARALLEL_CALLS = 8


class SqsChangeQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, changes: Sequence[MembershipChange]) -> None:
        size = limits.SQS_BATCH_ENTRIES
        batches = [changes[i : i + size] for i in range(0, len(changes), size)]
        if len(batches) <= 1:
            for batch in batches:
                self._send_batch(batch)
            return
        with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(batches))) as pool:
            # list() re-raises the first QueueUnavailable from any worker.
            list(pool.map(self._send_batch, batches))

    def _send_batch(self, batch: Sequence[MembershipChange]) -> None:
        pending = {str(i): change for i, change in enumerate(batch)}
        for _attempt in range(ATTEMPTS):
            entries = [{"Id": entry_id, "MessageBody": change.to_message()} for entry_id, change in pending.items()]
            try:
                response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)  # type: ignore[arg-type]
            except (ClientError, BotoCoreError) as exc:
                raise QueueUnavailable(type(exc).__name__) from exc
            failed = response.get("Failed", [])
            if any(f.get("SenderFault") for f in failed):
                # A sender fault will fail the same way again: the queue refuses what we send.
                raise QueueUnavailable("SQS rejected a message as malformed")
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                return
        raise QueueUnavailable(f"SQS did not accept {len(pending)} messages after {ATTEMPTS} attempts")
