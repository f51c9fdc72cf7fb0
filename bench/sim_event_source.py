"""SQS and Lambda's SQS event source mapping on the simulation's virtual clock.

The rules are the shared model's (devtools/ld_audiences_local/models/sqs_event_source.py), the ones the
local stack's poller follows on real time: batch size, batching window and payload, partial batch
responses, the visibility timeout counted from the receive, the redrive policy's dead-letter queue, and
how many batches run at once. This module only keeps the queue (arrivals, returned and delayed messages)
and runs each Lambda instance's loop: gather a batch, invoke, settle.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.sim_aws import SentMessage
from bench.virtual_time import VirtualTime
from ld_audiences_local.models.sqs_event_source import Batch, EventSourceMapping, Settlement, settle


@dataclass(frozen=True)
class Arrivals:
    """What arrives (`count` messages, the n-th with `body(n)`) and when: one every 1/`rate` s from `start`."""

    count: int
    rate: float
    start: float
    body: Callable[[int], str]

    def at(self, index: int) -> float:
        return self.start + index / self.rate


@dataclass(order=True)
class Message:
    visible_at: float
    seq: int
    body: str = field(compare=False)
    message_id: str = field(compare=False)
    receives: int = field(default=0, compare=False)


class SimulatedQueue:
    """The queue and its dead-letter queue, fed by the arrivals and by what the sync sends."""

    def __init__(self, arrivals: Arrivals, mapping: EventSourceMapping, dlq_url: str, tick_body: str) -> None:
        self._arrivals = arrivals
        self._mapping = mapping
        self._dlq_url, self._tick_body = dlq_url, tick_body
        self._fresh = 0  # arrivals handed out so far
        self._ready: list[Message] = []  # returned, deferred or delayed messages, by when they show
        self._seq = itertools.count()
        self.in_flight: dict[str, Message] = {}
        self.dead_letters = 0
        self.deferred = 0
        self.ticks = 0
        self.received = 0
        self.last_done = arrivals.start

    def finished(self) -> bool:
        return self._fresh >= self._arrivals.count and not self._ready and not self.in_flight

    def next_visible(self) -> float | None:
        times = []
        if self._fresh < self._arrivals.count:
            times.append(self._arrivals.at(self._fresh))
        if self._ready:
            times.append(self._ready[0].visible_at)
        return min(times) if times else None

    def when_visible(self, count: int) -> float:
        """When `count` messages will be visible, counting arrivals only (a batching window's end)."""
        ready = len(self._ready)
        index = min(self._fresh + max(count - ready, 1) - 1, self._arrivals.count - 1)
        return self._arrivals.at(index)

    def take(self, batch: Batch, now: float) -> list[Message]:
        """Receive visible messages into `batch` while they fit; a message whose receive would exceed
        maxReceiveCount goes to the DLQ instead, as SQS's redrive policy does."""
        taken: list[Message] = []
        while True:
            if self._ready and self._ready[0].visible_at <= now:
                message = self._ready[0]
                if not batch.fits(len(message.body)):
                    break
                heapq.heappop(self._ready)
            elif self._fresh < self._arrivals.count and self._arrivals.at(self._fresh) <= now:
                body = self._arrivals.body(self._fresh)
                if not batch.fits(len(body)):
                    break
                message = Message(now, next(self._seq), body, f"m-{self._fresh}")
                self._fresh += 1
            else:
                break
            message.receives += 1
            if self._mapping.dead_letters(message.receives):
                self.dead_letters += 1
                continue
            batch.add(len(message.body), now)
            message.visible_at = self._mapping.visible_again_at(now)  # unless deleted before
            self.received += 1
            taken.append(message)
            self.in_flight[message.message_id] = message
        return taken

    def acknowledge(self, message: Message, now: float) -> None:
        self.in_flight.pop(message.message_id, None)
        self.last_done = max(self.last_done, now)

    def return_(self, message: Message) -> None:
        """Not deleted: it shows again when its visibility timeout (set at its receive) ends."""
        self.in_flight.pop(message.message_id, None)
        heapq.heappush(self._ready, message)

    def send(self, sent: SentMessage, now: float) -> None:
        if sent.queue_url == self._dlq_url:
            self.dead_letters += 1
            return
        self.deferred += 1
        self.ticks += sent.body == self._tick_body
        heapq.heappush(self._ready, Message(now + sent.delay_seconds, next(self._seq), sent.body, sent.message_id))


Invoke = Callable[[list[Message]], tuple[Any, float]]  # a batch → (the handler's answer, seconds it ran)


class SimulatedEventSource:
    """Each Lambda instance's loop: gather a batch by the mapping's rules, invoke, settle its records."""

    def __init__(self, clock: VirtualTime, queue: SimulatedQueue, mapping: EventSourceMapping) -> None:
        self._clock, self._queue, self._mapping = clock, queue, mapping
        self.timeouts = 0

    def serve(self, invoke: Invoke) -> None:
        """Run batches through `invoke` until the queue is finished (the calling task is the instance)."""
        while (batch := self._collect()) is not None:
            if batch:
                self._settle(batch, *invoke(batch))

    def _collect(self) -> list[Message] | None:
        clock, queue = self._clock, self._queue
        while True:
            now = clock.time()
            if queue.finished():
                return None
            visible_at = queue.next_visible()
            if visible_at is None:
                clock.sleep(0.1)  # everything is in flight elsewhere: it may come back
                continue
            if visible_at > now:
                clock.sleep(visible_at - now)
                continue
            if self._mapping.batching_window > 0:
                # The window opens with the first visible message; sleep to its end or until the batch is full.
                wake = min(now + self._mapping.batching_window, queue.when_visible(self._mapping.batch_size))
                if wake > now:
                    clock.sleep(wake - now)
            with clock.uncounted():
                batch = queue.take(Batch(self._mapping), clock.time())
            if batch:
                return batch

    def _settle(self, batch: list[Message], response: Any, seconds: float) -> Settlement:
        now = self._clock.time()
        with self._clock.uncounted():
            settlement = settle(
                [m.message_id for m in batch], response, seconds=seconds, timeout=self._mapping.function_timeout
            )
            self.timeouts += settlement.error is not None
            for message in batch:
                if message.message_id in settlement.failed:
                    self._queue.return_(message)
                else:
                    self._queue.acknowledge(message, now)
        return settlement


def lambda_event(batch: list[Message], queue_arn: str) -> str:
    """The Lambda event of a batch, as the event source mapping sends it."""
    return json.dumps({"Records": [_record(m, queue_arn) for m in batch]})


def _record(message: Message, queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message.message_id,
        "receiptHandle": f"{message.message_id}#{message.receives}",
        "body": message.body,
        "attributes": {
            "ApproximateReceiveCount": str(message.receives),
            "SentTimestamp": "1800000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1800000000000",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }
