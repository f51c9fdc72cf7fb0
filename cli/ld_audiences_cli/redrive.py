"""List the dead-letter queue and move its messages back to the main queue once the cause is fixed.

The sync function dead-letters a change LaunchDarkly refused with message attributes saying why
(`ld_audiences.dead_letters`); SQS's redrive policy dead-letters, without any attribute, a change
that failed `maxReceiveCount` times. A redriven change is sent to the main queue without those
attributes and deleted from the DLQ. Replaying an old change is safe: the state store skips it when
a newer one for the same context was applied meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ld_audiences.dead_letters import DETAIL_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_ID_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

# What a message moved by SQS's redrive policy (it carries no reason attribute) is listed as.
NO_REASON = "max_receive_count_exceeded"
FAILURE_ATTRIBUTES = frozenset({REASON_ATTRIBUTE, DETAIL_ATTRIBUTE, SOURCE_ID_ATTRIBUTE})
SQS_BATCH = 10


@dataclass
class DeadLetter:
    message_id: str
    body: str
    reason: str
    detail: str = ""
    source_message_id: str = ""
    receive_count: int = 0
    sent_timestamp: int = 0
    # Message attributes other than the failure ones, carried over on redrive (ReceiveMessage shape).
    attributes: dict[str, Any] = field(default_factory=dict)
    receipt_handle: str = field(default="", repr=False)

    @property
    def summary(self) -> str:
        """The membership change in a few words, or the body's start when it is not one."""
        try:
            change = json.loads(self.body)
        except ValueError:
            change = None
        if not isinstance(change, dict) or "context_key" not in change:
            return f"body {self.body[:80]!r}"
        verb = "add" if change.get("included") else "remove"
        return (
            f"{verb} {change.get('context_kind', 'user')}:{change.get('context_key')} "
            f"{'to' if verb == 'add' else 'from'} {change.get('audience_key')} ({change.get('audience_id')}) "
            f"at {change.get('event_time')}, messageId {change.get('message_id')}"
        )


@dataclass
class RedriveResult:
    moved: list[DeadLetter] = field(default_factory=list)  # or "would move" in a dry run
    kept: list[DeadLetter] = field(default_factory=list)  # another reason, or past --max
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    dry_run: bool = False


def _text(attributes: dict[str, Any], name: str) -> str:
    value = attributes.get(name, {})
    return str(value.get("StringValue", "")) if isinstance(value, dict) else ""


def _sendable(value: Any) -> dict[str, Any]:
    """A received message attribute in the shape SendMessage takes."""
    if not isinstance(value, dict):
        return {"DataType": "String", "StringValue": str(value)}
    return {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}


def _dead_letter(message: dict[str, Any]) -> DeadLetter:
    attributes = dict(message.get("MessageAttributes", {}))
    system = message.get("Attributes", {})
    return DeadLetter(
        message_id=message["MessageId"],
        body=message.get("Body", ""),
        reason=_text(attributes, REASON_ATTRIBUTE) or NO_REASON,
        detail=_text(attributes, DETAIL_ATTRIBUTE),
        source_message_id=_text(attributes, SOURCE_ID_ATTRIBUTE),
        receive_count=int(system.get("ApproximateReceiveCount", 0) or 0),
        sent_timestamp=int(system.get("SentTimestamp", 0) or 0),
        attributes={k: _sendable(v) for k, v in attributes.items() if k not in FAILURE_ATTRIBUTES},
        receipt_handle=message["ReceiptHandle"],
    )


def _receive_all(sqs: SQSClient, queue_url: str, wait_seconds: int, visibility_timeout: int) -> Iterator[DeadLetter]:
    """Every message of the queue once, each hidden for `visibility_timeout` s while we hold it."""
    seen: set[str] = set()
    while True:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=SQS_BATCH,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return
        for message in messages:
            if message["MessageId"] in seen:  # a standard queue may deliver twice
                continue
            seen.add(message["MessageId"])
            yield _dead_letter(dict(message))


def _release(sqs: SQSClient, queue_url: str, letters: list[DeadLetter]) -> None:
    """Make held messages visible again right away."""
    for start in range(0, len(letters), SQS_BATCH):
        chunk = letters[start : start + SQS_BATCH]
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                for i, letter in enumerate(chunk)
            ],
        )


def list_dead_letters(
    sqs: SQSClient, dlq_url: str, *, limit: int | None = None, wait_seconds: int = 1
) -> list[DeadLetter]:
    """The DLQ's messages, oldest first, left in the queue."""
    return redrive(sqs, "", dlq_url, dry_run=True, limit=limit, wait_seconds=wait_seconds).moved


def redrive(
    sqs: SQSClient,
    queue_url: str,
    dlq_url: str,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    reason: str | None = None,
    wait_seconds: int = 1,
    visibility_timeout: int = 120,
    on_read: Callable[[int], None] = lambda read: None,
    on_moved: Callable[[int, int], None] = lambda moved, total: None,
) -> RedriveResult:
    """Move DLQ messages (only those with `reason`, at most `limit`) back to `queue_url`.

    In a dry run nothing is sent or deleted: `moved` lists what would move. Messages not moved are
    made visible again in the DLQ before returning. `on_read(messages read)` and `on_moved(done, to move)`
    report progress.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    result = RedriveResult(dry_run=dry_run)
    held: list[DeadLetter] = []
    if limit != 0:
        for letter in _receive_all(sqs, dlq_url, wait_seconds, visibility_timeout):
            held.append(letter)
            on_read(len(held))
            if reason is not None and letter.reason != reason:
                result.kept.append(letter)
                continue
            result.moved.append(letter)
            if limit is not None and len(result.moved) >= limit:
                break
    try:
        if not dry_run:
            moved: list[DeadLetter] = []
            for done, letter in enumerate(result.moved, 1):
                error = _move(sqs, queue_url, dlq_url, letter)
                on_moved(done, len(result.moved))
                if error is None:
                    moved.append(letter)
                    held.remove(letter)
                else:
                    result.failed.append((letter, error))
            result.moved = moved
    finally:
        _release(sqs, dlq_url, held)
    result.moved.sort(key=lambda letter: letter.sent_timestamp)
    result.kept.sort(key=lambda letter: letter.sent_timestamp)
    return result


def _move(sqs: SQSClient, queue_url: str, dlq_url: str, letter: DeadLetter) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        kwargs: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": letter.body}
        if letter.attributes:
            kwargs["MessageAttributes"] = letter.attributes
        sqs.send_message(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        return f"not sent: {type(exc).__name__}"
    try:
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)
    except (BotoCoreError, ClientError) as exc:
        # Sent but still in the DLQ: a second redrive would queue it twice, which the state store
        # turns into a skipped duplicate.
        return f"sent, but not deleted from the DLQ: {type(exc).__name__}"
    return None
