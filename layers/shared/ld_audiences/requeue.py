"""What goes back to SQS after an invocation.

Records that could not be recorded in their audience's pending log go back through Lambda's partial batch
response (`batchItemFailures`): SQS delivers them again after the visibility timeout and counts the
receive toward the dead-letter queue. Everything else was recorded, or is on its way to the dead-letter
queue, and is acknowledged. Two kinds of message are queued anew: the rechecks after a write whose outcome
is unknown (reasserts, delayed), and a tick when work is left that no coming batch is sure to pick up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ld_audiences.outcomes import SyncReport
from ld_audiences.sqs_queue import Message
from ld_audiences.sync import TICK_BODY

logger = logging.getLogger(__name__)


class MessageQueue(Protocol):
    def send_messages(self, messages: Sequence[Message]) -> list[int]:
        """Queue the messages; returns the indexes of those that could not be queued."""


@dataclass(frozen=True, slots=True)
class Settlement:
    failures: list[str]  # record ids for batchItemFailures: SQS delivers them again and counts the receive
    reasserts: int  # rechecks queued
    tick: bool  # a reconcile-only message was queued


def settle(report: SyncReport, queue: MessageQueue, tick_due: Callable[[float], bool]) -> Settlement:
    """`tick_due(seconds)` says whether this invocation should queue the tick (none is due sooner)."""
    reasserts = [Message(change.to_message(), math.ceil(delay)) for change, delay in report.reasserts]
    lost = queue.send_messages(reasserts) if reasserts else []
    if lost:
        logger.error("could not queue the second look at writes whose outcome is unknown", extra={"lost": len(lost)})
    # A tick that cannot be sent is the schedule's: its next invocation (within a minute) reconciles instead.
    tick = False
    if report.continue_now:
        tick = not queue.send_messages([Message(TICK_BODY, 0)])
    elif report.next_tick is not None and tick_due(report.next_tick):
        tick = not queue.send_messages([Message(TICK_BODY, math.ceil(report.next_tick))])
    return Settlement(report.failed, len(reasserts) - len(lost), tick)
