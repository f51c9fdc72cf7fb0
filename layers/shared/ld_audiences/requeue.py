"""What goes back to SQS after a batch, and how.

Lambda's partial batch response returns failed records to the queue after the visibility timeout and
counts every return toward the dead-letter queue. That is right for a failure, wrong for a record that
only ran out of time (the batch's deadline, LaunchDarkly's rate-limit window, a context another
invocation is writing): those are queued again as new messages with the delay they wait for, and the
old ones are acknowledged, so they come back on time with a fresh receive count. Only when that send
fails do they go back the old way, as failures whose visibility timeout is cut to the same delay
(ChangeMessageVisibility), not left at the queue's six times the function timeout. Reasserts (the
second look after a write whose outcome is unknown) are queued the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ld_audiences.sqs_queue import Message
from ld_audiences.sync import DEFERRABLE, RETRY, QueuedRecord, SyncReport

logger = logging.getLogger(__name__)


class MessageQueue(Protocol):
    def send_messages(self, messages: Sequence[Message]) -> list[int]:
        """Queue the messages; returns the indexes of those that could not be queued."""

    def delay_return(self, receipts: Sequence[tuple[str, int]]) -> None:
        """Let received messages (receipt handle, seconds) come back after that delay."""


@dataclass(frozen=True, slots=True)
class Settlement:
    failures: list[str]  # record ids for batchItemFailures: SQS retries them and counts the receive
    requeued: int  # deferred records queued again
    reasserts: int  # reasserts queued


def settle(report: SyncReport, records: Sequence[QueuedRecord], queue: MessageQueue) -> Settlement:
    by_id = {record.record_id: record for record in records}
    failures = [o.record_id for o in report.outcomes if o.result == RETRY]
    deferred = [o for o in report.outcomes if o.result in DEFERRABLE]
    unsent = queue.send_messages([Message(by_id[o.record_id].body, math.ceil(o.delay)) for o in deferred])
    if unsent:
        returned = [deferred[i] for i in unsent]
        queue.delay_return(
            [
                (by_id[o.record_id].receipt_handle, math.ceil(o.delay))
                for o in returned
                if by_id[o.record_id].receipt_handle
            ]
        )
        failures += [o.record_id for o in returned]
    reasserts = [Message(change.to_message(), math.ceil(delay)) for change, delay in report.reasserts]
    lost = queue.send_messages(reasserts) if reasserts else []
    if lost:
        logger.error("could not queue the second look at writes whose outcome is unknown", extra={"lost": len(lost)})
    return Settlement(failures, len(deferred) - len(unsent), len(reasserts) - len(lost))
