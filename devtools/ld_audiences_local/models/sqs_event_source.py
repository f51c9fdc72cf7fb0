"""Lambda's SQS event source mapping, as one pure model: the rules by which SQS messages become
invocations of the sync function, and what an invocation's answer does to them.

The local stack's poller (ld_audiences_local/event_source.py) applies these rules on real time against
moto's queue; the simulation (bench/sim_event_source.py) on virtual time against its own. The model keeps
no clock and no queue: each driver passes the time and the messages it has.

What AWS documents ("Using Lambda with Amazon SQS", "Configuring scaling behavior for SQS event source
mappings", "Handling errors for an SQS event source"):

* a batch takes up to `batch_size` records (1-10,000) and is invoked when it is full, when the batching
  window (0-300 s) has passed since its first record, or when one more record could push the event past
  Lambda's 6 MB payload; without a window it is what one poll returns, so at most 10 records (the
  template refuses a larger batch size with a window of 0, as the Lambda API does);
* with `ReportBatchItemFailures`, the records the answer names come back after the visibility timeout
  (counted from their receive) and the others are deleted; an answer that names a record the batch does not
  hold (or no valid id), a handler that raises and one that runs past its timeout fail the whole batch;
* SQS's redrive policy moves a message to the dead-letter queue on the receive that would exceed
  `maxReceiveCount`, instead of delivering it;
* with messages waiting, Lambda runs five batches at a time, adds up to 300 a minute, up to 1,000, or the
  mapping's `MaximumConcurrency` (2-1,000) when set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
SQS_MESSAGE_BYTES = 256 * 1024  # the largest message SQS takes
RECEIVE_MESSAGES = 10  # the most one ReceiveMessage returns
RECORD_ENVELOPE_BYTES = 700  # a record's ids, attributes and ARN around its body in the Lambda event
FIRST_BATCHES, BATCHES_ADDED_PER_MINUTE, MOST_BATCHES = 5, 300, 1000

RAISED, TIMED_OUT, INVALID_RESPONSE = "raised", "ran past its timeout", "answered an invalid batchItemFailures"


@dataclass(frozen=True)
class EventSourceMapping:
    """The mapping's settings and those of the queue it reads (visibility timeout, redrive policy)."""

    batch_size: int = 10
    batching_window: float = 0.0  # seconds
    function_timeout: float = 60.0  # seconds
    visibility_timeout: float = 360.0  # seconds
    max_receive_count: int | None = None  # the redrive policy's; None: no dead-letter queue
    maximum_concurrency: int | None = None  # ScalingConfig's; None: Lambda's own scaling alone

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10000:
            raise ValueError("batch_size must be between 1 and 10000")
        if not 0 <= self.batching_window <= 300:
            raise ValueError("batching_window must be between 0 and 300 seconds")
        if self.batching_window == 0 and self.batch_size > RECEIVE_MESSAGES:
            raise ValueError(f"with a batching window of 0, batch_size must be at most {RECEIVE_MESSAGES}")
        if self.max_receive_count is not None and self.max_receive_count < 1:
            raise ValueError("max_receive_count must be at least 1")

    def dead_letters(self, receive_count: int) -> bool:
        """Whether the `receive_count`-th receive of a message moves it to the dead-letter queue instead."""
        return self.max_receive_count is not None and receive_count > self.max_receive_count

    def visible_again_at(self, received_at: float) -> float:
        """When a received message that was not deleted can be received again."""
        return received_at + self.visibility_timeout

    def concurrent_batches(self, seconds_with_messages: float) -> int:
        """How many batches Lambda runs at once after messages have waited this long."""
        most = MOST_BATCHES if self.maximum_concurrency is None else self.maximum_concurrency
        return min(most, FIRST_BATCHES + int(seconds_with_messages * BATCHES_ADDED_PER_MINUTE / 60))

    def starts_after(self, batch_index: int) -> float:
        """Seconds after messages start waiting before Lambda runs its `batch_index`-th (0-based) batch at once."""
        return max(0, batch_index + 1 - FIRST_BATCHES) * 60 / BATCHES_ADDED_PER_MINUTE


class Batch:
    """A batch being gathered: opened by its first record, complete when full, its window passed or its
    payload unable to take another record."""

    def __init__(self, mapping: EventSourceMapping) -> None:
        self.mapping = mapping
        self.records = 0
        self.payload_bytes = 0
        self.closes_at: float | None = None  # set by the first record

    def fits(self, body_bytes: int) -> bool:
        """Whether a message of `body_bytes` may join the batch."""
        record = body_bytes + RECORD_ENVELOPE_BYTES
        return self.records < self.mapping.batch_size and self.payload_bytes + record <= LAMBDA_PAYLOAD_BYTES

    def add(self, body_bytes: int, now: float) -> None:
        if self.closes_at is None:
            self.closes_at = now + self.mapping.batching_window
        self.records += 1
        self.payload_bytes += body_bytes + RECORD_ENVELOPE_BYTES

    def receivable(self) -> int:
        """How many messages one poll may ask for: whatever their size, they fit."""
        room = (LAMBDA_PAYLOAD_BYTES - self.payload_bytes) // (SQS_MESSAGE_BYTES + RECORD_ENVELOPE_BYTES)
        return max(0, min(RECEIVE_MESSAGES, self.mapping.batch_size - self.records, room))

    def complete(self, now: float) -> bool:
        if self.closes_at is None:
            return False
        return now >= self.closes_at or self.receivable() == 0 or self.records >= self.mapping.batch_size


@dataclass(frozen=True)
class Settlement:
    """What an invocation's end does to its batch: the records that come back (the rest are deleted)."""

    failed: frozenset[str]
    error: str | None = None  # why the whole batch failed (RAISED, TIMED_OUT, INVALID_RESPONSE), if it did


def settle(
    record_ids: Iterable[str], response: Any, *, seconds: float, timeout: float, raised: bool = False
) -> Settlement:
    """The settlement of an invocation that answered `response` (or raised) after `seconds`."""
    ids = frozenset(record_ids)
    if raised:
        return Settlement(ids, RAISED)
    if seconds > timeout:
        return Settlement(ids, TIMED_OUT)
    reported = partial_failures(response, ids)
    return Settlement(ids, INVALID_RESPONSE) if reported is None else Settlement(frozenset(reported))


def partial_failures(response: Any, batch_ids: Iterable[str]) -> set[str] | None:
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
