"""One model of Lambda's SQS event source (devtools/ld_audiences_local/models/sqs_event_source.py), two
drivers: the local stack's poller on real time against moto's queue, and the simulation's on virtual time
against its own. For one scripted sequence both must invoke the same batches and dead-letter the same
messages; the model's own rules are checked beside them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.sim_event_source import Arrivals, Message, SimulatedEventSource, SimulatedQueue
from bench.virtual_time import Cpu, VirtualTime
from ld_audiences_local.event_source import SqsEventSource
from ld_audiences_local.models.sqs_event_source import (
    INVALID_RESPONSE,
    TIMED_OUT,
    Batch,
    EventSourceMapping,
    Settlement,
    settle,
)

BODIES = ["a", "poison", "b", "flaky", "c", "d", "e"]
MAPPING = EventSourceMapping(batch_size=3, batching_window=0, visibility_timeout=0, max_receive_count=2)

Delivery = tuple[str, int]  # a record's body and its receive count
Batches = list[list[Delivery]]


def scripted() -> tuple[Callable[[list[Delivery]], list[int] | None], Batches]:
    """The sync's answers, by invocation: "poison" always fails, "flaky" fails its first receive, and the
    second invocation answers an invalid response (its whole batch comes back). Returns the positions of
    the failed records, None for the invalid answer, and records every batch."""
    batches: Batches = []

    def answer(deliveries: list[Delivery]) -> list[int] | None:
        batches.append(deliveries)
        if len(batches) == 2:
            return None
        return [i for i, (body, count) in enumerate(deliveries) if body == "poison" or (body == "flaky" and count == 1)]

    return answer, batches


def response(ids: list[str], failed: list[int] | None) -> dict[str, Any]:
    if failed is None:
        return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}
    return {"batchItemFailures": [{"itemIdentifier": ids[i]} for i in failed]}


def run_local_poller() -> tuple[Batches, list[str]]:
    answer, batches = scripted()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        deliveries = [(r["body"], int(r["attributes"]["ApproximateReceiveCount"])) for r in records]
        return response([r["messageId"] for r in records], answer(deliveries))

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq_url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAPPING.max_receive_count}
        queue_url = sqs.create_queue(
            QueueName="changes",
            Attributes={"VisibilityTimeout": "0", "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        for body in BODIES:
            sqs.send_message(QueueUrl=queue_url, MessageBody=body)
        source = SqsEventSource(
            sqs, queue_url, "arn:aws:sqs:us-east-1:123456789012:changes", handler, batch_size=3, batching_window=0
        )
        source.start()
        try:
            deadline = time.monotonic() + 20
            while source.stats().deleted + len(dead := _bodies(sqs, dlq_url)) < len(BODIES):
                assert time.monotonic() < deadline, "the poller did not finish the queue"
                time.sleep(0.05)
        finally:
            source.stop()
    return batches, dead


def _bodies(sqs: Any, queue_url: str) -> list[str]:
    """The bodies the queue holds (left in place: visible again at once, the DLQ has no redrive)."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    if attributes["Attributes"]["ApproximateNumberOfMessages"] == "0":
        return []
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return sorted(m["Body"] for m in messages.get("Messages", []))


def run_simulation() -> tuple[Batches, int]:
    answer, batches = scripted()
    clock = VirtualTime()
    arrivals = Arrivals(len(BODIES), math.inf, clock.now, BODIES.__getitem__)  # all queued at once
    queue = SimulatedQueue(arrivals, MAPPING, "dlq", "tick")
    source = SimulatedEventSource(clock, queue, MAPPING)

    def invoke(batch: list[Message]) -> tuple[dict[str, Any], float]:
        failed = answer([(m.body, m.receives) for m in batch])
        return response([m.message_id for m in batch], failed), 0.0

    clock.run(lambda: source.serve(invoke), cpu=Cpu(1769))
    return batches, queue.dead_letters


def test_the_local_poller_and_the_simulation_invoke_the_same_batches_and_dead_letter_the_same() -> None:
    expected = [
        [("a", 1), ("poison", 1), ("b", 1)],
        [("poison", 2), ("flaky", 1), ("c", 1)],  # answered invalid: all three come back
        [("flaky", 2), ("c", 2), ("d", 1)],  # poison's third receive went to the DLQ instead
        [("e", 1)],
    ]
    local_batches, local_dead = run_local_poller()
    simulated_batches, simulated_dead = run_simulation()
    assert local_batches == simulated_batches == expected
    assert local_dead == ["poison"]
    assert simulated_dead == 1


def test_a_batch_closes_when_full_when_its_window_ends_or_when_one_more_record_could_overflow_the_payload() -> None:
    mapping = EventSourceMapping(batch_size=100, batching_window=2.0)
    batch = Batch(mapping)
    assert batch.receivable() == 10 and not batch.complete(0.0)  # nothing yet: no window runs
    batch.add(100, now=5.0)
    assert not batch.complete(6.9) and batch.complete(7.0)
    big = Batch(mapping)
    for _ in range(22):
        big.add(256 * 1024, now=0.0)
    assert big.receivable() == 1 and big.fits(256 * 1024)  # a 23rd message of 256 KB still fits in 6 MB
    big.add(256 * 1024, now=0.0)
    assert big.receivable() == 0 and not big.fits(256 * 1024) and big.complete(0.0)
    full = Batch(EventSourceMapping(batch_size=2, batching_window=300))
    full.add(1, now=0.0)
    full.add(1, now=0.0)
    assert full.complete(0.0) and not full.fits(1)


def test_without_a_window_a_batch_is_one_poll_of_at_most_ten() -> None:
    with pytest.raises(ValueError, match="at most 10"):
        EventSourceMapping(batch_size=11, batching_window=0)
    batch = Batch(EventSourceMapping(batch_size=10, batching_window=0))
    batch.add(1, now=3.0)
    assert batch.complete(3.0)


def test_an_invalid_answer_or_an_overrun_fails_the_whole_batch_and_a_valid_one_only_what_it_names() -> None:
    ids = ["m1", "m2"]
    assert settle(ids, {"batchItemFailures": [{"itemIdentifier": "m2"}]}, seconds=1, timeout=60).failed == {"m2"}
    assert settle(ids, None, seconds=1, timeout=60).failed == frozenset()
    for answer in ({"batchItemFailures": [{"itemIdentifier": "m3"}]}, {"batchItemFailures": [{}]}, "ok"):
        assert settle(ids, answer, seconds=1, timeout=60) == Settlement(frozenset(ids), INVALID_RESPONSE)
    assert settle(ids, {}, seconds=61, timeout=60).error == TIMED_OUT


def test_redrive_visibility_and_scaling_follow_what_aws_documents() -> None:
    mapping = EventSourceMapping(batch_size=10, max_receive_count=5, visibility_timeout=360)
    assert [mapping.dead_letters(n) for n in (1, 5, 6)] == [False, False, True]
    assert not EventSourceMapping().dead_letters(10**6)  # no redrive policy: never
    assert mapping.visible_again_at(100.0) == 460.0
    assert [mapping.concurrent_batches(s) for s in (0, 0.19, 0.2, 60)] == [5, 5, 6, 305]
    assert mapping.concurrent_batches(10**6) == 1000
    assert EventSourceMapping(maximum_concurrency=2).concurrent_batches(0) == 2
    assert [mapping.starts_after(i) for i in (0, 4, 5, 9)] == [0, 0, 0.2, 1.0]
