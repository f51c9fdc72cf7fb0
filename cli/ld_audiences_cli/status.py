"""`ld-audiences status`: per audience, what the state table says it should be and what is still on its way.

Reads only: the audience summaries and exact member counts (DynamoDB Query), the queues' depths
(GetQueueAttributes) and the dead-letter queue's messages, received and made visible again at once
(ReceiveMessage + ChangeMessageVisibility, like `redrive --dry-run`), counted by audience and reason.
SQS cannot say how many queued changes belong to one audience without receiving them, so the main
queue's depth is the whole queue's.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ld_audiences.audiences import AudienceReader
from ld_audiences_cli.redrive import list_dead_letters
from ld_audiences_cli.terminal import printable

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

UNREADABLE = "(not a membership change)"  # a dead letter whose body names no audience


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@dataclass
class AudienceStatus:
    audience_id: str
    context_kind: str
    audience_key: str
    members: int
    contexts: int
    last_event_time: str | None = None
    last_message_id: str | None = None
    last_write_at: float | None = None
    changes_written: int = 0
    pending_since: float | None = None  # when its oldest change not yet in LaunchDarkly was recorded
    retired_at: float | None = None  # `ld-audiences retire`: its segment emptied, its changes skipped
    dead_lettered: dict[str, int] = field(default_factory=dict)  # by failure reason


@dataclass
class Status:
    audiences: list[AudienceStatus]
    queue: QueueDepth | None
    dead_letter_queue: QueueDepth | None
    dead_letters_read: int  # messages the DLQ peek received (at most the limit)
    dead_letters_unreadable: int
    read_units: float  # DynamoDB read units the counts consumed


def queue_depth(sqs: SQSClient, queue_url: str) -> QueueDepth:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def dead_letters_by_audience(
    sqs: SQSClient, dlq_url: str, limit: int
) -> tuple[dict[tuple[str, str], Counter[str]], int, int]:
    """Dead letters per (audience id, context kind) and reason, messages read, and those naming no audience."""
    by_audience: dict[tuple[str, str], Counter[str]] = {}
    letters = list_dead_letters(sqs, dlq_url, limit=limit) if limit else []
    unreadable = 0
    for letter in letters:
        try:
            body = json.loads(letter.body)
            target = (str(body["audience_id"]), str(body.get("context_kind", "user")))
        except (ValueError, TypeError, KeyError):
            unreadable += 1
            continue
        by_audience.setdefault(target, Counter())[letter.reason] += 1
    return by_audience, len(letters), unreadable


def collect(
    reader: AudienceReader,
    sqs: SQSClient | None,
    queue_url: str | None,
    dlq_url: str | None,
    *,
    audience_id: str | None = None,
    dead_letter_limit: int = 10_000,
) -> Status:
    """Every audience with a summary, pending changes or a dead letter (or only `audience_id`'s), with exact
    member counts."""
    read_before = reader.usage.read_units
    summaries = {(a.audience_id, a.context_kind): a for a in reader.audiences()}
    pending = reader.pending()
    dead: dict[tuple[str, str], Counter[str]] = {}
    read = unreadable = 0
    if sqs is not None and dlq_url:
        dead, read, unreadable = dead_letters_by_audience(sqs, dlq_url, dead_letter_limit)
    targets = sorted(set(summaries) | set(pending) | set(dead))
    if audience_id is not None:
        targets = [target for target in targets if target[0] == audience_id]
    audiences = []
    for target in targets:
        counts = reader.counts(*target)
        status = AudienceStatus(
            audience_id=target[0],
            context_kind=target[1],
            audience_key="",
            members=counts.members,
            contexts=counts.contexts,
            pending_since=pending.get(target),
            retired_at=reader.retired_at(*target),
            dead_lettered=dict(sorted(dead.get(target, Counter()).items())),
        )
        summary = summaries.get(target)
        if summary is not None:
            status.audience_key = summary.audience_key
            status.last_event_time = summary.last_event_time
            status.last_message_id = summary.last_message_id
            status.last_write_at = summary.last_write_at
            status.changes_written = summary.changes_written
        audiences.append(status)
    return Status(
        audiences=audiences,
        queue=queue_depth(sqs, queue_url) if sqs is not None and queue_url else None,
        dead_letter_queue=queue_depth(sqs, dlq_url) if sqs is not None and dlq_url else None,
        dead_letters_read=read,
        dead_letters_unreadable=unreadable,
        read_units=reader.usage.read_units - read_before,
    )


def _when(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if epoch else None


def _to_second(event_time: str) -> str:
    """An event time without its fraction of a second (Segment sends up to nanoseconds)."""
    whole, dot, _ = event_time.partition(".")
    return f"{whole}Z" if dot else event_time


def to_document(status: Status) -> dict[str, Any]:
    """`status --output json` (docs/CLI.md)."""
    return {
        "audiences": [
            {
                **asdict(a),
                "last_write_at": _when(a.last_write_at),
                "pending_since": _when(a.pending_since),
                "retired_at": _when(a.retired_at),
                "dead_lettered_total": sum(a.dead_lettered.values()),
            }
            for a in status.audiences
        ],
        "queue": {**asdict(status.queue), "total": status.queue.total} if status.queue else None,
        "dead_letter_queue": (
            {
                **asdict(status.dead_letter_queue),
                "total": status.dead_letter_queue.total,
                "read": status.dead_letters_read,
                "not_membership_changes": status.dead_letters_unreadable,
            }
            if status.dead_letter_queue
            else None
        ),
        "read_units": status.read_units,
    }


# The message id and the event time's fraction are in `--output json`: the table stays readable in 120 columns.
COLUMNS = ("AUDIENCE", "KEY", "KIND", "MEMBERS", "LAST CHANGE", "WRITTEN", "WAITING", "DLQ")


def lines(status: Status, now: float | None = None) -> list[str]:
    """The human form: one line per audience, then the queues and what the table leaves out."""
    now = time.time() if now is None else now
    rows: list[tuple[str, ...]] = [COLUMNS]
    reasons: list[str] = []
    for a in status.audiences:
        dead = sum(a.dead_lettered.values())
        if dead:
            reasons.append(f"  {a.audience_id}: " + ", ".join(f"{reason} {n}" for reason, n in a.dead_lettered.items()))
        cells = (
            a.audience_id,
            (a.audience_key or "-") + (" (retired)" if a.retired_at is not None else ""),
            a.context_kind,
            str(a.members),
            _to_second(a.last_event_time) if a.last_event_time else "-",
            _ago(now - a.last_write_at) if a.last_write_at else "-",
            _ago(now - a.pending_since) if a.pending_since is not None else "-",
            str(dead),
        )
        # Escaped before the columns are measured, so that they line up as printed.
        rows.append(tuple(printable(cell) for cell in cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    out = ["  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows]
    if not status.audiences:
        out.append("(no audience has been written yet)")
    if status.queue is not None:
        q = status.queue
        out.append(
            f"queue: {q.total} message(s) not yet recorded ({q.visible} visible, {q.in_flight} in flight, "
            f"{q.delayed} delayed)"
        )
    if status.dead_letter_queue is not None:
        d = status.dead_letter_queue
        note = f", {status.dead_letters_unreadable} naming no audience" if status.dead_letters_unreadable else ""
        if status.dead_letters_read < d.total:
            note += f"; {status.dead_letters_read} read and counted above"
        out.append(f"dead-letter queue: {d.total} message(s){note}")
    if reasons:
        out += ["dead-lettered, by reason:", *(printable(line) for line in reasons)]
    out.append(f"DynamoDB read units consumed: {status.read_units:g}")
    return out


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"
